import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Client } from '@temporalio/client';
import { Runtime, DefaultLogger, bundleWorkflowCode } from '@temporalio/worker';
import type { Redis } from 'ioredis';
import { inject, onTestFinished } from 'vitest';
import { generateApproverKeys, readPrivateKey, signedRequest } from '../lib/approval';
import { connectTemporal } from '../client/plans';
import { loadConfig, type ChainConfig } from '../lib/config';
import { closeOnFailure, connectRedis } from '../lib/connections';
import { redisKeys, type RedisKeys } from '../contract/keys';
import { parsePlan } from '../lib/plan';
import type { ApproveRequest, ChainStatus, Plan, PositionSnapshot, RejectRequest } from '../contract/types';
import { statusQuery } from '../contract/messages';
import type { ExchangePort } from '../activities/exchange/port';
import { connectWorkerTemporal, createChainWorker } from '../workers/worker';
import { QUIET_BUNDLE_LOGGER } from '../workers/workflow-code';
import { PROJECT_ROOT } from '../cli/servers';

let runtimeInstalled = false;
/** The SDK's own logs only for warnings: a test's output is its assertions. */
export function quietRuntime(): void {
  if (runtimeInstalled) return;
  Runtime.install({ logger: new DefaultLogger('WARN') });
  runtimeInstalled = true;
}

/** The environment a test runs the chain under: the shared servers, a key prefix and task queue of its own. */
export interface TestEnv extends Record<string, string> {
  REDIS_URL: string;
  TEMPORAL_ADDRESS: string;
  KEY_PREFIX: string;
  TASK_QUEUE: string;
}

export function testEnv(overrides: Record<string, string> = {}): TestEnv {
  const id = randomBytes(4).toString('hex');
  return {
    REDIS_URL: inject('redisUrl'),
    TEMPORAL_ADDRESS: inject('temporalAddress'),
    KEY_PREFIX: `t${id}`,
    TASK_QUEUE: `permit-chain-${id}`,
    // The worker and the intake refuse to start without an explicit mode.
    TRADING_MODE: 'testnet',
    ...overrides,
  };
}

/** Approvers with real Ed25519 key pairs in a folder of their own: the worker's APPROVER_KEYS_DIR. */
export interface TestApprovers {
  dir: string;
  keyFile(name: string): string;
  /** The signed payload `name` sends to decide on a plan showing `snapshot` (as `permit-chain approve` does). */
  sign(
    planId: string,
    name: string,
    snapshot: PositionSnapshot,
    fields?: { note?: string; reason?: string; kind?: 'approve' | 'reject'; lifeMs?: number; now?: number },
  ): ApproveRequest & RejectRequest;
}

export function testApprovers(...names: string[]): TestApprovers {
  const dir = mkdtempSync(join(tmpdir(), 'permit-chain-approvers-'));
  const keys = new Map(names.map((name) => [name, readPrivateKey(generateApproverKeys(name, dir).privateFile)]));
  return {
    dir,
    keyFile: (name) => join(dir, `${name}.key`),
    sign(planId, name, snapshot, { kind = 'approve', note, reason, lifeMs, now } = {}) {
      const key = keys.get(name);
      if (!key) throw new Error(`no test key for ${name}`);
      const fields = { by: name, ...(note !== undefined ? { note } : {}), ...(reason !== undefined ? { reason } : {}) };
      const options = { ...(lifeMs !== undefined ? { lifeMs } : {}), ...(now !== undefined ? { now } : {}) };
      return signedRequest(planId, kind, fields, snapshot, key, options) as ApproveRequest & RejectRequest;
    },
  };
}

export function testConfig(overrides: Record<string, string> = {}): ChainConfig {
  return loadConfig(testEnv(overrides));
}

export interface ChainHarness {
  config: ChainConfig;
  keys: RedisKeys;
  redis: Redis;
  client: Client;
  /**
   * Runs `fn` while a fresh worker serves the config's task queue (or `options.config`'s: a worker with other
   * rules on its own task queue).
   */
  withWorker<T>(
    fn: () => Promise<T>,
    clock?: () => number,
    options?: { config?: ChainConfig; exchange?: ExchangePort },
  ): Promise<T>;
  close(): Promise<void>;
}

/**
 * Real Redis, a real Temporal client, and a fresh worker per call of `withWorker`, connected as the entry points
 * connect (TLS, passwords and API key from the config).
 */
export async function chainHarness(config: ChainConfig): Promise<ChainHarness> {
  quietRuntime();
  const redis = await connectRedis(config);
  const client = await connectTemporal(config).catch(closeOnFailure(redis));
  const connection = client.connection;
  const nativeConnection = await connectWorkerTemporal(config).catch(closeOnFailure(redis, connection));
  return {
    config,
    keys: redisKeys(config.keyPrefix),
    redis,
    client,
    async withWorker(fn, clock, options = {}) {
      const worker = await createChainWorker({
        config: options.config ?? config,
        ...(options.exchange ? { exchange: options.exchange } : {}),
        redis,
        client,
        connection: nativeConnection,
        workflowBundle: { codePath: inject('workflowBundlePath') },
        ...(clock ? { clock } : {}),
      });
      const run = worker.runUntil(fn);
      // A test that times out leaves `fn` pending and its worker polling: stopped when the test ends, it does not hold
      // the task queue against the next test's worker ("overlapping worker task types") and fail that one too.
      try {
        onTestFinished(() => {
          if (worker.getState() === 'RUNNING') worker.shutdown();
        });
      } catch {
        // Called from beforeAll or afterAll: no test to end with, and the hook's own timeout reports a hang.
      }
      return run;
    },
    async close() {
      await nativeConnection.close();
      await connection.close();
      redis.disconnect();
    },
  };
}

/** A valid plan; each call is a new plan (a random plan id) unless `plan_id` is given. */
export function makePlan(fields: Record<string, unknown> = {}): Plan {
  return parsePlan({
    plan_id: randomBytes(8).toString('hex'),
    action: 'EXECUTE',
    symbol: 'BTCUSDT',
    side: 'SELL',
    qty: '0.062',
    reduce_only: true,
    source: 'test',
    created_at: Date.now(),
    ...fields,
  });
}

/** Sets the paper exchange's and the ledger's position of a symbol. */
export async function setPositions(
  h: Pick<ChainHarness, 'redis' | 'keys'>,
  symbol: string,
  exchange: string,
  ledger: string,
) {
  await h.redis.hset(h.keys.paperPosition(symbol), 'amount', exchange);
  await h.redis.hset(h.keys.position(symbol), 'ledger_amount', ledger);
}

/** Polls until `check` returns a value (not undefined), or fails after `timeoutMs`. */
export async function eventually<T>(
  check: () => Promise<T | undefined>,
  timeoutMs = 20_000,
  what = 'condition',
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Waits until the plan's `status` query reports the stage, and returns that status. */
export async function waitForStage(
  h: Pick<ChainHarness, 'client'>,
  workflowId: string,
  stage: ChainStatus['stage'],
): Promise<ChainStatus> {
  const handle = h.client.workflow.getHandle(workflowId);
  return eventually(
    async () => {
      const status = await handle.query(statusQuery);
      return status.stage === stage ? status : undefined;
    },
    20_000,
    `stage ${stage}`,
  );
}

/** Audit entries of one plan, as [layer, decision, reason]. */
export async function auditOf(h: Pick<ChainHarness, 'redis' | 'keys'>, planId: string): Promise<string[][]> {
  const entries = await h.redis.xrange(h.keys.auditStream, '-', '+');
  return entries
    .map(([, fields]) => Object.fromEntries(pairs(fields)))
    .filter((e) => e.plan_id === planId)
    .map((e) => [e.layer ?? '', e.decision ?? '', e.reason ?? '']);
}

export function pairs(fields: string[]): [string, string][] {
  const out: [string, string][] = [];
  for (let i = 0; i + 1 < fields.length; i += 2) out.push([fields[i] ?? '', fields[i + 1] ?? '']);
  return out;
}

/**
 * Runs `action` once, the moment `key` is written: Redis keyspace notifications reach this subscriber as the write
 * happens, long before Temporal has scheduled the chain's next step, so a test can act "between" two layers.
 * The tests' Redis has them on (test/global-setup.ts). Call `stop` when done.
 */
export async function onceWritten(
  h: Pick<ChainHarness, 'config'>,
  key: string,
  action: () => Promise<unknown>,
): Promise<{ fired: () => boolean; stop: () => void }> {
  const subscriber = await connectRedis(h.config);
  let fired = false;
  subscriber.on('pmessage', () => {
    if (fired) return;
    fired = true;
    void action();
  });
  await subscriber.psubscribe(`__keyspace@*__:${key}`);
  return { fired: () => fired, stop: () => subscriber.disconnect() };
}

/** One line of a process's JSON log (lib/log.ts). */
export interface LogLine {
  level: string;
  msg: string;
  plan_id?: string;
  workflow_id?: string;
  [field: string]: unknown;
}

/** The JSON lines of a worker's or intake's output, parsed; anything else (a refusal on stderr) is left out. */
export function logLines(output: string): LogLine[] {
  return output
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as LogLine);
}

/** The messages of a process's log lines. */
export function logMessages(output: string): string[] {
  return logLines(output).map((line) => line.msg);
}

/**
 * The bundle of test/fixtures/reordered-workflow (a careless change that publishes before asking the Governor), in a
 * file of its own: what a replay must fail against. Returns the bundle's path.
 */
export async function reorderedWorkflowBundle(): Promise<string> {
  const bundle = await bundleWorkflowCode({
    workflowsPath: join(PROJECT_ROOT, 'test', 'fixtures', 'reordered-workflow', 'index.ts'),
    logger: QUIET_BUNDLE_LOGGER,
  });
  const codePath = join(mkdtempSync(join(tmpdir(), 'reordered-')), 'bundle.js');
  writeFileSync(codePath, bundle.code);
  return codePath;
}
