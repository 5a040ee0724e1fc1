import { randomBytes } from 'node:crypto';
import type { Client, WorkflowHandle } from '@temporalio/client';
import { DefaultLogger, Runtime, type NativeConnection } from '@temporalio/worker';
import type { Redis } from 'ioredis';
import { createActivities } from '../activities';
import { createPaperExchange } from '../activities/exchange/paper';
import { connectTemporal, startPlan } from '../client/plans';
import type { ChainConfig } from '../lib/config';
import { redisKeys, type RedisKeys } from '../contract/keys';
import { parsePlan } from '../lib/plan';
import type { ChainStatus, Plan } from '../contract/types';
import type { benchFloor, benchShape } from './bench-workflows';
import { connectRedis } from '../lib/connections';
import { PositionWatcher } from '../workers/position-watcher';
import { exchangeFor } from '../activities/exchange';
import { connectWorkerTemporal, createChainWorker } from '../workers/worker';
import { directChain } from './bench-direct';
import { checkIntegrity, integrityLine, type Baseline, type BenchPlan } from './bench-integrity';
import { listeningPid, processName, sampleProcess, type ProcessSample } from './bench-proc';
import type { Output } from '../cli/output';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { prebuiltWorkflowCode } from '../workers/workflow-code';
import { CLI } from './stack/cli-runner';
import { workerSpec } from './stack/chain';
import { ProcessGroup, type ManagedProcess } from './stack/processes';

/** The bench's workflows (the chain's and its floors), which its in-process worker bundles at start. */
const BENCH_WORKFLOWS_PATH = join(__dirname, 'bench-workflows.ts');

export interface BenchOptions {
  /** Side by side (the default mode): how many plans, empty workflows and direct chains. */
  plans: number;
  concurrency: number;
  /** Default: 10, or 20 with `parked`. */
  symbols?: number;
  /** Sustained load for this long (ms). */
  duration?: number;
  /** Bursts of this many plans on one symbol, one after another. */
  burst?: number[];
  /** This many blocked plans at rest. */
  parked?: number;
  /** With `parked`: how long CPU and memory are sampled (ms). */
  window: number;
  /** With `parked`: how long the fixed plans may take to execute after the ledger fix (ms). */
  fixTimeout: number;
  /** With `parked`: the Temporal server's pid, when it cannot be found from its port. */
  serverPid?: number;
}

/** A figure the bench prints beside its target: `pass` null when it could not be measured here. */
export interface Check {
  figure: string;
  value: number | null;
  unit: string;
  target: string;
  pass: boolean | null;
}

export interface BenchReport {
  mode: 'side-by-side' | 'sustained' | 'burst' | 'parked';
  run: string;
  /** Nothing lost or duplicated, every plan ended as it should: the exit code follows this, not the targets. */
  ok: boolean;
  checks: Check[];
  [figure: string]: unknown;
}

/** Issue 8's targets (this machine, embedded dev server), each printed beside the figure it judges. */
const TARGET = {
  chainToEmptyP50: 2,
  chainToEmptyP99: 4,
  sustainedPlansPerS: 60,
  sustainedP99Ms: 1000,
  /** A burst drains in N × the serial chain's p50 plus this. */
  burstSlackMs: 5000,
  /** A burst twice as large drains in at most 2.2 times as long: linear, with 10 % slack. */
  burstLinearity: 1.1,
  allBlockedMs: 60_000,
  parkedCpuPercent: 15,
  parkedRssDrift: 0.1,
  parkedRssMiB: 500,
  fixToExecutedP50Ms: 1000,
};

/** Runs before each measured series and not counted: the first workflow of a fresh worker pays for its sandbox. */
const WARM_UP_RUNS = 2;
/**
 * The chain's shape, for benchShape: the local activities (governorTurn, publishPlan, checkPosition) and regular
 * ones (executePlan) of a plan that goes straight through. Keep it in step with workflows/permit-chain.ts.
 */
const CHAIN_SHAPE = { locals: 3, regulars: 1 } as const;
/** `--duration`: how long the empty workflow and the chain's shape run in the same lanes before the chain. */
const FLOOR_SUSTAINED_MS = 15_000;
/** `--burst`: the serial chain's p50 its targets are derived from, measured first in the same run. */
const BURST_SERIAL_PLANS = 10;
/** How long past its measure the bench waits for a plan's end: one that has not ended by then counts as lost. */
const DRAIN_BOUND_MS = 120_000;
/** `--parked`: how often CPU and memory are sampled, and how often visibility is asked how many are blocked. */
const SAMPLE_EVERY_MS = 5_000;
const BLOCKED_POLL_MS = 500;
/** The paper exchange's position of a parked symbol: the ledger says 0, so P3.3 blocks every plan on it. */
const PARKED_EXCHANGE = '1';
/** RPCs (starts, cancels, terminations) the bench has in flight at once outside the measured plans. */
const RPC_LANES = 20;

const TIMED_OUT = Symbol('timed out');

/** The promise's value, or TIMED_OUT at the deadline (ms since epoch). */
async function byDeadline<T>(promise: Promise<T>, deadline: number): Promise<T | typeof TIMED_OUT> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<typeof TIMED_OUT>((done) => {
    timer = setTimeout(() => done(TIMED_OUT), Math.max(0, deadline - Date.now()));
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms));

/** Runs `task` for 0..count-1, `lanes` at a time. */
async function inLanes(count: number, lanes: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const lane = async () => {
    while (next < count) await task(next++);
  };
  await Promise.all(Array.from({ length: Math.min(lanes, count) }, lane));
}

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? NaN;
}

const round = (n: number) => (Number.isFinite(n) ? Math.round(n * 10) / 10 : null);

/** p50/p95/p99/max of latencies in ms, to 0.1 ms; an unfinished run counts as Infinity (shown as null). */
function latency(ms: readonly number[]) {
  const sorted = [...ms].sort((a, b) => a - b);
  return {
    p50: round(percentile(sorted, 50)),
    p95: round(percentile(sorted, 95)),
    p99: round(percentile(sorted, 99)),
    max: round(sorted[sorted.length - 1] ?? NaN),
  };
}

const ms = (value: number | null) => (value === null ? '—' : `${value} ms`);
const mib = (bytes: number) => Math.round(bytes / 1024 / 1024);

function check(figure: string, value: number | null, unit: string, target: string, pass: boolean | null): Check {
  const decimals = unit === '×' ? 100 : 10;
  return { figure, value: value === null ? null : Math.round(value * decimals) / decimals, unit, target, pass };
}

function atMost(figure: string, value: number | null, limit: number, unit: string): Check {
  return check(figure, value, unit, `≤ ${limit}${unit}`, value === null ? false : value <= limit);
}

function checkLine(c: Check): string {
  const shown = c.value === null ? '—' : `${c.value}${c.unit}`;
  const mark = c.pass === null ? 'n/a' : c.pass ? 'PASS' : 'FAIL';
  return `  ${c.figure.padEnd(40)} ${shown.padStart(12)}   target ${c.target.padEnd(12)} ${mark}`;
}

/** What a mode measured: lines for people, and the report (`--json`). */
interface Measured {
  text: string[];
  report: BenchReport;
}

/** What every mode works with: the bench's own config, connections, and what it started. */
interface Bench {
  run: string;
  config: ChainConfig;
  keys: RedisKeys;
  redis: Redis;
  client: Client;
  out: Output;
  /** Workflows started and not yet seen to end, by workflow id: the bench ends them before it leaves. */
  open: Map<string, { handle: WorkflowHandle; record?: BenchPlan }>;
  /** Every plan the bench started, for the integrity check. */
  plans: BenchPlan[];
  /** Each symbol's amounts before the plans moved them. */
  baseline: Map<string, Baseline>;
}

/** Where the run was: its id, task queue and key prefix (both gone when it is done). */
function where(b: Bench) {
  return { run: b.run, task_queue: b.config.taskQueue, key_prefix: b.config.keyPrefix };
}

function benchPlan(b: Bench, symbol: string, tag: string): Plan {
  return parsePlan({
    action: 'EXECUTE',
    symbol,
    side: 'BUY',
    qty: '0.001',
    reduce_only: false,
    source: 'bench',
    created_at: Date.now(),
    // The run and the tag make each plan of the benchmark a plan of its own.
    reason: `bench ${b.run}-${tag}`,
  });
}

async function setPositions(
  redis: Redis,
  keys: RedisKeys,
  symbols: readonly string[],
  amounts: Baseline,
  baseline?: Map<string, Baseline>,
): Promise<void> {
  const pipeline = redis.pipeline();
  for (const symbol of symbols) {
    pipeline.hset(keys.paperPosition(symbol), 'amount', amounts.exchange);
    pipeline.hset(keys.position(symbol), 'ledger_amount', amounts.ledger);
    baseline?.set(symbol, amounts);
  }
  await pipeline.exec();
}

/** Starts a plan's workflow; it stays on the bench's books until it is seen to end. */
async function startChain(b: Bench, plan: Plan): Promise<{ record: BenchPlan; handle: WorkflowHandle }> {
  const record: BenchPlan = { planId: plan.plan_id, symbol: plan.symbol };
  b.plans.push(record);
  const { handle } = await startPlan(b.client, b.config, plan);
  b.open.set(handle.workflowId, { handle, record });
  return { record, handle };
}

/** Waits for a plan's outcome until the deadline; 'unfinished' when it has none by then. */
async function awaitOutcome(b: Bench, record: BenchPlan, handle: WorkflowHandle, deadline: number): Promise<string> {
  const result = await byDeadline(
    (handle.result() as Promise<ChainStatus>).then(
      (status) => status.outcome ?? 'none',
      () => 'error',
    ),
    deadline,
  );
  if (result === TIMED_OUT) return (record.outcome = 'unfinished');
  b.open.delete(handle.workflowId);
  return (record.outcome = result);
}

/** One plan through the chain, start to result. */
async function timedChain(b: Bench, plan: Plan, deadline: number): Promise<{ ms: number; outcome: string }> {
  const t0 = performance.now();
  const { record, handle } = await startChain(b, plan);
  const outcome = await awaitOutcome(b, record, handle, deadline);
  return { ms: outcome === 'unfinished' ? Infinity : performance.now() - t0, outcome };
}

/** `count` plans one after another on `symbol`; their latencies. */
async function serialChains(b: Bench, symbol: string, tag: string, count: number): Promise<number[]> {
  const latencies: number[] = [];
  for (let i = 0; i < count; i++) {
    const { ms } = await timedChain(b, benchPlan(b, symbol, `${tag}-${i}`), Date.now() + DRAIN_BOUND_MS);
    latencies.push(ms);
    if (ms === Infinity) break;
  }
  return latencies;
}

/** A floor: the empty workflow, or the chain's shape with no-op activities; start to result. */
type Floor = 'empty' | 'shape';

/** A floor workflow, start to result. */
async function timedFloor(b: Bench, tag: string, floor: Floor = 'empty'): Promise<number> {
  const t0 = performance.now();
  const options = { taskQueue: b.config.taskQueue, workflowId: `bench-${floor}-${b.run}-${tag}` };
  const handle =
    floor === 'empty'
      ? await b.client.workflow.start<typeof benchFloor>('benchFloor', options)
      : await b.client.workflow.start<typeof benchShape>('benchShape', {
          ...options,
          args: [CHAIN_SHAPE.locals, CHAIN_SHAPE.regulars],
        });
  b.open.set(handle.workflowId, { handle });
  const done = await byDeadline(handle.result(), Date.now() + DRAIN_BOUND_MS);
  if (done === TIMED_OUT) return Infinity;
  b.open.delete(handle.workflowId);
  return performance.now() - t0;
}

/** Ends what the bench started and has not seen end: a Temporal cancel first when asked, then termination. */
async function endOpen(b: Bench, options: { cancelFirst: boolean; waitMs: number }): Promise<number> {
  const open = [...b.open.values()];
  if (options.cancelFirst && open.length > 0) {
    await inLanes(open.length, RPC_LANES, async (i) => {
      await open[i]?.handle.cancel().catch(() => undefined);
    });
    const deadline = Date.now() + options.waitMs;
    await Promise.all(
      open.map(async ({ handle, record }) => {
        if (record) await awaitOutcome(b, record, handle, deadline);
      }),
    );
  }
  const left = [...b.open.values()];
  await inLanes(left.length, RPC_LANES, async (i) => {
    const { handle, record } = left[i]!;
    await handle.terminate(`bench ${b.run} is done`).catch(() => undefined);
    b.open.delete(handle.workflowId);
    if (record) record.outcome = 'terminated';
  });
  return left.length;
}

/** The bench's own keys go when it is done: it leaves the shared Redis as it found it. */
async function removeKeys(redis: Redis, pattern: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, found] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    if (found.length > 0) await redis.del(...found);
    cursor = next;
  } while (cursor !== '0');
}

function symbolsOf(count: number, tag = ''): string[] {
  return Array.from({ length: count }, (_, i) => `BENCH${tag}${i}USDT`);
}

/**
 * The default mode: the empty workflow, the same Redis work as direct calls, and the chain, in the same run on the
 * same server; the chain's latency as a ratio to both.
 */
async function sideBySide(b: Bench, options: BenchOptions, symbolCount: number): Promise<Measured> {
  const symbols = symbolsOf(symbolCount);
  await setPositions(b.redis, b.keys, symbols, { exchange: '0', ledger: '0' }, b.baseline);
  const serial = options.concurrency === 1;
  b.out.line(
    `bench: ${options.plans} direct chains (serial), then ${options.plans} each of the empty workflow, the chain's ` +
      `shape (${CHAIN_SHAPE.locals} local + ${CHAIN_SHAPE.regulars} regular no-op activities) and plans ` +
      (serial ? `in turn, one at a time` : `(the floors serial, then the plans ${options.concurrency} at a time)`) +
      ` over ${symbolCount} symbols; ${WARM_UP_RUNS} warm-up runs of each first`,
  );

  // The same activities with the same deps as the worker, over a key prefix of their own.
  const directConfig: ChainConfig = { ...b.config, keyPrefix: `${b.config.keyPrefix}:direct` };
  const directKeys = redisKeys(directConfig.keyPrefix);
  await setPositions(b.redis, directKeys, symbols, { exchange: '0', ledger: '0' });
  const layers = createActivities({
    redis: b.redis,
    config: directConfig,
    exchange: createPaperExchange(b.redis, directKeys, Date.now),
    clock: Date.now,
    approverKeys: new Map(),
  });
  const direct: number[] = [];
  for (let i = -WARM_UP_RUNS; i < options.plans; i++) {
    const plan = benchPlan(b, symbols[(i + WARM_UP_RUNS) % symbols.length]!, `direct-${i}`);
    const t0 = performance.now();
    await directChain(layers, plan);
    if (i >= 0) direct.push(performance.now() - t0);
  }

  for (let i = 0; i < WARM_UP_RUNS; i++) {
    await timedFloor(b, `warm-${i}`);
    await timedFloor(b, `warm-${i}`, 'shape');
  }
  await serialChains(b, symbols[0]!, 'warm', WARM_UP_RUNS);
  const floor: number[] = [];
  const shape: number[] = [];
  let chain: number[];
  let wallMs: number;
  if (serial) {
    // In turn, one of each: the machine's noise falls on the three alike.
    chain = [];
    for (let i = 0; i < options.plans && !chain.includes(Infinity); i++) {
      floor.push(await timedFloor(b, String(i)));
      shape.push(await timedFloor(b, String(i), 'shape'));
      const plan = benchPlan(b, symbols[i % symbols.length]!, String(i));
      chain.push((await timedChain(b, plan, Date.now() + DRAIN_BOUND_MS)).ms);
    }
    wallMs = chain.reduce((sum, one) => sum + one, 0);
  } else {
    for (let i = 0; i < options.plans && !floor.includes(Infinity); i++) floor.push(await timedFloor(b, String(i)));
    for (let i = 0; i < options.plans && !shape.includes(Infinity); i++) {
      shape.push(await timedFloor(b, String(i), 'shape'));
    }
    const lanes = await chainLanes(
      b,
      symbols,
      options.concurrency,
      (i) => i < options.plans,
      () => Date.now() + DRAIN_BOUND_MS,
    );
    ({ latencies: chain, wallMs } = lanes);
  }
  const { integrity, executed } = await settle(b);
  const floorMs = latency(floor);
  const shapeMs = latency(shape);
  const directMs = latency(direct);
  const chainMs = latency(chain);
  const ratio = (a: number | null, z: number | null) =>
    a === null || z === null || z === 0 ? null : Math.round((a / z) * 100) / 100;
  const ratios = {
    chain_to_empty: { p50: ratio(chainMs.p50, floorMs.p50), p99: ratio(chainMs.p99, floorMs.p99) },
    shape_to_empty: { p50: ratio(shapeMs.p50, floorMs.p50), p99: ratio(shapeMs.p99, floorMs.p99) },
    chain_to_shape: { p50: ratio(chainMs.p50, shapeMs.p50), p99: ratio(chainMs.p99, shapeMs.p99) },
    chain_to_direct: { p50: ratio(chainMs.p50, directMs.p50), p99: ratio(chainMs.p99, directMs.p99) },
  };
  // The targets are for a serial chain: plans in flight at once wait for each other's workflow tasks.
  const ratioCheck = (figure: string, value: number | null, limit: number) =>
    serial ? atMost(figure, value, limit, '×') : check(figure, value, '×', `≤ ${limit}× at --concurrency 1`, null);
  const checks = [
    ratioCheck('chain / empty workflow, p50', ratios.chain_to_empty.p50, TARGET.chainToEmptyP50),
    ratioCheck('chain / empty workflow, p99', ratios.chain_to_empty.p99, TARGET.chainToEmptyP99),
    // Not a target: how much of the first ratio is the SDK's and the server's hand-offs, with nothing in them.
    check(`the chain's no-op shape / empty, p50`, ratios.shape_to_empty.p50, '×', 'for reference', null),
  ];
  const plansPerS = (executed / wallMs) * 1000;
  const x = (r: number | null) => (r === null ? '—' : `${r.toFixed(1)}×`);
  const text = [
    `empty workflow  ${floor.length} serial                p50 ${ms(floorMs.p50)}  p99 ${ms(floorMs.p99)}`,
    `chain's shape   ${shape.length} serial, no-op ${CHAIN_SHAPE.locals}L+${CHAIN_SHAPE.regulars}R   p50 ${ms(shapeMs.p50)}  p99 ${ms(shapeMs.p99)}`,
    `direct calls    ${options.plans} serial, one process   p50 ${ms(directMs.p50)}  p99 ${ms(directMs.p99)}`,
    `chain           ${executed}/${options.plans} executed, ${options.concurrency} at a time, ${symbolCount} symbols, ` +
      `${Math.round(wallMs)} ms`,
    `                p50 ${ms(chainMs.p50)}  p95 ${ms(chainMs.p95)}  p99 ${ms(chainMs.p99)}  max ${ms(chainMs.max)}`,
    `                ${plansPerS.toFixed(1)} plans/s`,
    `chain / empty   p50 ${x(ratios.chain_to_empty.p50)}  p99 ${x(ratios.chain_to_empty.p99)}`,
    `shape / empty   p50 ${x(ratios.shape_to_empty.p50)}  p99 ${x(ratios.shape_to_empty.p99)}`,
    `chain / shape   p50 ${x(ratios.chain_to_shape.p50)}  p99 ${x(ratios.chain_to_shape.p99)}`,
    `chain / direct  p50 ${x(ratios.chain_to_direct.p50)}  p99 ${x(ratios.chain_to_direct.p99)}`,
    `integrity       ${integrityLine(integrity)}`,
    'targets',
    ...checks.map(checkLine),
  ];
  const report: BenchReport = {
    mode: 'side-by-side',
    ...where(b),
    ok: integrity.ok && executed === options.plans,
    plans: options.plans,
    concurrency: options.concurrency,
    symbols: symbolCount,
    executed,
    wall_ms: Math.round(wallMs),
    plans_per_s: round(plansPerS),
    empty_workflow_ms: { runs: floor.length, p50: floorMs.p50, p99: floorMs.p99 },
    chain_shape_ms: { runs: shape.length, ...CHAIN_SHAPE, p50: shapeMs.p50, p99: shapeMs.p99 },
    direct_calls_ms: { runs: direct.length, p50: directMs.p50, p99: directMs.p99 },
    latency_ms: chainMs,
    ratios,
    integrity,
    checks,
  };
  return { text, report };
}

/**
 * Plans through the chain in `concurrency` lanes over `symbols`, one after another in each lane while `more(i)`;
 * each waits for its result until `deadline()`. Returns the latencies and the time to the last result.
 */
async function chainLanes(
  b: Bench,
  symbols: string[],
  concurrency: number,
  more: (i: number) => boolean,
  deadline: () => number,
): Promise<{ latencies: number[]; wallMs: number }> {
  const latencies: number[] = [];
  let next = 0;
  const started = performance.now();
  let lastEnd = started;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (more(next)) {
        const i = next++;
        const run = await timedChain(b, benchPlan(b, symbols[i % symbols.length]!, String(i)), deadline());
        latencies.push(run.ms);
        lastEnd = performance.now();
        if (run.outcome === 'unfinished') return;
      }
    }),
  );
  return { latencies, wallMs: lastEnd - started };
}

/** A floor workflow in `concurrency` lanes for `durationMs`: what the server and the SDK give with nothing in it. */
async function floorLanes(b: Bench, concurrency: number, floor: Floor, durationMs: number) {
  const latencies: number[] = [];
  let next = 0;
  const started = performance.now();
  const stopAt = started + durationMs;
  let lastEnd = started;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < stopAt) {
        const one = await timedFloor(b, `lane-${next++}`, floor);
        if (one === Infinity) return;
        latencies.push(one);
        lastEnd = performance.now();
      }
    }),
  );
  const wallMs = lastEnd - started;
  return { perS: (latencies.length / wallMs) * 1000, ms: latency(latencies) };
}

/** Ends what is still open, checks nothing was lost or duplicated, and counts the measured plans executed. */
async function settle(b: Bench) {
  await endOpen(b, { cancelFirst: false, waitMs: 0 });
  const integrity = await checkIntegrity(b.redis, b.keys, b.plans, b.baseline);
  const measured = b.plans.slice(WARM_UP_RUNS);
  return { integrity, measured, executed: measured.filter((plan) => plan.outcome === 'executed').length };
}

/** `--duration`: as many plans as `concurrency` lanes start over the duration, on `symbols` symbols. */
async function sustained(b: Bench, options: BenchOptions, durationMs: number, symbolCount: number): Promise<Measured> {
  const symbols = symbolsOf(symbolCount);
  await setPositions(b.redis, b.keys, symbols, { exchange: '0', ledger: '0' }, b.baseline);
  b.out.line(
    `bench: the empty workflow, then the chain's shape (no-op activities), ${options.concurrency} at a time for ` +
      `${Math.min(FLOOR_SUSTAINED_MS, durationMs) / 1000} s each; then plans ${options.concurrency} at a time over ${symbolCount} symbols ` +
      `for ${durationMs / 1000} s (then at most ${DRAIN_BOUND_MS / 1000} s for those in flight); ` +
      `${WARM_UP_RUNS} warm-up plans first`,
  );
  // What the server and the SDK give at this concurrency with nothing in the workflows: the ceiling the chain is under.
  const floorMs = Math.min(FLOOR_SUSTAINED_MS, durationMs);
  const emptyFloor = await floorLanes(b, options.concurrency, 'empty', floorMs);
  const shapeFloor = await floorLanes(b, options.concurrency, 'shape', floorMs);
  await serialChains(b, symbols[0]!, 'warm', WARM_UP_RUNS);
  const stopAt = performance.now() + durationMs;
  const deadline = Date.now() + durationMs + DRAIN_BOUND_MS;
  const lanes = await chainLanes(
    b,
    symbols,
    options.concurrency,
    () => performance.now() < stopAt,
    () => deadline,
  );
  const { latencies, wallMs } = lanes;
  const { integrity, measured, executed } = await settle(b);
  const lostOrDuplicated =
    measured.length -
    executed +
    integrity.apply_missing +
    integrity.apply_duplicated +
    integrity.apply_strangers +
    integrity.orders_missing +
    integrity.orders_unexpected +
    integrity.symbols_off.length;
  const plansPerS = (executed / wallMs) * 1000;
  const chainMs = latency(latencies);
  const checks = [
    check('plans/s sustained', plansPerS, '', `≥ ${TARGET.sustainedPlansPerS}`, plansPerS >= TARGET.sustainedPlansPerS),
    atMost('latency p99', chainMs.p99, TARGET.sustainedP99Ms, ' ms'),
    atMost('plans lost or duplicated (any kind)', lostOrDuplicated, 0, ''),
    // Not targets: the same lanes with nothing in the workflows.
    check('empty workflows/s, same lanes', round(emptyFloor.perS), '', 'for reference', null),
    check(`the chain's no-op shape/s, same lanes`, round(shapeFloor.perS), '', 'for reference', null),
  ];
  const floorLine = (name: string, f: typeof emptyFloor) =>
    `${name}${f.perS.toFixed(1)}/s  p50 ${ms(f.ms.p50)}  p99 ${ms(f.ms.p99)}  (${floorMs / 1000} s, same lanes)`;
  const text = [
    floorLine('empty workflow  ', emptyFloor),
    floorLine(`chain's shape   ${CHAIN_SHAPE.locals}L+${CHAIN_SHAPE.regulars}R no-op  `, shapeFloor),
    `sustained       ${measured.length} plans started in ${durationMs / 1000} s, ${executed} executed, ` +
      `${options.concurrency} at a time, ${symbolCount} symbols, ${Math.round(wallMs)} ms to the last result`,
    `                p50 ${ms(chainMs.p50)}  p95 ${ms(chainMs.p95)}  p99 ${ms(chainMs.p99)}  max ${ms(chainMs.max)}`,
    `                ${plansPerS.toFixed(1)} plans/s`,
    `integrity       ${integrityLine(integrity)}`,
    'targets',
    ...checks.map(checkLine),
  ];
  const report: BenchReport = {
    mode: 'sustained',
    ...where(b),
    ok: integrity.ok && executed === measured.length,
    duration_ms: durationMs,
    concurrency: options.concurrency,
    symbols: symbolCount,
    started: measured.length,
    executed,
    wall_ms: Math.round(wallMs),
    plans_per_s: round(plansPerS),
    latency_ms: chainMs,
    empty_workflow: { per_s: round(emptyFloor.perS), latency_ms: emptyFloor.ms },
    chain_shape: { ...CHAIN_SHAPE, per_s: round(shapeFloor.perS), latency_ms: shapeFloor.ms },
    integrity,
    checks,
  };
  return { text, report };
}

/**
 * `--burst`: for each size N, N plans on one symbol started at once; the drain time (first start to last result)
 * against N × the serial chain's p50 (measured first, same run) + 5 s, and each size against the one before it.
 */
async function bursts(b: Bench, sizes: readonly number[]): Promise<Measured> {
  const serialSymbol = 'BENCHSERIALUSDT';
  const burstSymbols = sizes.map((_, k) => `BENCHBURST${k}USDT`);
  await setPositions(b.redis, b.keys, [serialSymbol, ...burstSymbols], { exchange: '0', ledger: '0' }, b.baseline);
  b.out.line(
    `bench: ${BURST_SERIAL_PLANS} serial plans (after ${WARM_UP_RUNS} warm-up), then bursts of ${sizes.join(', ')}`,
  );
  await serialChains(b, serialSymbol, 'warm', WARM_UP_RUNS);
  const serial = latency(await serialChains(b, serialSymbol, 'serial', BURST_SERIAL_PLANS));
  const serialP50 = serial.p50 ?? Infinity;
  const results: {
    size: number;
    target_ms: number;
    drain_ms: number | null;
    executed: number;
    latency_ms: ReturnType<typeof latency>;
  }[] = [];
  for (const [k, size] of sizes.entries()) {
    const symbol = burstSymbols[k]!;
    const targetMs = size * serialP50 + TARGET.burstSlackMs;
    // Ten times the target, and never less than the drain bound: a slow chain is reported, not waited for forever.
    const deadline = Date.now() + Math.max(DRAIN_BOUND_MS, 10 * targetMs);
    b.out.line(`bench: burst of ${size} on ${symbol} (target ${Math.round(targetMs)} ms)`);
    const plans = Array.from({ length: size }, (_, i) => benchPlan(b, symbol, `burst${size}-${i}`));
    const t0 = performance.now();
    const runs = await Promise.all(plans.map((plan) => timedChain(b, plan, deadline)));
    const executed = runs.filter((run) => run.outcome === 'executed').length;
    const drain = runs.every((run) => run.outcome !== 'unfinished') ? performance.now() - t0 : null;
    results.push({
      size,
      target_ms: round(targetMs) ?? Infinity,
      drain_ms: round(drain ?? NaN),
      executed,
      latency_ms: latency(runs.map((r) => r.ms)),
    });
  }
  await endOpen(b, { cancelFirst: false, waitMs: 0 });
  const integrity = await checkIntegrity(b.redis, b.keys, b.plans, b.baseline);
  const checks = results.map((r) => atMost(`burst ${r.size}: drain time`, r.drain_ms, Math.round(r.target_ms), ' ms'));
  for (let k = 1; k < results.length; k++) {
    const [before, now] = [results[k - 1]!, results[k]!];
    const ratio = before.drain_ms && now.drain_ms ? now.drain_ms / before.drain_ms : null;
    const limit = TARGET.burstLinearity * (now.size / before.size);
    checks.push(atMost(`burst ${now.size} / burst ${before.size} (linear)`, ratio, Math.round(limit * 100) / 100, '×'));
  }
  const text = [
    `serial chain    ${BURST_SERIAL_PLANS} plans  p50 ${ms(serial.p50)}  p99 ${ms(serial.p99)}`,
    ...results.map(
      (r) =>
        `burst ${String(r.size).padEnd(9)} ${r.executed}/${r.size} executed, drain ${r.drain_ms === null ? 'unfinished' : `${r.drain_ms} ms`}` +
        `  (plan p50 ${ms(r.latency_ms.p50)}, max ${ms(r.latency_ms.max)})`,
    ),
    `integrity       ${integrityLine(integrity)}`,
    'targets',
    ...checks.map(checkLine),
  ];
  const executed = b.plans.filter((plan) => plan.outcome === 'executed').length;
  const report: BenchReport = {
    mode: 'burst',
    ...where(b),
    ok: integrity.ok && executed === b.plans.length,
    serial_ms: { runs: BURST_SERIAL_PLANS, p50: serial.p50, p99: serial.p99 },
    bursts: results,
    integrity,
    checks,
  };
  return { text, report };
}

/** Plans blocked alone on a symbol each, on which `--parked` times the ledger fix. */
const FIX_PROBES = 5;

const msOrOver = (ms: number | null, timeoutMs: number) => (ms === null ? `> ${timeoutMs} ms` : `${ms} ms`);

/** How many of the bench's plans visibility lists as running and blocked. */
async function countBlocked(b: Bench): Promise<number> {
  const query = `TaskQueue = "${b.config.taskQueue}" AND ChainStage = "blocked" AND ExecutionStatus = "Running"`;
  return (await b.client.workflow.count(query)).count;
}

/** The Temporal server's pid: given, or the process listening on its port (the bench runs on loopback only). */
function serverPid(b: Bench, given: number | undefined): number | undefined {
  return given ?? listeningPid(Number(b.config.temporalAddress.split(':')[1]));
}

/** Average CPU of one core, in %, between two samples. */
const cpuPercent = (first: ProcessSample, last: ProcessSample) =>
  ((last.cpuMs - first.cpuMs) / (last.at - first.at)) * 100;

/**
 * `--parked`: N plans blocked by a ledger mismatch on their symbols, at rest for the window while the worker's and
 * the server's CPU and memory are sampled; then the ledger fix (a plain HSET of ledger_amount) on one symbol, and
 * the time until its plans are executed. The rest are cancelled.
 */
async function parked(
  b: Bench,
  options: BenchOptions,
  count: number,
  symbolCount: number,
  worker: ManagedProcess,
): Promise<Measured> {
  const workerPid = worker.pid;
  if (workerPid === undefined) throw new Error('bench: the worker process is not running');
  const sampleWorker = () => sampleProcess(workerPid);
  const symbols = symbolsOf(symbolCount);
  await setPositions(b.redis, b.keys, symbols, { exchange: PARKED_EXCHANGE, ledger: '0' }, b.baseline);
  const pid = serverPid(b, options.serverPid);
  b.out.line(
    `bench: ${count} plans over ${symbolCount} symbols whose ledger disagrees with the exchange; blocked plans ` +
      `re-check every ${b.config.recheckIntervalS} s (RECHECK_INTERVAL_S); server ` +
      (pid ? `pid ${pid} (${processName(pid)})` : 'not found on this machine (--server-pid)'),
  );

  const started = performance.now();
  const handles: { record: BenchPlan; handle: WorkflowHandle }[] = [];
  await inLanes(count, Math.max(RPC_LANES, options.concurrency), async (i) => {
    handles.push(await startChain(b, benchPlan(b, symbols[i % symbolCount]!, `parked-${i}`)));
  });
  // The desk's incident among them: one plan blocked on a symbol of its own, for the fix to be timed on.
  const probeSymbols = Array.from({ length: FIX_PROBES }, (_, i) => `BENCHLONE${i}USDT`);
  await setPositions(b.redis, b.keys, probeSymbols, { exchange: PARKED_EXCHANGE, ledger: '0' }, b.baseline);
  const probes = await Promise.all(probeSymbols.map((symbol) => startChain(b, benchPlan(b, symbol, `lone-${symbol}`))));
  // Long enough for the target and for a slow chain to show how slow: 3 ms a plan over the target, 2 min at least.
  const blockedBy = Date.now() + Math.max(2 * TARGET.allBlockedMs, TARGET.allBlockedMs + 3 * count);
  let blocked = 0;
  let allBlockedMs: number | null = null;
  while (Date.now() < blockedBy) {
    blocked = await countBlocked(b);
    if (blocked >= count + FIX_PROBES) {
      blocked -= FIX_PROBES;
      allBlockedMs = performance.now() - started;
      break;
    }
    await sleep(BLOCKED_POLL_MS);
  }
  b.out.line(
    `bench: ${blocked}/${count} blocked${allBlockedMs === null ? ' when the wait ran out' : ` after ${Math.round(allBlockedMs)} ms`}; ` +
      `sampling CPU and memory for ${options.window / 1000} s`,
  );

  const workerSamples: ProcessSample[] = [];
  const firstWorker = sampleWorker();
  if (firstWorker) workerSamples.push(firstWorker);
  const server: ProcessSample[] = [];
  const first = pid ? sampleProcess(pid) : undefined;
  if (first) server.push(first);
  const windowEnd = performance.now() + options.window;
  while (performance.now() < windowEnd) {
    await sleep(Math.min(SAMPLE_EVERY_MS, windowEnd - performance.now()));
    const one = sampleWorker();
    if (one) workerSamples.push(one);
    const sample = pid ? sampleProcess(pid) : undefined;
    if (sample) server.push(sample);
  }
  if (workerSamples.length < 2) throw new Error(`bench: the worker process (pid ${workerPid}) ended while at rest`);
  const workerCpu = cpuPercent(workerSamples[0]!, workerSamples[workerSamples.length - 1]!);
  const serverCpu = server.length > 1 ? cpuPercent(server[0]!, server[server.length - 1]!) : null;
  const rss = workerSamples.map((s) => s.rssBytes);
  const [rssFirst, rssLast] = [rss[0]!, rss[rss.length - 1]!];
  const rssMax = Math.max(...rss);
  const rssDrift = Math.max(...rss.map((r) => Math.abs(r - rssFirst))) / rssFirst;

  // The ledger fix: the ledger set by hand to the exchange's amount, and nothing else (no retry, no reconcile). First
  // as in the desk's incident, one plan blocked on its symbol (each probe in turn, among all the parked plans), then
  // on a symbol where a hundred plans wait, which then run one at a time.
  const probeRuns: number[] = [];
  for (const probe of probes) {
    await b.redis.hset(b.keys.position(probe.record.symbol), 'ledger_amount', PARKED_EXCHANGE);
    b.baseline.set(probe.record.symbol, { exchange: PARKED_EXCHANGE, ledger: PARKED_EXCHANGE });
    const fixedAt = performance.now();
    const outcome = await awaitOutcome(b, probe.record, probe.handle, Date.now() + options.fixTimeout);
    probeRuns.push(outcome === 'executed' ? performance.now() - fixedAt : Infinity);
  }
  const fixMs = latency(probeRuns);
  const fixExecuted = probeRuns.filter(Number.isFinite).length;

  const fixSymbol = symbols[0]!;
  const fixed = handles.filter(({ record }) => record.symbol === fixSymbol);
  b.out.line(
    `bench: HSET ${b.keys.position(fixSymbol)} ledger_amount ${PARKED_EXCHANGE}; waiting for its ${fixed.length} plans`,
  );
  await b.redis.hset(b.keys.position(fixSymbol), 'ledger_amount', PARKED_EXCHANGE);
  b.baseline.set(fixSymbol, { exchange: PARKED_EXCHANGE, ledger: PARKED_EXCHANGE });
  const crowdFixedAt = performance.now();
  const fixDeadline = Date.now() + options.fixTimeout;
  const crowdRuns = await Promise.all(
    fixed.map(async ({ record, handle }) => {
      const outcome = await awaitOutcome(b, record, handle, fixDeadline);
      return outcome === 'executed' ? performance.now() - crowdFixedAt : Infinity;
    }),
  );
  const crowdMs = latency(crowdRuns);
  const crowdExecuted = crowdRuns.filter(Number.isFinite).length;

  b.out.line(`bench: cancelling the other ${b.open.size} plans`);
  const cancelWaitMs = Math.max(30_000, 30 * b.open.size);
  const terminated = await endOpen(b, { cancelFirst: true, waitMs: cancelWaitMs });
  const integrity = await checkIntegrity(b.redis, b.keys, b.plans, b.baseline);
  const outcomes: Record<string, number> = {};
  for (const plan of b.plans) outcomes[plan.outcome ?? 'none'] = (outcomes[plan.outcome ?? 'none'] ?? 0) + 1;

  const sum = serverCpu === null ? null : workerCpu + serverCpu;
  const checks = [
    atMost(`all ${count} blocked`, allBlockedMs, TARGET.allBlockedMs, ' ms'),
    check(
      'worker + server CPU, % of one core',
      sum ?? workerCpu,
      ' %',
      `≤ ${TARGET.parkedCpuPercent} %`,
      sum === null ? null : sum <= TARGET.parkedCpuPercent,
    ),
    atMost('worker RSS drift from first sample', rssDrift * 100, TARGET.parkedRssDrift * 100, ' %'),
    atMost('worker RSS max', mib(rssMax), TARGET.parkedRssMiB, ' MiB'),
    atMost(`fix → executed p50 (${probes.length} lone plans)`, fixMs.p50, TARGET.fixToExecutedP50Ms, ' ms'),
  ];
  const pct = (v: number | null) => (v === null ? '—' : `${v.toFixed(1)} %`);
  const text = [
    `parked          ${count} plans, ${symbolCount} symbols: ${blocked} blocked ` +
      (allBlockedMs === null ? 'when the wait ran out' : `after ${Math.round(allBlockedMs)} ms`),
    `at rest         ${Math.round((workerSamples[workerSamples.length - 1]!.at - workerSamples[0]!.at) / 1000)} s, a sample every ${SAMPLE_EVERY_MS / 1000} s: ` +
      `CPU worker (pid ${workerPid}) ${pct(workerCpu)}, server ${pct(serverCpu)}` +
      (pid ? ` (pid ${pid} ${processName(pid)})` : ' (server not found: --server-pid)') +
      `, sum ${pct(sum)} of one core` +
      (blocked < count ? ` (not at rest: ${count - blocked} plans were not blocked yet)` : ''),
    `                worker RSS first ${mib(rssFirst)} MiB, last ${mib(rssLast)} MiB, max ${mib(rssMax)} MiB` +
      (server.length > 0
        ? `; server RSS ${mib(server[0]!.rssBytes)} → ${mib(server[server.length - 1]!.rssBytes)} MiB`
        : ''),
    `ledger fix      ${fixExecuted}/${probes.length} lone plans (one a symbol) executed within ` +
      `${options.fixTimeout / 1000} s of their fix: p50 ${msOrOver(fixMs.p50, options.fixTimeout)}, ` +
      `max ${msOrOver(fixMs.max, options.fixTimeout)}`,
    `crowded fix     ${crowdExecuted}/${fixed.length} plans of ${fixSymbol} executed, one at a time: ` +
      `p50 ${msOrOver(crowdMs.p50, options.fixTimeout)}, last ${msOrOver(crowdMs.max, options.fixTimeout)}`,
    `ended           ${Object.entries(outcomes)
      .map(([outcome, n]) => `${n} ${outcome}`)
      .join(', ')}`,
    `integrity       ${integrityLine(integrity)}`,
    'targets',
    ...checks.map(checkLine),
  ];
  const report: BenchReport = {
    mode: 'parked',
    ...where(b),
    ok: integrity.ok,
    parked: count,
    symbols: symbolCount,
    recheck_interval_s: b.config.recheckIntervalS,
    blocked,
    all_blocked_ms: round(allBlockedMs ?? NaN),
    window_ms: options.window,
    server_pid: pid ?? null,
    worker_pid: workerPid,
    cpu_percent: { worker: round(workerCpu), server: round(serverCpu ?? NaN), sum: round(sum ?? NaN) },
    worker_rss_mib: {
      first: mib(rssFirst),
      last: mib(rssLast),
      max: mib(rssMax),
      drift_percent: round(rssDrift * 100),
    },
    server_rss_mib:
      server.length > 0 ? { first: mib(server[0]!.rssBytes), last: mib(server[server.length - 1]!.rssBytes) } : null,
    fix: { plans: probes.length, executed: fixExecuted, timeout_ms: options.fixTimeout, ms: fixMs },
    crowded_fix: { symbol: fixSymbol, plans: fixed.length, executed: crowdExecuted, ms: crowdMs },
    outcomes,
    terminated,
    integrity,
    checks,
  };
  return { text, report };
}

const isLoopback = (host: string) => /^(127\.\d+\.\d+\.\d+|localhost|::1|\[::1\])$/.test(host);

/**
 * The servers of the configuration that are not on this machine's loopback. The bench runs only where they all
 * are: it starts thousands of plans and measures the server's process, which is not for a shared cluster.
 */
export function remoteServers(config: Pick<ChainConfig, 'redisUrl' | 'temporalAddress'>): string[] {
  const remote: string[] = [];
  if (!isLoopback(new URL(config.redisUrl).hostname)) remote.push(`REDIS_URL ${config.redisUrl}`);
  if (!isLoopback(config.temporalAddress.split(':')[0] ?? ''))
    remote.push(`TEMPORAL_ADDRESS ${config.temporalAddress}`);
  return remote;
}

/**
 * The benchmark, against the reachable Redis and Temporal server, with a worker of its own (testnet: the Governor
 * approves by itself) on its own task queue and key prefix so that it touches nothing else; its plans are ended and
 * its keys removed when it is done. Modes: side by side (default), `duration`, `burst`, `parked`.
 */
export async function runBench(base: ChainConfig, out: Output, options: BenchOptions): Promise<BenchReport> {
  const remote = remoteServers(base);
  if (remote.length > 0) throw new Error(`bench: runs on loopback servers only, not ${remote.join(' or ')}`);
  Runtime.install({ logger: new DefaultLogger('WARN') });
  const run = randomBytes(3).toString('hex');
  const config: ChainConfig = {
    ...base,
    tradingMode: 'testnet',
    taskQueue: `permit-chain-bench-${run}`,
    keyPrefix: `bench-${run}`,
  };
  const redis = await connectRedis(config);
  try {
    const client = await connectTemporal(config);
    try {
      const connection = await connectWorkerTemporal(config);
      try {
        const keys = redisKeys(config.keyPrefix);
        const b: Bench = { run, config, keys, redis, client, out, open: new Map(), plans: [], baseline: new Map() };
        return await measure(b, connection, options);
      } finally {
        await connection.close();
      }
    } finally {
      await client.connection.close();
    }
  } finally {
    redis.disconnect();
  }
}

/**
 * `--parked` measures a worker at rest: `permit-chain worker` in a process of its own, as deployed (with its position
 * watcher), on the bench's task queue and keys, so that its CPU and memory are the worker's alone, not the bench's
 * client's, which started the plans. Stopped (SIGTERM, as a supervisor would) when the mode is done.
 */
async function withWorkerProcess<T>(b: Bench, mode: (worker: ManagedProcess) => Promise<T>): Promise<T> {
  const logDir = mkdtempSync(join(tmpdir(), 'permit-chain-bench-'));
  const group = new ProcessGroup(logDir);
  const { config } = b;
  const { cli, how } = workerCli();
  b.out.line(`bench: the worker process runs ${how}`);
  try {
    const env = {
      REDIS_URL: config.redisUrl,
      TEMPORAL_ADDRESS: config.temporalAddress,
      TEMPORAL_NAMESPACE: config.temporalNamespace,
      TASK_QUEUE: config.taskQueue,
      KEY_PREFIX: config.keyPrefix,
      TRADING_MODE: 'testnet',
      RECHECK_INTERVAL_S: String(config.recheckIntervalS),
      WORKFLOW_CACHE_SIZE: String(config.workflowCacheSize),
      METRICS_PORT: '0',
    };
    const worker = await group.start(workerSpec('bench-worker', env, cli));
    return await mode(worker);
  } finally {
    await group.stopAll();
    rmSync(logDir, { recursive: true, force: true });
  }
}

/**
 * The CLI the worker process runs: compiled (the JavaScript and the prebuilt workflow bundle, as deployed) when
 * `npm run build` made a dist/ from these sources; else the sources, whose worker also holds
 * tsx's and webpack's memory from its start (docs/benchmark.md, worker start).
 */
function workerCli(): { cli: string; how: string } {
  const root = resolve(__dirname, '..');
  const dist = join(root, 'dist');
  try {
    prebuiltWorkflowCode(dist, root);
    return { cli: join(dist, 'cli', 'cli.js'), how: 'compiled, from dist/ (npm run build)' };
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    return { cli: CLI, how: `from the sources, with webpack at its start (${why})` };
  }
}

/** Runs the mode with the bench's worker, prints its figures, and leaves nothing behind: plans ended, keys gone. */
async function measure(b: Bench, connection: NativeConnection, options: BenchOptions): Promise<BenchReport> {
  const { config, out } = b;
  let peakRss = process.memoryUsage().rss;
  // Not while plans are parked: there the bench's own CPU is the figure.
  const sampler =
    options.parked === undefined
      ? setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 100)
      : undefined;
  try {
    out.line(
      `bench: run ${b.run} on Temporal ${config.temporalAddress} and Redis ${config.redisUrl}; its own worker ` +
        `(testnet${options.parked !== undefined ? ', a process of its own' : ''}) on task queue ${config.taskQueue}, ` +
        `keys ${config.keyPrefix}:* (removed when done)`,
    );
    if (options.parked !== undefined) {
      const { parked: count } = options;
      const { text, report } = await withWorkerProcess(b, (worker) =>
        parked(b, options, count, options.symbols ?? 20, worker),
      );
      out.result(text.join('\n'), report);
      return report;
    }
    const worker = await createChainWorker({
      config,
      redis: b.redis,
      connection,
      approverKeys: new Map(),
      workflowsPath: BENCH_WORKFLOWS_PATH,
      extraActivities: { benchNoop: () => Promise.resolve() },
    });
    // As in every worker process: blocked plans rest until their positions change.
    const watcher = new PositionWatcher({
      subscriber: await connectRedis(config),
      redis: b.redis,
      client: b.client,
      config,
      exchange: exchangeFor(config, b.redis),
      log: (line) => out.line(line),
    });
    await watcher.start();
    const { text, report } = await worker
      .runUntil(async (): Promise<Measured> => {
        if (options.duration !== undefined) return sustained(b, options, options.duration, options.symbols ?? 10);
        if (options.burst !== undefined) return bursts(b, options.burst);
        return sideBySide(b, options, options.symbols ?? 10);
      })
      .finally(() => watcher.stop());
    if (sampler) {
      report.peak_rss_mib = mib(peakRss);
      const at = text.indexOf('targets');
      text.splice(at < 0 ? text.length : at, 0, `peak RSS        ${mib(peakRss)} MiB (the bench's client and worker)`);
    }
    out.result(text.join('\n'), report);
    return report;
  } finally {
    clearInterval(sampler);
    await endOpen(b, { cancelFirst: false, waitMs: 0 }).catch(() => undefined);
    await removeKeys(b.redis, `${config.keyPrefix}:*`).catch((err: unknown) => {
      process.stderr.write(`bench: keys ${config.keyPrefix}:* not removed: ${String(err)}\n`);
    });
  }
}
