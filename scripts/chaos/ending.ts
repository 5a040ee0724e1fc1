/**
 * The chaos run's end: the drain (every plan ended, the intake read to the end), then what Temporal, Redis and the
 * exchange hold, checked as an operator would (chaos-check.ts).
 */
import type { Client } from '@temporalio/client';
import type { Redis } from 'ioredis';
import { binanceClientOrderId } from '../../activities/exchange/binance-wire';
import { PERMIT_CHAIN_WORKFLOW, planWorkflowId } from '../../contract/messages';
import type { ChainOutcome, ChainStatus } from '../../contract/types';
import { inLanes, intakeGroupState, streamPlanIds } from '../stack/invariants';
import { chaosViolations, type ExchangeOrderRecord, type FedPlan, type Violation } from './chaos-check';
import { ALL_SYMBOLS, START_AMOUNT, type ChaosServers } from './chaos-stack';
import { MALFORMED_REASON } from './feed';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Waits until no plan's workflow runs, every plan has one, and the intake has nothing pending or unread, or until
 * `drainUntil`; returns how many plans are still open.
 */
export async function drain(
  temporal: Client,
  db: Redis,
  servers: ChaosServers,
  fed: number,
  drainUntil: number,
): Promise<number> {
  let open = fed;
  while (Date.now() < drainUntil) {
    const running = await temporal.workflow
      .count(`WorkflowType = "${PERMIT_CHAIN_WORKFLOW}" AND ExecutionStatus = "Running"`)
      .catch(() => ({ count: -1 }));
    const total = await temporal.workflow
      .count(`WorkflowType = "${PERMIT_CHAIN_WORKFLOW}"`)
      .catch(() => ({ count: -1 }));
    const pending = await intakeGroupState(db, servers.keys).catch(() => ({ pending: -1, lag: null }));
    open = fed - total.count + running.count;
    if (running.count === 0 && total.count >= fed && pending.pending === 0 && pending.lag === 0) break;
    await sleep(2_000);
  }
  return open;
}

export interface ChaosEnd {
  /** How each plan ended; undefined: it has not. */
  outcomes: Map<string, ChainOutcome | undefined>;
  orders: ExchangeOrderRecord[];
  /** Dead-lettered entries' original ids. */
  deadLettered: string[];
  violations: Violation[];
}

/** What the run left, read from Temporal, Redis and the exchange, and what is wrong with it. */
export async function readEnding(
  temporal: Client,
  db: Redis,
  servers: ChaosServers,
  planList: FedPlan[],
): Promise<ChaosEnd> {
  const { keys, double } = servers;
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
    const book = (await double.call('GET', 'orders')) as Omit<ExchangeOrderRecord, 'planId'>[];
    for (const order of book) orders.push({ ...order, planId: clientIds.get(order.clientOrderId) });
    const held = (await double.call('GET', 'positions')) as { symbol: string; positionAmt: string }[];
    for (const symbol of ALL_SYMBOLS) {
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
    for (const symbol of ALL_SYMBOLS) {
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
  return { outcomes, orders, deadLettered, violations };
}
