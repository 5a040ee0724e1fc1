/** What every mode shares: the plans it starts, how it waits for their end, and how it ends what is left. */
import type { Client, WorkflowHandle } from '@temporalio/client';
import type { Redis } from 'ioredis';
import { startPlan } from '../client/plans';
import type { RedisKeys } from '../contract/keys';
import type { ChainStatus, Plan } from '../contract/types';
import type { ChainConfig } from '../lib/config';
import { parsePlan } from '../lib/plan';
import type { Output } from '../cli/output';
import { checkIntegrity, type Baseline, type BenchPlan } from './bench-integrity';

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

/** Runs before each measured series and not counted: the first workflow of a fresh worker pays for its sandbox. */
export const WARM_UP_RUNS = 2;

/** How long past its measure the bench waits for a plan's end: one that has not ended by then counts as lost. */
export const DRAIN_BOUND_MS = 120_000;

/** RPCs (starts, cancels, terminations) the bench has in flight at once outside the measured plans. */
export const RPC_LANES = 20;

export const TIMED_OUT = Symbol('timed out');

/** The promise's value, or TIMED_OUT at the deadline (ms since epoch). */
export async function byDeadline<T>(promise: Promise<T>, deadline: number): Promise<T | typeof TIMED_OUT> {
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

export const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms));

/** Runs `task` for 0..count-1, `lanes` at a time. */
export async function inLanes(count: number, lanes: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const lane = async () => {
    while (next < count) await task(next++);
  };
  await Promise.all(Array.from({ length: Math.min(lanes, count) }, lane));
}

/** What every mode works with: the bench's own config, connections, and what it started. */
export interface Bench {
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
export function where(b: Bench) {
  return { run: b.run, task_queue: b.config.taskQueue, key_prefix: b.config.keyPrefix };
}

export function benchPlan(b: Bench, symbol: string, tag: string): Plan {
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

export async function setPositions(
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
export async function startChain(b: Bench, plan: Plan): Promise<{ record: BenchPlan; handle: WorkflowHandle }> {
  const record: BenchPlan = { planId: plan.plan_id, symbol: plan.symbol };
  b.plans.push(record);
  const { handle } = await startPlan(b.client, b.config, plan);
  b.open.set(handle.workflowId, { handle, record });
  return { record, handle };
}

/** Waits for a plan's outcome until the deadline; 'unfinished' when it has none by then. */
export async function awaitOutcome(
  b: Bench,
  record: BenchPlan,
  handle: WorkflowHandle,
  deadline: number,
): Promise<string> {
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
export async function timedChain(b: Bench, plan: Plan, deadline: number): Promise<{ ms: number; outcome: string }> {
  const t0 = performance.now();
  const { record, handle } = await startChain(b, plan);
  const outcome = await awaitOutcome(b, record, handle, deadline);
  return { ms: outcome === 'unfinished' ? Infinity : performance.now() - t0, outcome };
}

/** `count` plans one after another on `symbol`; their latencies. */
export async function serialChains(b: Bench, symbol: string, tag: string, count: number): Promise<number[]> {
  const latencies: number[] = [];
  for (let i = 0; i < count; i++) {
    const { ms } = await timedChain(b, benchPlan(b, symbol, `${tag}-${i}`), Date.now() + DRAIN_BOUND_MS);
    latencies.push(ms);
    if (ms === Infinity) break;
  }
  return latencies;
}

/** Ends what the bench started and has not seen end: a Temporal cancel first when asked, then termination. */
export async function endOpen(b: Bench, options: { cancelFirst: boolean; waitMs: number }): Promise<number> {
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
export async function removeKeys(redis: Redis, pattern: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, found] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    if (found.length > 0) await redis.del(...found);
    cursor = next;
  } while (cursor !== '0');
}

export function symbolsOf(count: number, tag = ''): string[] {
  return Array.from({ length: count }, (_, i) => `BENCH${tag}${i}USDT`);
}

/**
 * Plans through the chain in `concurrency` lanes over `symbols`, one after another in each lane while `more(i)`;
 * each waits for its result until `deadline()`. Returns the latencies and the time to the last result.
 */
export async function chainLanes(
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

/** Ends what is still open, checks nothing was lost or duplicated, and counts the measured plans executed. */
export async function settle(b: Bench) {
  await endOpen(b, { cancelFirst: false, waitMs: 0 });
  const integrity = await checkIntegrity(b.redis, b.keys, b.plans, b.baseline);
  const measured = b.plans.slice(WARM_UP_RUNS);
  return { integrity, measured, executed: measured.filter((plan) => plan.outcome === 'executed').length };
}
