/**
 * Records the event histories of representative plans into test/histories/, for the replay test that keeps
 * workflow changes from breaking plans already running. Starts its own Redis and Temporal dev server.
 *
 *   npm run record-histories [-- --suffix NAME]
 *
 * Run it with every build that changes the workflow: the histories are the build's own (a deploy replays them first,
 * docs/testing.md). `--suffix` writes them beside the others (`executed-NAME.json`), for the one case that keeps old
 * histories: a patch that must reach plans already running on an old build.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { generateApproverKeys, readPrivateKey, signedRequest } from '../lib/approval';
import { startPlan } from '../client/plans';
import { loadConfig, type ChainConfig } from '../lib/config';
import { closeOnFailure, connectRedis } from '../lib/connections';
import { redisKeys } from '../contract/keys';
import { parsePlan } from '../lib/plan';
import {
  PROJECT_ROOT,
  ensureServersInstalled,
  freePort,
  startRedis,
  startTemporalDevServer,
  temporalCliExecutable,
} from '../cli/servers';
import type { ChainStatus } from '../contract/types';
import { approveSignal, positionsChangedSignal, retrySignal, statusQuery } from '../contract/messages';
import { createPaperExchange } from '../activities/exchange/paper';
import type { ExchangePort } from '../activities/exchange/port';
import type { temporal } from '@temporalio/proto';
import { connectWorkerTemporal, createChainWorker } from '../workers/worker';

type HistoryEvent = temporal.api.history.v1.IHistoryEvent;

const OUT = join(PROJECT_ROOT, 'test', 'histories');

async function main(): Promise<void> {
  const { suffix } = parseArgs({ options: { suffix: { type: 'string' } } }).values;
  if (suffix !== undefined && !/^[a-z0-9-]+$/.test(suffix)) throw new Error(`--suffix: letters, digits and '-' only`);
  const fileName = (name: string) => `${name}${suffix ? `-${suffix}` : ''}.json`;
  Runtime.install({ logger: new DefaultLogger('WARN') });
  ensureServersInstalled({ forTests: false });
  const executable = temporalCliExecutable();
  if (executable.type !== 'existing-path') throw new Error('no Temporal CLI in .tools: run scripts/setup.sh');
  const cli = executable.path;
  const redisServer = await startRedis({ port: await freePort() });
  const temporal = await startTemporalDevServer({});
  const base = { REDIS_URL: redisServer.url, TEMPORAL_ADDRESS: temporal.address, RECHECK_INTERVAL_S: '1' };
  const servers = loadConfig(base);
  const redis = await connectRedis(servers);
  const connection = await connectWorkerTemporal(servers).catch(closeOnFailure(redis));
  mkdirSync(OUT, { recursive: true });

  async function record(
    name: string,
    env: Record<string, string>,
    play: (config: ChainConfig) => Promise<string>,
    exchange?: (config: ChainConfig) => ExchangePort,
  ) {
    const config = loadConfig({ ...base, ...env, TASK_QUEUE: `record-${name}`, KEY_PREFIX: `record-${name}` });
    const worker = await createChainWorker({
      config,
      redis,
      connection,
      ...(exchange ? { exchange: exchange(config) } : {}),
    });
    const workflowId = await worker.runUntil(() => play(config));
    // The official CLI's JSON: the same format `temporal workflow show -o json` gives an operator.
    const shown = spawnSync(cli, ['workflow', 'show', '-w', workflowId, '--address', temporal.address, '-o', 'json'], {
      encoding: 'utf8',
    });
    if (shown.status !== 0) throw new Error(`temporal workflow show failed: ${shown.stderr}`);
    const events = (JSON.parse(shown.stdout) as { events: unknown[] }).events.length;
    writeFileSync(join(OUT, fileName(name)), shown.stdout.endsWith('\n') ? shown.stdout : `${shown.stdout}\n`);
    console.log(`recorded ${fileName(name)} (${events} events)`);
  }

  function plan(symbol: string, qty: string) {
    return parsePlan({
      action: 'EXECUTE',
      symbol,
      side: 'SELL',
      qty,
      source: 'record-histories',
      created_at: Date.now(),
    });
  }

  async function positions(config: ChainConfig, symbol: string, exchange: string, ledger: string) {
    const keys = redisKeys(config.keyPrefix);
    await redis.hset(keys.paperPosition(symbol), 'amount', exchange);
    await redis.hset(keys.position(symbol), 'ledger_amount', ledger);
  }

  async function until(config: ChainConfig, workflowId: string, stage: ChainStatus['stage']) {
    const handle = temporal.client.workflow.getHandle(workflowId);
    while ((await handle.query(statusQuery)).stage !== stage) await new Promise((r) => setTimeout(r, 50));
  }

  /** Waits until the plan's history, after its `signal`, has `after` (a completed workflow task, a local activity). */
  async function historyAfter(workflowId: string, signal: string, after: (event: HistoryEvent) => boolean) {
    const handle = temporal.client.workflow.getHandle(workflowId);
    for (;;) {
      const events = (await handle.fetchHistory()).events ?? [];
      const at = events.findIndex((e) => e.workflowExecutionSignaledEventAttributes?.signalName === signal);
      if (at >= 0 && events.slice(at).some(after)) return;
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  try {
    await record('executed', {}, async (config) => {
      await positions(config, 'BTCUSDT', '0.062', '0.062');
      const { workflowId, handle } = await startPlan(temporal.client, config, plan('BTCUSDT', '0.062'));
      await handle.result();
      return workflowId;
    });
    await record('blocked-then-executed', {}, async (config) => {
      await positions(config, 'BTCUSDT', '0.062', '0.002');
      const { workflowId, handle } = await startPlan(temporal.client, config, plan('BTCUSDT', '0.062'));
      await until(config, workflowId, 'blocked');
      await new Promise((r) => setTimeout(r, 1500)); // a re-check or two while blocked
      await redis.hset(redisKeys(config.keyPrefix).position('BTCUSDT'), 'ledger_amount', '0.062');
      await handle.signal(retrySignal, { by: 'ops' });
      await handle.result();
      return workflowId;
    });
    await record('expired', { PLAN_MAX_AGE_S: '3', PERMIT_TTL_S: '2', PERMIT_MARGIN_S: '1' }, async (config) => {
      await positions(config, 'ETHUSDT', '1', '0');
      const { workflowId, handle } = await startPlan(temporal.client, config, plan('ETHUSDT', '1'));
      await handle.result();
      return workflowId;
    });
    // A wake that comes while a blocked plan looks: regular activities, so that it reaches the plan in a workflow
    // task of its own while the look runs; the exchange double holds the look's answer until then.
    const woken = { read: gate(), answer: gate(), hold: false };
    await record(
      'woken-while-looking',
      { LAYER_ACTIVITIES: 'regular' },
      async (config) => {
        await positions(config, 'AVAXUSDT', '3', '2');
        const { workflowId, handle } = await startPlan(temporal.client, config, plan('AVAXUSDT', '1'));
        await until(config, workflowId, 'blocked');
        woken.hold = true;
        await handle.signal(retrySignal, { by: 'ops' });
        await woken.read.passed;
        await redis.hset(redisKeys(config.keyPrefix).paperPosition('AVAXUSDT'), 'amount', '2');
        await handle.signal(positionsChangedSignal);
        await historyAfter(workflowId, positionsChangedSignal.name, (e) =>
          Boolean(e.workflowTaskCompletedEventAttributes),
        );
        woken.answer.open();
        await handle.result();
        return workflowId;
      },
      (config) => {
        const paper = createPaperExchange(redis, redisKeys(config.keyPrefix), Date.now);
        return {
          ...paper,
          async getPosition(symbol) {
            const amount = await paper.getPosition(symbol);
            if (woken.hold) {
              woken.hold = false;
              woken.read.open();
              await woken.answer.passed;
            }
            return amount;
          },
        };
      },
    );
    // A blocked plan retried while another plan holds the symbol, its fill on the exchange and not yet in the ledger.
    const moving = { filled: gate(), recorded: gate(), mover: plan('LINKUSDT', '1') };
    await record(
      'looked-while-moving',
      {},
      async (config) => {
        await positions(config, 'LINKUSDT', '3', '2');
        const { workflowId, handle } = await startPlan(temporal.client, config, plan('LINKUSDT', '1'));
        await until(config, workflowId, 'blocked');
        await redis.hset(redisKeys(config.keyPrefix).position('LINKUSDT'), 'ledger_amount', '3');
        const mover = await startPlan(temporal.client, config, moving.mover);
        await moving.filled.passed;
        await handle.signal(retrySignal, { by: 'ops' });
        await historyAfter(
          workflowId,
          retrySignal.name,
          (e) => e.markerRecordedEventAttributes?.markerName === 'core_local_activity',
        );
        moving.recorded.open();
        await Promise.all([handle.result(), mover.handle.result()]);
        return workflowId;
      },
      (config) => {
        const paper = createPaperExchange(redis, redisKeys(config.keyPrefix), Date.now);
        return {
          ...paper,
          async placeMarketOrder(request) {
            const order = await paper.placeMarketOrder(request);
            if (request.clientOrderId === moving.mover.plan_id) {
              moving.filled.open();
              await moving.recorded.passed;
            }
            return order;
          },
        };
      },
    );
    const keysDir = mkdtempSync(join(tmpdir(), 'record-approvers-'));
    const alice = readPrivateKey(generateApproverKeys('alice', keysDir).privateFile);
    const production = { TRADING_MODE: 'production', APPROVERS: 'alice', APPROVER_KEYS_DIR: keysDir };
    await record('approved-production', production, async (config) => {
      await positions(config, 'SOLUSDT', '2', '2');
      const { workflowId, handle } = await startPlan(temporal.client, config, plan('SOLUSDT', '2'));
      await until(config, workflowId, 'awaiting_approval');
      const shown = (await handle.query(statusQuery)).awaiting;
      if (!shown) throw new Error('record: the plan shows no positions to approve');
      await handle.signal(approveSignal, {
        by: 'alice',
        note: 'unsigned',
        expires_at: Date.now() + 60_000,
        signature: '',
      });
      await handle.signal(
        approveSignal,
        signedRequest(handle.workflowId.slice(5), 'approve', { by: 'alice', note: 'recorded' }, shown, alice),
      );
      await handle.result();
      return workflowId;
    });
  } finally {
    await connection.close();
    redis.disconnect();
    await temporal.teardown();
    await redisServer.stop();
  }
}

/** A promise and the function that resolves it: where an exchange double waits, or tells that it got to. */
function gate(): { passed: Promise<void>; open: () => void } {
  let open!: () => void;
  const passed = new Promise<void>((resolve) => (open = resolve));
  return { passed, open };
}

main().catch((err: unknown) => {
  console.error(`record-histories: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
