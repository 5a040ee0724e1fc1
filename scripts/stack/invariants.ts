/**
 * "Nothing lost, nothing duplicated", checked as an operator would check it, after a run of many plans through
 * separate processes: read a snapshot of what Temporal and Redis hold (`readSnapshot`), then compare it with what
 * the plans were designed to do (`findViolations`, pure: a unit test feeds it broken snapshots).
 */
import type { Client } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import type { Redis } from 'ioredis';
import type { RedisKeys } from '../../contract/keys';
import { PERMIT_CHAIN_WORKFLOW, planWorkflowId } from '../../contract/messages';
import type { ChainOutcome, ChainStatus } from '../../contract/types';
import { Dec, formatDec } from '../../lib/decimal';
import { INTAKE_GROUP } from '../../workers/intake';
import { countBy, decimal } from '../chaos/chaos-check';

/**
 * A plan and how it was designed to end. `executed`: one Apply entry and one filled order. `denied` (by the
 * Governor): no Apply entry and no order. Any other outcome: at most one Apply entry and no order.
 */
export interface ExpectedPlan {
  planId: string;
  symbol: string;
  outcome: ChainOutcome;
}

/** A paper exchange order, as `quantum:exchange:paper:order:{client_order_id}` holds it. */
export interface OrderRecord {
  client_order_id: string;
  symbol: string;
  side: string;
  status: string;
  filled_qty: string;
}

/** A symbol's two amounts (raw strings, as stored; null: absent). */
export interface Positions {
  exchange: string | null;
  ledger: string | null;
}

export interface ChainSnapshot {
  /** How each plan's workflow ended (its result's outcome); absent or undefined: not ended. */
  outcomes: ReadonlyMap<string, ChainOutcome | undefined>;
  /** Workflows of the chain's type in the namespace (runs that continued as new aside): one per plan, no more. */
  workflows: number;
  /** The plan id of each entry of the Apply stream, in order. */
  applyEntries: readonly string[];
  /** Every order the paper exchange holds. */
  orders: readonly OrderRecord[];
  positions: ReadonlyMap<string, Positions>;
  /** The intake's consumer group on the exit.plan stream, and the dead-letter stream. */
  intake: { pending: number; lag: number | null; deadLettered: number };
}

/**
 * What is wrong, one line each; empty when every plan ended as designed, each plan has the Apply entries and orders
 * its outcome allows, nobody else has any, the intake left nothing pending, and for every symbol of `baseline` the
 * exchange's position equals the ledger's and each moved from the baseline by exactly the sum of the fills (exact
 * decimals).
 */
export function findViolations(
  plans: readonly ExpectedPlan[],
  baseline: ReadonlyMap<string, Positions>,
  snapshot: ChainSnapshot,
): string[] {
  const wrong: string[] = [];
  const byId = new Map(plans.map((plan) => [plan.planId, plan]));

  for (const plan of plans) {
    const outcome = snapshot.outcomes.get(plan.planId);
    if (outcome === undefined) wrong.push(`plan ${plan.planId} has not ended`);
    else if (outcome !== plan.outcome)
      wrong.push(`plan ${plan.planId} ended ${outcome}, designed to end ${plan.outcome}`);
  }
  if (snapshot.workflows !== plans.length) {
    wrong.push(`${snapshot.workflows} ${PERMIT_CHAIN_WORKFLOW} workflows for ${plans.length} plans`);
  }

  const entries = countBy(snapshot.applyEntries, (planId) => planId);
  const orders = countBy(snapshot.orders, (order) => order.client_order_id);
  for (const [planId, n] of entries) if (!byId.has(planId)) wrong.push(`${n} Apply entries of unknown plan ${planId}`);
  for (const [planId, n] of orders) if (!byId.has(planId)) wrong.push(`${n} orders of unknown plan ${planId}`);
  for (const plan of plans) {
    const applied = entries.get(plan.planId) ?? 0;
    const ordered = orders.get(plan.planId) ?? 0;
    const wantApplied = plan.outcome === 'executed' ? [1] : plan.outcome === 'denied' ? [0] : [0, 1];
    if (!wantApplied.includes(applied)) {
      wrong.push(
        `plan ${plan.planId} (${plan.outcome}) has ${applied} Apply entries, expected ${wantApplied.join(' or ')}`,
      );
    }
    const wantOrders = plan.outcome === 'executed' ? 1 : 0;
    if (ordered !== wantOrders) {
      wrong.push(`plan ${plan.planId} (${plan.outcome}) has ${ordered} orders, expected ${wantOrders}`);
    }
  }

  const fills = new Map<string, Dec>();
  for (const order of snapshot.orders) {
    const plan = byId.get(order.client_order_id);
    if (plan?.outcome === 'executed' && order.status !== 'FILLED') {
      wrong.push(`order of plan ${order.client_order_id} is ${order.status}, not FILLED`);
    }
    if (order.status !== 'FILLED') continue;
    const qty = decimal(order.filled_qty);
    if (qty === undefined) {
      wrong.push(`order of plan ${order.client_order_id}: filled_qty ${JSON.stringify(order.filled_qty)}`);
      continue;
    }
    const sum = fills.get(order.symbol) ?? new Dec(0);
    fills.set(order.symbol, order.side === 'BUY' ? sum.add(qty) : sum.sub(qty));
  }

  for (const [symbol, base] of baseline) {
    const now = snapshot.positions.get(symbol) ?? { exchange: null, ledger: null };
    const exchange = decimal(now.exchange);
    const ledger = decimal(now.ledger);
    const baseExchange = decimal(base.exchange);
    const baseLedger = decimal(base.ledger);
    if (!exchange || !ledger || !baseExchange || !baseLedger) {
      wrong.push(`${symbol}: amounts not decimals (exchange ${now.exchange}, ledger ${now.ledger})`);
      continue;
    }
    const sum = fills.get(symbol) ?? new Dec(0);
    if (!exchange.eq(ledger)) wrong.push(`${symbol}: exchange ${formatDec(exchange)} != ledger ${formatDec(ledger)}`);
    if (!exchange.sub(baseExchange).eq(sum)) {
      wrong.push(`${symbol}: exchange moved ${formatDec(exchange.sub(baseExchange))}, fills ${formatDec(sum)}`);
    }
    if (!ledger.sub(baseLedger).eq(sum)) {
      wrong.push(`${symbol}: ledger moved ${formatDec(ledger.sub(baseLedger))}, fills ${formatDec(sum)}`);
    }
  }
  for (const symbol of fills.keys()) if (!baseline.has(symbol)) wrong.push(`fills on unexpected symbol ${symbol}`);

  const { pending, lag, deadLettered } = snapshot.intake;
  if (pending !== 0) wrong.push(`${pending} entries pending in the intake's consumer group`);
  if (lag !== 0) wrong.push(`intake group lag ${lag}: entries never read`);
  if (deadLettered !== 0) wrong.push(`${deadLettered} dead-lettered entries`);
  return wrong;
}

/** Runs `fn` over `items`, `lanes` at a time. */
export async function inLanes<T, R>(items: readonly T[], lanes: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array<R>(items.length);
  let next = 0;
  const lane = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(lanes, items.length) }, lane));
  return results;
}

/** How a plan's workflow ended: its result's outcome, or undefined while it runs (or if it did not complete). */
export async function planOutcome(client: Client, planId: string): Promise<ChainOutcome | undefined> {
  const handle = client.workflow.getHandle(planWorkflowId(planId));
  const description = await handle.describe();
  if (description.status.name !== 'COMPLETED') return undefined;
  return ((await handle.result()) as ChainStatus).outcome;
}

/** Every entry of a stream, page by page: each entry's `plan_id`. */
export async function streamPlanIds(redis: Redis, stream: string): Promise<string[]> {
  const ids: string[] = [];
  const page = 1000;
  let start = '-';
  for (;;) {
    const entries = await redis.xrange(stream, start, '+', 'COUNT', page);
    for (const [, fields] of entries) ids.push(fields[fields.indexOf('plan_id') + 1] ?? '');
    if (entries.length < page) return ids;
    start = `(${entries[entries.length - 1]?.[0] ?? '0'}`;
  }
}

/** The intake group's pending count and lag (null: Redis cannot tell). */
export async function intakeGroupState(
  redis: Redis,
  keys: RedisKeys,
): Promise<{ pending: number; lag: number | null }> {
  const groups = (await redis.xinfo('GROUPS', keys.exitPlanStream)) as unknown[][];
  for (const group of groups) {
    const fields = new Map<string, unknown>();
    for (let i = 0; i + 1 < group.length; i += 2) fields.set(String(group[i]), group[i + 1]);
    if (fields.get('name') !== INTAKE_GROUP) continue;
    const lag = fields.get('lag');
    return { pending: Number(fields.get('pending')), lag: lag === null || lag === undefined ? null : Number(lag) };
  }
  return { pending: -1, lag: null };
}

/** Reads what Temporal and Redis hold about the plans and the symbols. */
export async function readSnapshot(
  deps: { client: Client; redis: Redis; keys: RedisKeys },
  plans: readonly ExpectedPlan[],
  symbols: readonly string[],
): Promise<ChainSnapshot> {
  const { client, redis, keys } = deps;
  const outcomes = await inLanes(plans, 16, (plan) => planOutcome(client, plan.planId));
  // A plan that continued as new has a closed run per continuation: its workflow counts once, by its last run.
  const { count } = await client.workflow.count(
    `WorkflowType = "${PERMIT_CHAIN_WORKFLOW}" AND ExecutionStatus != "ContinuedAsNew"`,
  );

  const orderKeys: string[] = [];
  let cursor = '0';
  do {
    const [next, found] = await redis.scan(cursor, 'MATCH', keys.paperOrder('*'), 'COUNT', 1000);
    orderKeys.push(...found);
    cursor = next;
  } while (cursor !== '0');
  const orderPipeline = redis.pipeline();
  for (const key of orderKeys) orderPipeline.hgetall(key);
  const orders = ((await orderPipeline.exec()) ?? []).map(([, value]) => {
    const hash = (value ?? {}) as Record<string, string>;
    return {
      client_order_id: hash.client_order_id ?? '',
      symbol: hash.symbol ?? '',
      side: hash.side ?? '',
      status: hash.status ?? '',
      filled_qty: hash.filled_qty ?? '',
    };
  });

  const positionPipeline = redis.pipeline();
  for (const symbol of symbols) {
    positionPipeline.hget(keys.paperPosition(symbol), 'amount');
    positionPipeline.hget(keys.position(symbol), 'ledger_amount');
  }
  const amounts = ((await positionPipeline.exec()) ?? []).map(([, value]) => (value as string | null) ?? null);
  const positions = new Map(
    symbols.map((symbol, i) => [symbol, { exchange: amounts[2 * i] ?? null, ledger: amounts[2 * i + 1] ?? null }]),
  );

  return {
    outcomes: new Map(plans.map((plan, i) => [plan.planId, outcomes[i]])),
    workflows: count,
    applyEntries: await streamPlanIds(redis, keys.applyStream),
    orders,
    positions,
    intake: { ...(await intakeGroupState(redis, keys)), deadLettered: await redis.xlen(keys.exitPlanDeadStream) },
  };
}

const { EventType } = temporal.api.enums.v1;

/** What a process's death left in the histories: plans whose workflow task or activity was done again elsewhere. */
export interface TakeOvers {
  /** Plans with at least one of either. */
  plans: number;
  /** Workflow tasks that timed out (held by the dead worker, or waiting on its sticky queue). */
  workflowTasks: number;
  /**
   * Activities that completed on a later attempt: an attempt the dead worker had started timed out and was retried
   * (the history keeps only the last attempt, with its number).
   */
  activityRetries: number;
}

/**
 * Counts the take-overs in the plans' histories: a worker killed while it held a plan's workflow task (or the
 * plan's sticky queue, or an activity) leaves a timed-out task or a retried activity, done by another worker.
 * Evidence that a kill hit work in flight, not an idle process.
 */
export async function takeOvers(client: Client, planIds: readonly string[]): Promise<TakeOvers> {
  const counts = await inLanes(planIds, 16, async (planId) => {
    const { events } = await client.workflow.getHandle(planWorkflowId(planId)).fetchHistory();
    const all = events ?? [];
    const timedOut = all.filter((e) => e.eventType === EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT).length;
    const retried = all.filter((e) => (e.activityTaskStartedEventAttributes?.attempt ?? 1) > 1).length;
    return [timedOut, retried] as const;
  });
  return {
    plans: counts.filter(([w, a]) => w + a > 0).length,
    workflowTasks: counts.reduce((sum, [w]) => sum + w, 0),
    activityRetries: counts.reduce((sum, [, a]) => sum + a, 0),
  };
}
