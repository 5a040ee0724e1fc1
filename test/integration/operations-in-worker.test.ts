import { createPublicKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { defaultPayloadConverter } from '@temporalio/common';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPlan } from '../../client/plans';
import { OPERATOR_OPERATION_WORKFLOW, type OperatorRequest } from '../../contract/operations';
import { keyFingerprint } from '../../lib/approval';
import { loadConfig } from '../../lib/config';
import { freePort } from '../../lib/ports';
import { startBinanceDouble, type BinanceDouble } from '../../scripts/binance-double/server';
import { runCliOnly } from '../../scripts/stack/cli-runner';
import { currentBuildId } from '../../workers/build-id';
import {
  chainHarness,
  makePlan,
  pairs,
  testApprovers,
  testEnv,
  waitForStage,
  type ChainHarness,
  type TestEnv,
} from '../helpers';

/** The operator's audit entries (plan id `-` or the symbol's reconcile), as `decision: reason`. */
async function operatorAudit(h: ChainHarness): Promise<string[]> {
  const entries = await h.redis.xrange(h.keys.auditStream, '-', '+');
  return entries
    .map(([, fields]) => Object.fromEntries(pairs(fields)))
    .filter((e) => e.layer === 'operator' || e.layer === 'ledger' || e.decision === 'reconcile')
    .map((e) => `${e.decision}: ${e.reason}`);
}

/** An operator's shell: Temporal's address and the chain's task queue, nothing else (no REDIS_URL, no exchange). */
function shellOf(env: TestEnv): Record<string, string> {
  return { TEMPORAL_ADDRESS: env.TEMPORAL_ADDRESS, TASK_QUEUE: env.TASK_QUEUE };
}

describe('operations run in the worker, under its configuration, from a shell with only Temporal', () => {
  let double: BinanceDouble;
  let env: TestEnv;
  let h: ChainHarness;
  beforeAll(async () => {
    double = await startBinanceDouble();
    env = testEnv({
      EXCHANGE: 'binance-usdm-testnet',
      BINANCE_BASE_URL: double.url,
      BINANCE_API_KEY: double.apiKey,
      BINANCE_API_SECRET: double.apiSecret,
    });
    h = await chainHarness(loadConfig(env));
  });
  afterAll(async () => {
    await h.close();
    await double.stop();
  });

  it("position, reconcile, kill-switch, retry and cancel: the worker's exchange, whatever the shell says", async () => {
    const shell = shellOf(env);
    // The shell names another exchange, another Redis and another prefix: all three are ignored.
    const conflicting = { ...shell, EXCHANGE: 'paper', REDIS_URL: 'redis://127.0.0.1:1/0', KEY_PREFIX: 'elsewhere' };
    const host = new URL(double.url).host;
    double.setPosition('BTCUSDT', '0.008');
    await h.redis.hset(h.keys.position('BTCUSDT'), 'ledger_amount', '0.002');
    // What the paper exchange would say, had the CLI read its own: 0.4.
    await h.redis.hset(h.keys.paperPosition('BTCUSDT'), 'amount', '0.4');
    await h.withWorker(async () => {
      for (const operatorEnv of [shell, conflicting]) {
        const shown = await runCliOnly(['position', 'BTCUSDT', '--json'], operatorEnv);
        expect(shown.stderr).toBe('');
        expect(JSON.parse(shown.stdout)).toMatchObject({
          symbol: 'BTCUSDT',
          exchange_amount: '0.008',
          ledger_amount: '0.002',
          within_tolerance: false,
          worker: {
            exchange: 'binance-usdm-testnet',
            host,
            mode: 'testnet',
            task_queue: env.TASK_QUEUE,
            deployment: `permit-chain build ${currentBuildId()} (unversioned)`,
          },
        });
      }
      const text = await runCliOnly(['position', 'BTCUSDT'], conflicting);
      expect(text.stdout).toContain(
        `exchange binance-usdm-testnet at ${host}, testnet mode, key prefix ${env.KEY_PREFIX}`,
      );
      const dry = await runCliOnly(['reconcile', 'BTCUSDT', '--by', 'ops', '--dry-run', '--json'], conflicting);
      expect(JSON.parse(dry.stdout)).toMatchObject({
        exchange_amount: '0.008',
        ledger_before: '0.002',
        applied: false,
      });

      // A plan blocked by the mismatch: retry reaches it; reconcile (unsigned, accepted on testnet) fixes the ledger.
      const blocked = makePlan({ symbol: 'BTCUSDT', side: 'SELL', qty: '0.002' });
      const { workflowId, handle } = await startPlan(h.client, h.config, blocked);
      await waitForStage(h, workflowId, 'blocked');
      const retried = await runCliOnly(['retry', blocked.plan_id, '--by', 'ops'], shell);
      expect(retried.code).toBe(0);
      expect(retried.stdout).toBe(
        `retry sent to plan-${blocked.plan_id}: 0 moved, 1 still blocked\n` +
          `  blocked  1 on BTCUSDT: reconcile_required_qty_mismatch, exchange 0.008 vs ledger 0.002, tolerance 0.001: ` +
          `${blocked.plan_id}\n`,
      );
      const done = await runCliOnly(['reconcile', 'BTCUSDT', '--by', 'ops', '--yes', '--json'], conflicting);
      expect(done.code).toBe(0);
      expect(JSON.parse(done.stdout)).toMatchObject({
        ledger_before: '0.002',
        ledger_after: '0.008',
        recorded_as: 'ops (unsigned)',
        worker: { exchange: 'binance-usdm-testnet', host },
      });
      expect((await handle.result()).outcome).toBe('executed');

      const waiting = makePlan({ symbol: 'ETHUSDT', side: 'SELL', qty: '0.5' });
      double.setPosition('ETHUSDT', '1');
      await h.redis.hset(h.keys.position('ETHUSDT'), 'ledger_amount', '2');
      const second = await startPlan(h.client, h.config, waiting);
      await waitForStage(h, second.workflowId, 'blocked');
      const cancelled = await runCliOnly(['cancel', waiting.plan_id, '--by', 'ops', '--reason', 'stale'], shell);
      expect(cancelled.code).toBe(0);
      expect((await second.handle.result()).outcome).toBe('cancelled');

      expect((await runCliOnly(['kill-switch', 'on', '--by', 'ops'], conflicting)).code).toBe(0);
      expect(await h.redis.get(h.keys.killSwitch)).toBe('1');
      const off = await runCliOnly(['kill-switch', 'off', '--by', 'ops'], conflicting);
      expect(off.stdout).toContain('kill switch off (by ops (unsigned))');
      expect(await h.redis.get(h.keys.killSwitch)).toBeNull();
    });
    // The paper exchange and the other prefix were never touched.
    expect(await h.redis.hget(h.keys.paperPosition('BTCUSDT'), 'amount')).toBe('0.4');
    expect(await h.redis.hget(h.keys.position('BTCUSDT'), 'ledger_amount')).toBe('0.006');
    expect(await operatorAudit(h)).toEqual(
      expect.arrayContaining([
        'reconcile: BTCUSDT ledger 0.002 -> 0.008 by ops (unsigned)',
        'kill_switch_on: by ops',
        'kill_switch_off: by ops (unsigned)',
      ]),
    );
  });
});

describe('signed operations in production mode', () => {
  const keys = testApprovers('alice', 'olga');
  const env = testEnv({
    TRADING_MODE: 'production',
    APPROVERS: 'alice',
    OPERATORS: 'olga',
    APPROVER_KEYS_DIR: keys.dir,
  });
  const shell = shellOf(env);
  const olgaFingerprint = keyFingerprint(createPublicKey(readFileSync(join(keys.dir, 'olga.pub'))));
  let h: ChainHarness;
  beforeAll(async () => {
    h = await chainHarness(loadConfig(env));
  });
  afterAll(() => h.close());

  /** The input an operation workflow was started with, as anyone reads it in the Web UI. */
  async function inputOf(operationId: string): Promise<OperatorRequest> {
    const history = await h.client.workflow.getHandle(operationId).fetchHistory();
    const payload = history.events?.[0]?.workflowExecutionStartedEventAttributes?.input?.payloads?.[0];
    if (!payload) throw new Error(`no input in ${operationId}`);
    return defaultPayloadConverter.fromPayload<OperatorRequest>(payload);
  }

  /** Sends an operation workflow again with the very input seen: a replay. */
  function replay(request: OperatorRequest): Promise<unknown> {
    return h.client.workflow.execute(OPERATOR_OPERATION_WORKFLOW, {
      workflowId: `op-replay-${Math.random().toString(16).slice(2)}`,
      taskQueue: env.TASK_QUEUE,
      args: [request],
    });
  }

  it('refuses unsigned and wrongly signed reconcile and kill-switch off; accepts signed ones once', async () => {
    await h.redis.hset(h.keys.paperPosition('SIGUSDT'), 'amount', '0.062');
    await h.redis.hset(h.keys.position('SIGUSDT'), 'ledger_amount', '0.002');
    await h.redis.set(h.keys.killSwitch, '1');
    await h.withWorker(async () => {
      const unsigned = await runCliOnly(['reconcile', 'SIGUSDT', '--by', 'olga', '--yes'], shell);
      expect(unsigned.code).toBe(3);
      expect(unsigned.stdout).toContain('refused: unsigned: on production mode, reconcile must be signed');
      const unsignedOff = await runCliOnly(['kill-switch', 'off', '--by', 'olga'], shell);
      expect(unsignedOff.code).toBe(3);
      // An approver who is not an operator, and an operator's name over another's key.
      const notOperator = ['reconcile', 'SIGUSDT', '--by', 'alice', '--key', keys.keyFile('alice'), '--yes'];
      expect((await runCliOnly(notOperator, shell)).stdout).toContain('refused: alice is not in OPERATORS');
      const forged = ['kill-switch', 'off', '--by', 'olga', '--key', keys.keyFile('alice')];
      expect((await runCliOnly(forged, shell)).stdout).toContain("signature does not verify with olga's key");
      expect(await h.redis.hget(h.keys.position('SIGUSDT'), 'ledger_amount')).toBe('0.002');
      expect(await h.redis.get(h.keys.killSwitch)).toBe('1');

      const signed = ['reconcile', 'SIGUSDT', '--by', 'olga', '--key', keys.keyFile('olga'), '--yes', '--json'];
      const reconciled = await runCliOnly(signed, shell);
      expect(reconciled.code).toBe(0);
      const answer = JSON.parse(reconciled.stdout) as { recorded_as: string; operation_id: string };
      expect(answer.recorded_as).toBe(`olga (key ${olgaFingerprint})`);
      expect(await h.redis.hget(h.keys.position('SIGUSDT'), 'ledger_amount')).toBe('0.062');

      // The same signed reconcile, taken from the Web UI's input and sent again on the very positions it shows.
      await h.redis.hset(h.keys.position('SIGUSDT'), 'ledger_amount', '0.002');
      await expect(replay(await inputOf(answer.operation_id))).rejects.toThrow();
      expect(await h.redis.hget(h.keys.position('SIGUSDT'), 'ledger_amount')).toBe('0.002');

      const offRun = await runCliOnly(
        ['kill-switch', 'off', '--by', 'olga', '--key', keys.keyFile('olga'), '--json'],
        shell,
      );
      expect(offRun.code).toBe(0);
      expect(await h.redis.get(h.keys.killSwitch)).toBeNull();
      await h.redis.set(h.keys.killSwitch, '1');
      const offInput = await inputOf((JSON.parse(offRun.stdout) as { operation_id: string }).operation_id);
      await expect(replay(offInput)).rejects.toThrow();
      expect(await h.redis.get(h.keys.killSwitch)).toBe('1');

      // Stopping stays open to anyone, unsigned.
      await h.redis.del(h.keys.killSwitch);
      expect((await runCliOnly(['kill-switch', 'on', '--by', 'anyone'], shell)).code).toBe(0);
      expect(await h.redis.get(h.keys.killSwitch)).toBe('1');
    });
    const audit = await operatorAudit(h);
    expect(audit).toContain(`reconcile: SIGUSDT ledger 0.002 -> 0.062 by olga (key ${olgaFingerprint})`);
    expect(audit).toContain(`kill_switch_off: by olga (key ${olgaFingerprint})`);
    expect(audit.filter((line) => line.startsWith('kill_switch_off'))).toHaveLength(1);
    expect(audit.filter((line) => line.startsWith('reconcile'))).toHaveLength(1);
  });

  it('an operation started by hand with a bad symbol or name is refused, nothing read', async () => {
    await h.redis.del(h.keys.killSwitch);
    await h.withWorker(async () => {
      for (const request of [
        { operation: 'position', symbol: 'btc*' },
        { operation: 'kill_switch', on: true, by: 'x\ny' },
      ] as OperatorRequest[]) {
        await expect(replay(request)).rejects.toMatchObject({
          cause: { cause: { message: expect.stringMatching(/^(symbol|by) must be/) as unknown } },
        });
      }
    });
    expect(await h.redis.get(h.keys.killSwitch)).toBeNull();
  });

  it('the refusal of a replay says why: the nonce was used', async () => {
    await h.redis.hset(h.keys.paperPosition('NONCEUSDT'), 'amount', '1');
    await h.redis.hset(h.keys.position('NONCEUSDT'), 'ledger_amount', '0');
    await h.withWorker(async () => {
      const signed = ['reconcile', 'NONCEUSDT', '--by', 'olga', '--key', keys.keyFile('olga'), '--yes', '--json'];
      const first = JSON.parse((await runCliOnly(signed, shell)).stdout) as { operation_id: string };
      await h.redis.hset(h.keys.position('NONCEUSDT'), 'ledger_amount', '0');
      await expect(replay(await inputOf(first.operation_id))).rejects.toMatchObject({
        cause: { cause: { message: expect.stringContaining('already used') as unknown } },
      });
    });
  });
});

describe('the brake without workers', () => {
  const env = testEnv();
  let redis: Redis;
  beforeAll(() => {
    redis = new Redis(env.REDIS_URL);
  });
  afterAll(() => redis.disconnect());
  const killSwitch = `${env.KEY_PREFIX}:governor:kill_switch`;

  it('kill-switch on with Temporal down sets the switch in Redis itself, audited as set directly', async () => {
    const closed = `127.0.0.1:${await freePort()}`;
    const withRedis = { TEMPORAL_ADDRESS: closed, REDIS_URL: env.REDIS_URL, KEY_PREFIX: env.KEY_PREFIX };
    const run = await runCliOnly(['kill-switch', 'on', '--by', 'risk'], withRedis);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain(`Temporal at ${closed} did not answer`);
    expect(run.stdout).toContain(`kill switch on (by risk), set directly in Redis: ${killSwitch}`);
    expect(await redis.get(killSwitch)).toBe('1');
    const audit = await redis.xrange(`${env.KEY_PREFIX}:stream:permit.audit`, '-', '+');
    const reasons = audit.map(([, fields]) => Object.fromEntries(pairs(fields)).reason ?? '');
    expect(reasons.some((reason) => reason.startsWith('by risk (set directly: Temporal at'))).toBe(true);
  });

  it('without REDIS_URL it says the switch is not set and how to set it; position says the workers are away', async () => {
    const closed = `127.0.0.1:${await freePort()}`;
    const run = await runCliOnly(['kill-switch', 'on', '--by', 'risk'], { TEMPORAL_ADDRESS: closed });
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(
      'the kill switch is NOT set: set it yourself with redis-cli SET quantum:governor:kill_switch 1',
    );
    const position = await runCliOnly(['position', 'BTCUSDT'], { TEMPORAL_ADDRESS: closed });
    expect(position.code).not.toBe(0);
    expect(position.stdout).toBe('');
    expect(position.stderr).toContain(`Temporal at ${closed} did not answer`);
  });

  it('with Temporal up but no worker on the task queue, kill-switch on falls back within seconds', async () => {
    const shell = { TEMPORAL_ADDRESS: env.TEMPORAL_ADDRESS, TASK_QUEUE: `nobody-${env.TASK_QUEUE}` };
    const started = Date.now();
    const run = await runCliOnly(['kill-switch', 'on', '--by', 'risk'], {
      ...shell,
      REDIS_URL: env.REDIS_URL,
      KEY_PREFIX: `${env.KEY_PREFIX}x`,
    });
    expect(run.code).toBe(0);
    expect(run.stdout).toContain(`no worker of task queue nobody-${env.TASK_QUEUE} answered within 5s`);
    expect(await redis.get(`${env.KEY_PREFIX}x:governor:kill_switch`)).toBe('1');
    expect(Date.now() - started).toBeLessThan(20_000);
    const position = await runCliOnly(['position', 'BTCUSDT'], shell);
    expect(position.code).not.toBe(0);
    expect(position.stderr).toContain('answered within 5s (Temporal at');
  });
});
