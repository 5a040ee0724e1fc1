/**
 * `npm run chaos`: a bounded, self-stopping fault run on the local stack (loopback only). It owns every process:
 * Redis (append-only, fsync always), the Temporal dev server (a database file, so a restart keeps state), the Binance
 * double (or the paper exchange), two workers and one intake. It feeds plans through the upstream stream while a
 * seeded schedule hurts the processes (SIGKILL, SIGSTOP longer than a permit lives, server restarts) and the double
 * (a lost response after the fill, 5xx, 429); then it waits for every plan to end and checks, as an operator would,
 * that nothing was lost, duplicated or late. The same seed gives the same schedule (plans and faults, in order).
 *
 * A tool of the checkout, not of the image: its entry is scripts/chaos/main.ts.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { Redis } from 'ioredis';
import { binanceClientOrderId } from '../../activities/exchange/binance-wire';
import { redisKeys } from '../../contract/keys';
import { PERMIT_CHAIN_WORKFLOW, planWorkflowId } from '../../contract/messages';
import type { ChainOutcome, ChainStatus } from '../../contract/types';
import { Dec, formatDec } from '../../lib/decimal';
import { parsePlan } from '../../lib/plan';
import {
  PROJECT_ROOT,
  devTemporalServerCommand,
  ensureServersInstalled,
  freePort,
  redisReachable,
  redisServerPath,
} from '../../cli/servers';
import { runCli } from '../stack/cli-runner';
import { intakeSpec, workerSpec } from '../stack/chain';
import { chaosViolations, involvedPlans, type ExchangeOrderRecord, type FedPlan, type Violation } from './chaos-check';
import { inLanes, intakeGroupState, streamPlanIds } from '../stack/invariants';
import { ProcessGroup, type ManagedProcess } from '../stack/processes';
import { FAULT_KINDS, type FaultKind } from './fault-kinds';

export { FAULT_KINDS, type FaultKind };
const DOUBLE_FAULTS: readonly FaultKind[] = ['double-lost-response', 'double-5xx', 'double-429'];

export interface ChaosOptions {
  /** Feed plans and inject faults for this long (ms)... */
  durationMs?: number;
  /** ...or until this many plans are fed. */
  plans?: number;
  seed: number;
  exchange: 'binance-double' | 'paper';
  faults: readonly FaultKind[];
  /** Plans fed per second (bursts aside). */
  feedPerS: number;
  /** Where each process logs, and the summary goes. */
  logDir: string;
  /** How long the plans may take to end once feeding stops. */
  drainTimeoutMs: number;
}

export const DEFAULT_CHAOS_OPTIONS: Omit<ChaosOptions, 'seed'> = {
  durationMs: 180_000,
  exchange: 'binance-double',
  faults: FAULT_KINDS,
  feedPerS: 2,
  logDir: join(PROJECT_ROOT, 'test-results', 'chaos'),
  drainTimeoutMs: 300_000,
};

/** One fault as injected: when, and when what it took away was back. */
export interface InjectedFault {
  kind: FaultKind;
  target: string;
  at: number;
  /** When the process was running again (a one-shot exchange fault: when it was queued). */
  endedAt: number;
  /** ms from `endedAt` to the next order placed on the exchange; undefined: none followed. */
  recoveryMs?: number;
}

export interface ChaosReport {
  seed: number;
  violations: Violation[];
  planIds: string[];
  faults: InjectedFault[];
  lines: string[];
}

/** The permit's life in the run: short, so that a SIGSTOP can outlast it. */
const PERMIT_TTL_S = 20;
const PERMIT_MARGIN_S = 5;
/** Plans above this are designed to be denied by the Governor. */
const MAX_QTY = '5';
const START_AMOUNT = '100';
const SYMBOLS = ['CHAAUSDT', 'CHABUSDT', 'CHACUSDT', 'CHADUSDT', 'CHAEUSDT'];
/** Only the blocked plans trade here: its ledger is moved off the exchange's, and `reconcile` puts it back. */
const BLOCKED_SYMBOL = 'CHBLKUSDT';
const MALFORMED_REASON = 'chaos malformed';

/** mulberry32: a small seeded generator, so that a seed replays the same schedule. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Runs the chaos and returns its report; `print` gets each line of it as it comes. Never leaves a process behind. */
export async function runChaos(options: ChaosOptions, print: (line: string) => void): Promise<ChaosReport> {
  ensureServersInstalled({ forTests: false });
  const t0 = Date.now();
  const lines: string[] = [];
  const say = (line: string) => {
    const text = `[${((Date.now() - t0) / 1000).toFixed(1).padStart(6)} s] ${line}`;
    lines.push(text);
    print(text);
  };
  const random = seededRandom(options.seed);
  const faultRandom = seededRandom(options.seed ^ 0x5eed);
  const pick = <T>(items: readonly T[], r = random): T => items[Math.floor(r() * items.length)] as T;

  rmSync(options.logDir, { recursive: true, force: true });
  const runDir = mkdtempSync(join(tmpdir(), 'permit-chain-chaos-'));
  const group = new ProcessGroup(options.logDir);
  let redis: Redis | undefined;
  let client: Client | undefined;
  // Ctrl-C or SIGTERM stops what the run started before it goes: nothing of it outlives the run.
  const interrupted = () => {
    print('chaos: interrupted: stopping its processes');
    void group.stopAll().finally(() => process.exit(130));
  };
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  try {
    const [redisPort, temporalPort, doublePort] = await Promise.all([freePort(), freePort(), freePort()]);
    const redisUrl = `redis://127.0.0.1:${redisPort}/0`;
    const temporalAddress = `127.0.0.1:${temporalPort}`;
    say(`chaos: seed ${options.seed} (replay with --seed ${options.seed}); logs in ${options.logDir}`);

    const redisServer = await group.start({
      name: 'redis',
      command: redisServerPath(),
      args: [
        ...['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--dir', runDir],
        // Every acknowledged write is on disk before the answer: a SIGKILL loses nothing acknowledged.
        ...['--appendonly', 'yes', '--appendfsync', 'always', '--notify-keyspace-events', 'Kgh'],
      ],
      ready: () => redisReachable(redisUrl, 500),
      readyTimeoutMs: 20_000,
    });
    const devServer = devTemporalServerCommand({
      port: temporalPort,
      dbFilename: join(runDir, 'temporal.db'),
      namespace: 'default',
    });
    const temporalServer = await group.start({
      name: 'temporal',
      command: devServer.command,
      args: devServer.args,
      ready: async () => {
        const connection = await Connection.connect({ address: temporalAddress, connectTimeout: 1_000 });
        await connection.close();
        return true;
      },
      readyTimeoutMs: 60_000,
    });

    const keyPrefix = 'chaos';
    const keys = redisKeys(keyPrefix);
    const env: Record<string, string> = {
      REDIS_URL: redisUrl,
      TEMPORAL_ADDRESS: temporalAddress,
      TEMPORAL_NAMESPACE: 'default',
      TASK_QUEUE: 'permit-chain-chaos',
      KEY_PREFIX: keyPrefix,
      TRADING_MODE: 'testnet',
      PERMIT_TTL_S: String(PERMIT_TTL_S),
      PERMIT_MARGIN_S: String(PERMIT_MARGIN_S),
      GOVERNOR_MAX_QTY: MAX_QTY,
      RECHECK_INTERVAL_S: '5',
      LOG_LEVEL: 'info',
      EXCHANGE: 'paper',
    };
    let doubleUrl: string | undefined;
    if (options.exchange === 'binance-double') {
      const keyDir = join(runDir, 'binance-double');
      await group.start({
        name: 'binance-double',
        command: process.execPath,
        args: [
          ...['--import', 'tsx', join(PROJECT_ROOT, 'scripts', 'binance-double', 'main.ts')],
          ...['--port', String(doublePort), '--symbols', [...SYMBOLS, BLOCKED_SYMBOL].join(','), '--key-dir', keyDir],
        ],
        cwd: PROJECT_ROOT,
        ready: /^binance double on /,
      });
      doubleUrl = `http://127.0.0.1:${doublePort}`;
      Object.assign(env, {
        EXCHANGE: 'binance-usdm-testnet',
        BINANCE_BASE_URL: doubleUrl,
        BINANCE_API_KEY_FILE: join(keyDir, 'api-key'),
        BINANCE_API_SECRET_FILE: join(keyDir, 'api-secret'),
      });
    }
    const double = doubleUrl;
    const doubleCall = async (method: 'GET' | 'POST', path: string, body?: unknown): Promise<unknown> => {
      const response = await fetch(`${double}/double/v1/${path}`, {
        method,
        ...(body !== undefined ? { body: JSON.stringify(body), headers: { 'Content-Type': 'application/json' } } : {}),
      });
      if (!response.ok) throw new Error(`double ${method} ${path}: HTTP ${response.status} ${await response.text()}`);
      return response.json();
    };

    // The runner's own connections wait out an outage (their commands queue) rather than fail.
    redis = new Redis(redisUrl, { maxRetriesPerRequest: null, retryStrategy: () => 200 });
    redis.on('error', () => undefined);
    const db = redis;
    client = new Client({ connection: await Connection.connect({ address: temporalAddress }) });
    const temporal = client;

    // Positions: every symbol START_AMOUNT long on the exchange and in the ledger.
    const allSymbols = [...SYMBOLS, BLOCKED_SYMBOL];
    for (const symbol of allSymbols) {
      if (double) await doubleCall('POST', `position?symbol=${symbol}&amount=${START_AMOUNT}`);
      else await db.hset(keys.paperPosition(symbol), 'amount', START_AMOUNT);
      await db.hset(keys.position(symbol), 'ledger_amount', START_AMOUNT);
    }

    const workers = await Promise.all([
      group.start(workerSpec('worker-a', env)),
      group.start(workerSpec('worker-b', env)),
    ]);
    const intake = await group.start(intakeSpec('intake', env, { claimIdle: '10s' }));
    say(
      `chaos: Redis ${redisUrl} (AOF, fsync always), Temporal dev server ${temporalAddress}, ` +
        `${double ? `the Binance double ${double}` : 'the paper exchange'}, 2 workers, 1 intake: ready`,
    );

    // --- the feed ----------------------------------------------------------------------------------------------
    const plans = new Map<string, FedPlan>();
    const fedFields: Record<string, string>[] = [];
    const counts = { entries: 0, repeats: 0, malformed: 0, bursts: 0, blocked: 0, denied: 0 };
    let planNo = 0;
    const xadd = async (fields: Record<string, string>) => {
      await db.xadd(keys.exitPlanStream, '*', ...Object.entries(fields).flat());
      counts.entries += 1;
    };
    const qtyOf = () => (0.001 * (1 + Math.floor(random() * 50))).toFixed(3);
    const feedPlan = async (symbol: string, outcome: ChainOutcome, qty = qtyOf(), sell = random() < 0.5) => {
      planNo += 1;
      const fields = {
        action: 'EXECUTE',
        symbol,
        side: sell ? 'SELL' : 'BUY',
        qty,
        reduce_only: sell ? 'true' : 'false',
        source: 'chaos',
        reason: `chaos plan ${planNo} of seed ${options.seed} at ${t0}`,
        created_at: String(t0 + planNo),
      };
      plans.set(parsePlan(fields).plan_id, { planId: parsePlan(fields).plan_id, symbol, outcome });
      fedFields.push(fields);
      await xadd(fields);
    };
    const feedMalformed = async () => {
      counts.malformed += 1;
      const reason = `${MALFORMED_REASON} ${counts.malformed}`;
      const base = { action: 'EXECUTE', symbol: pick(SYMBOLS), side: 'SELL', qty: '0.01', reason };
      const broken = pick([
        { ...base, qty: '-1' },
        { ...base, qty: '0.123456789' },
        { ...base, side: 'HOLD' },
        { ...base, symbol: 'not a symbol' },
        { ...base, action: 'CANCEL' },
        { action: 'EXECUTE', symbol: base.symbol, reason },
      ]);
      await xadd(broken);
    };

    const feedFrom = Date.now();
    const feedUntil = options.durationMs !== undefined ? feedFrom + options.durationMs : Number.POSITIVE_INFINITY;
    const feedingOn = () => Date.now() < feedUntil && (options.plans === undefined || plans.size < options.plans);
    const feeding = (async () => {
      while (feedingOn()) {
        const r = random();
        if (r < 0.06) await feedMalformed();
        else if (r < 0.14 && fedFields.length > 0) {
          counts.repeats += 1;
          await xadd(pick(fedFields));
        } else if (r < 0.17) {
          counts.bursts += 1;
          const symbol = pick(SYMBOLS);
          for (let i = 0; i < 8; i++) await feedPlan(symbol, 'executed');
        } else if (r < 0.19) {
          counts.denied += 1;
          await feedPlan(pick(SYMBOLS), 'denied', '7', true);
        } else await feedPlan(pick(SYMBOLS), 'executed');
        await sleep(1000 / options.feedPerS);
      }
    })();

    // Blocked plans: the ledger of BLOCKED_SYMBOL moved off the exchange's, two plans fed (P3.3 blocks them), then
    // `permit-chain reconcile` after a while; the next round only once both have ended.
    const blockedRandom = seededRandom(options.seed ^ 0xb10c);
    const ended = (planId: string): Promise<boolean> =>
      temporal.workflow
        .getHandle(planWorkflowId(planId))
        .describe()
        .then((d) => d.status.name !== 'RUNNING')
        .catch(() => false);
    const blocking = (async () => {
      while (feedingOn()) {
        await sleep(5_000 + blockedRandom() * 10_000);
        if (!feedingOn()) return;
        const ledger = new Dec((await db.hget(keys.position(BLOCKED_SYMBOL), 'ledger_amount')) ?? '0');
        await db.hset(keys.position(BLOCKED_SYMBOL), 'ledger_amount', formatDec(ledger.add(1)));
        const before = new Set(plans.keys());
        for (let i = 0; i < 2; i++) await feedPlan(BLOCKED_SYMBOL, 'executed', qtyOf(), blockedRandom() < 0.5);
        counts.blocked += 2;
        const round = [...plans.keys()].filter((planId) => !before.has(planId));
        await sleep(8_000 + blockedRandom() * 10_000);
        for (;;) {
          const fixed = await runCli(['reconcile', BLOCKED_SYMBOL, '--by', 'chaos', '--yes'], env, 60_000).catch(
            (err: unknown) => ({ code: 1, stdout: '', stderr: String(err) }),
          );
          if (fixed.code === 0) break;
          say(`chaos: reconcile ${BLOCKED_SYMBOL} failed (${fixed.stderr.trim().split('\n')[0]}); again in 2 s`);
          await sleep(2_000);
        }
        // Bounded by the feed: a plan that never ends is the drain's to report, not a reason to run on.
        for (const planId of round) while (feedingOn() && !(await ended(planId))) await sleep(1_000);
      }
    })();

    // --- the faults --------------------------------------------------------------------------------------------
    const kinds = options.faults.filter((kind) => double || !DOUBLE_FAULTS.includes(kind));
    const faults: InjectedFault[] = [];
    const pause = (min: number, max: number) => Math.round(min + faultRandom() * (max - min));
    const inject = async (kind: FaultKind): Promise<InjectedFault> => {
      const at = Date.now();
      const done = (target: string): InjectedFault => ({ kind, target, at, endedAt: Date.now() });
      const restartAfter = async (proc: ManagedProcess, how: 'kill' | 'stop', deadMs: number) => {
        if (how === 'kill') await proc.kill();
        else await proc.stop();
        await sleep(deadMs);
        await proc.start();
      };
      switch (kind) {
        case 'worker-kill': {
          const worker = pick(workers, faultRandom);
          await restartAfter(worker, 'kill', pause(500, 5_000));
          return done(worker.name);
        }
        case 'intake-kill':
          await restartAfter(intake, 'kill', pause(500, 5_000));
          return done(intake.name);
        case 'worker-stop': {
          const worker = pick(workers, faultRandom);
          worker.pause();
          // Longer than a permit lives: whatever it held must be taken over, and its permits asked again.
          await sleep(PERMIT_TTL_S * 1000 + pause(1_000, 5_000));
          worker.resume();
          return done(worker.name);
        }
        case 'redis-kill':
          await restartAfter(redisServer, 'kill', pause(500, 4_000));
          return done('redis');
        case 'temporal-restart':
          await restartAfter(temporalServer, 'stop', pause(500, 4_000));
          return done('temporal');
        case 'double-lost-response':
          await doubleCall('POST', 'fault', {
            kind: 'lose-response-after-fill',
            path: '/fapi/v1/order',
            method: 'POST',
          });
          return done('binance-double');
        case 'double-5xx':
          await doubleCall('POST', 'fault', {
            kind: 'http-5xx',
            status: pick([500, 502, 503] as const, faultRandom),
            ...(faultRandom() < 0.5 ? { executed: true, path: '/fapi/v1/order', method: 'POST' } : {}),
          });
          return done('binance-double');
        case 'double-429':
          await doubleCall('POST', 'fault', { kind: 'rate-limit', status: 429, retryAfterS: pause(1, 3) });
          return done('binance-double');
      }
    };
    const faulting = (async () => {
      // Rounds of every kind in a seeded order: the kinds stay balanced however long the run.
      while (feedingOn() && kinds.length > 0) {
        const round = [...kinds].sort(() => faultRandom() - 0.5);
        for (const kind of round) {
          await sleep(pause(2_000, 6_000));
          if (!feedingOn()) return;
          const fault = await inject(kind);
          faults.push(fault);
          say(
            `fault ${faults.length}: ${kind} (${fault.target}), ` +
              `${((fault.endedAt - fault.at) / 1000).toFixed(1)} s until it was back`,
          );
        }
      }
    })();

    await Promise.all([feeding, faulting, blocking]);
    const fedAt = Date.now();
    say(`chaos: feeding and faults done: ${plans.size} plans, ${counts.entries} entries, ${faults.length} faults`);

    // --- the drain ---------------------------------------------------------------------------------------------
    // Every process is running again (a fault ends with its process back); wait for the intake to read everything
    // and every plan to end.
    const drainUntil = Date.now() + options.drainTimeoutMs;
    let open = plans.size;
    while (Date.now() < drainUntil) {
      const running = await temporal.workflow
        .count(`WorkflowType = "${PERMIT_CHAIN_WORKFLOW}" AND ExecutionStatus = "Running"`)
        .catch(() => ({ count: -1 }));
      const total = await temporal.workflow
        .count(`WorkflowType = "${PERMIT_CHAIN_WORKFLOW}"`)
        .catch(() => ({ count: -1 }));
      const pending = await intakeGroupState(db, keys).catch(() => ({ pending: -1, lag: null }));
      open = plans.size - total.count + running.count;
      if (running.count === 0 && total.count >= plans.size && pending.pending === 0 && pending.lag === 0) break;
      await sleep(2_000);
    }
    const drainedAt = Date.now();
    say(`chaos: drained ${((drainedAt - fedAt) / 1000).toFixed(1)} s after feeding stopped (${open} still open)`);

    // --- the checks --------------------------------------------------------------------------------------------
    const planList = [...plans.values()];
    const results = await inLanes(planList, 8, async (plan) => {
      const handle = temporal.workflow.getHandle(planWorkflowId(plan.planId));
      const description = await handle.describe().catch(() => undefined);
      if (description?.status.name !== 'COMPLETED') return undefined;
      return (await handle.result()) as ChainStatus;
    });
    const outcomes = new Map(planList.map((plan, i) => [plan.planId, results[i]?.outcome]));
    const permitExpiresAt = new Map<string, number>();
    planList.forEach((plan, i) => {
      const expiresAt = results[i]?.governor?.expires_at;
      if (expiresAt !== undefined) permitExpiresAt.set(plan.planId, expiresAt);
    });
    const clientIds = new Map(planList.map((plan) => [binanceClientOrderId(plan.planId), plan.planId]));
    const orders: ExchangeOrderRecord[] = [];
    const positions = new Map<string, { start: string; exchange: string | null; ledger: string | null }>();
    if (double) {
      const book = (await doubleCall('GET', 'orders')) as Omit<ExchangeOrderRecord, 'planId'>[];
      for (const order of book) orders.push({ ...order, planId: clientIds.get(order.clientOrderId) });
      const held = (await doubleCall('GET', 'positions')) as { symbol: string; positionAmt: string }[];
      for (const symbol of allSymbols) {
        positions.set(symbol, {
          start: START_AMOUNT,
          exchange: held.find((p) => p.symbol === symbol)?.positionAmt ?? null,
          ledger: await db.hget(keys.position(symbol), 'ledger_amount'),
        });
      }
    } else {
      for (const plan of planList) {
        const order = await db.hgetall(keys.paperOrder(plan.planId));
        if (!order.client_order_id) continue;
        const executedAt = await db.hget(keys.execution(plan.planId), 'executed_at');
        orders.push({
          planId: plan.planId,
          clientOrderId: order.client_order_id,
          symbol: order.symbol ?? '',
          side: order.side ?? '',
          status: order.status ?? '',
          executedQty: order.filled_qty ?? '',
          // The paper exchange keeps no order time: the ledger's record of it comes a moment after.
          time: executedAt ? Date.parse(executedAt) || Number(executedAt) : 0,
        });
      }
      for (const symbol of allSymbols) {
        positions.set(symbol, {
          start: START_AMOUNT,
          exchange: await db.hget(keys.paperPosition(symbol), 'amount'),
          ledger: await db.hget(keys.position(symbol), 'ledger_amount'),
        });
      }
    }
    const exitEntries = await db.xrange(keys.exitPlanStream, '-', '+');
    const malformed = exitEntries
      .filter(([, fields]) => (fields[fields.indexOf('reason') + 1] ?? '').startsWith(MALFORMED_REASON))
      .map(([id]) => id);
    const deadEntries = await db.xrange(keys.exitPlanDeadStream, '-', '+');
    const deadLettered = deadEntries.map(([, fields]) => fields[fields.indexOf('original_id') + 1] ?? '');
    const violations = chaosViolations(planList, {
      outcomes,
      permitExpiresAt,
      workflows: (await temporal.workflow.count(`WorkflowType = "${PERMIT_CHAIN_WORKFLOW}"`)).count,
      applyEntries: await streamPlanIds(db, keys.applyStream),
      orders,
      positions,
      intake: await intakeGroupState(db, keys),
      malformed,
      deadLettered,
    });

    // --- the report --------------------------------------------------------------------------------------------
    const orderTimes = orders.map((order) => order.time).sort((a, b) => a - b);
    for (const fault of faults) {
      const next = orderTimes.find((time) => time >= fault.endedAt);
      if (next !== undefined) fault.recoveryMs = next - fault.endedAt;
    }
    const byOutcome = new Map<string, number>();
    for (const outcome of outcomes.values())
      byOutcome.set(outcome ?? 'not ended', (byOutcome.get(outcome ?? 'not ended') ?? 0) + 1);
    const executed = byOutcome.get('executed') ?? 0;
    const feedS = (fedAt - feedFrom) / 1000;
    say('chaos: figures');
    say(
      `  plans ${plans.size} (${[...byOutcome].map(([o, n]) => `${n} ${o}`).join(', ')}); entries ${counts.entries}: ` +
        `${counts.repeats} repeats, ${counts.malformed} malformed (${deadLettered.length} dead-lettered), ` +
        `${counts.bursts} bursts of 8, ${counts.blocked} blocked until reconcile, ${counts.denied} over the size limit`,
    );
    say(
      `  throughput ${(executed / ((drainedAt - feedFrom) / 1000)).toFixed(2)} executed plans/s over ` +
        `${((drainedAt - feedFrom) / 1000).toFixed(0)} s (fed for ${feedS.toFixed(0)} s, drained in ` +
        `${((drainedAt - fedAt) / 1000).toFixed(1)} s); ${orders.length} orders on the exchange`,
    );
    const byKind = new Map<FaultKind, InjectedFault[]>();
    for (const fault of faults) byKind.set(fault.kind, [...(byKind.get(fault.kind) ?? []), fault]);
    say(`  faults ${faults.length}: ${[...byKind].map(([kind, list]) => `${kind} ×${list.length}`).join(', ')}`);
    for (const [kind, list] of byKind) {
      const recoveries = list.map((f) => f.recoveryMs).filter((ms): ms is number => ms !== undefined);
      const s = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
      say(
        `  recovery after ${kind}: ${recoveries.length > 0 ? `median ${s(median(recoveries))}, max ${s(Math.max(...recoveries))}` : 'no order followed'}` +
          ` (${list.map((f) => (f.recoveryMs === undefined ? '–' : s(f.recoveryMs))).join(', ')})`,
      );
    }
    // The money first: orders, deadlines and positions, then the Apply stream and the intake, then plans not ended
    // (which a broken build leaves by the dozen, blocked on the drift its extra orders made).
    const rank = (v: Violation) =>
      /order|deadline|exchange|ledger/.test(v.text) ? 0 : /has not ended|designed to end/.test(v.text) ? 2 : 1;
    violations.sort((a, b) => rank(a) - rank(b));
    const planIds = involvedPlans(violations);
    say(`  violations ${violations.length}`);
    for (const violation of violations.slice(0, 50)) say(`  VIOLATION ${violation.text}`);
    if (violations.length > 50) say(`  … and ${violations.length - 50} more`);
    const ordered = involvedPlans(violations.filter((v) => rank(v) === 0));
    if (ordered.length > 0) say(`  plans with an order wrong: ${ordered.join(' ')}`);
    if (planIds.length > 0) say(`  plans involved: ${planIds.join(' ')}`);
    say(`chaos: seed ${options.seed}: ${violations.length === 0 ? 'no violations' : 'FAILED'}`);
    writeFileSync(join(options.logDir, 'summary.txt'), `${lines.join('\n')}\n`);
    return { seed: options.seed, violations, planIds, faults, lines };
  } finally {
    process.off('SIGINT', interrupted);
    process.off('SIGTERM', interrupted);
    redis?.disconnect();
    await client?.connection.close().catch(() => undefined);
    await group.stopAll();
    rmSync(runDir, { recursive: true, force: true });
  }
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? 0;
}
