import type { Redis } from 'ioredis';
import type { RedisKeys } from '../contract/keys';
import { checkOrderAnswer } from './exchange/answer';
import { isFinalStatus, type ExchangePort } from './exchange/port';
import type { FillsEntry, SendClaim } from './ledger/fills';

/**
 * An order the exchange has under a claimed send of the chain, with no execution record: its plan's worker died
 * mid-Execute, or the plan was terminated. `final`: its fill can be accounted for; `open`: not final yet (a reconcile
 * waits); `refused`: its answer does not match the claimed send (accounted for without believing it).
 */
export interface UnrecordedOrder {
  plan_id: string;
  order_id: string;
  client_order_id: string;
  side: string;
  requested_qty: string;
  status: string;
  filled_qty: string;
  avg_price: string;
  state: 'final' | 'open' | 'refused';
  problems?: string;
}

function readClaim(json: string): SendClaim | null {
  try {
    const claim = JSON.parse(json) as SendClaim;
    return typeof claim.plan_id === 'string' && typeof claim.qty === 'string' ? claim : null;
  } catch {
    return null;
  }
}

/**
 * The orders the exchange has under the symbol's claimed sends (`quantum:execute:claims:{symbol}`) that no execution
 * record names, each looked up by its client order id. Reads only. `stale`: claims older than `staleAfterMs` whose
 * order the exchange does not have (nothing can still go out under them).
 */
export async function findUnrecordedOrders(
  deps: { redis: Redis; keys: RedisKeys; exchange: ExchangePort; clock: () => number; staleAfterMs: number },
  symbol: string,
): Promise<{ orders: UnrecordedOrder[]; stale: string[] }> {
  const { redis, keys, exchange, clock, staleAfterMs } = deps;
  const orders: UnrecordedOrder[] = [];
  const stale: string[] = [];
  for (const [planId, json] of Object.entries(await redis.hgetall(keys.executeClaims(symbol)))) {
    const claim = readClaim(json);
    if (!claim || (await redis.exists(keys.execution(planId))) === 1) continue;
    const order = await exchange.findOrder(symbol, planId);
    if (!order) {
      if (clock() - claim.claimed_at > staleAfterMs) stale.push(planId);
      continue;
    }
    const check = checkOrderAnswer(
      { symbol, side: claim.side === 'BUY' ? 'BUY' : 'SELL', qty: claim.qty, clientOrderId: claim.client_order_id },
      order,
    );
    orders.push({
      plan_id: planId,
      order_id: order.order_id,
      client_order_id: order.client_order_id,
      side: order.side,
      requested_qty: claim.qty,
      status: order.status,
      filled_qty: order.filled_qty,
      avg_price: order.avg_price,
      state: !check.ok ? 'refused' : isFinalStatus(order.status) ? 'final' : 'open',
      ...(check.ok ? {} : { problems: check.problems.join('; ') }),
    });
  }
  return { orders: orders.sort((a, b) => a.plan_id.localeCompare(b.plan_id)), stale };
}

/** The fills-record entry a reconcile writes for an order found with no execution record (a refused one: no fill). */
export function unrecordedEntry(order: UnrecordedOrder, now: number): FillsEntry {
  const base: FillsEntry = {
    plan_id: order.plan_id,
    client_order_id: order.client_order_id,
    order_id: order.order_id,
    side: order.side,
    requested_qty: order.requested_qty,
    recorded_at: String(now),
  };
  if (order.state === 'refused') return { ...base, problems: order.problems ?? '' };
  return {
    ...base,
    filled_qty: order.filled_qty,
    avg_price: order.avg_price,
    status: order.status,
    executed_at: String(now),
  };
}

/** One line per order, as `position` and `reconcile` name them. */
export function describeUnrecorded(order: UnrecordedOrder): string {
  const what = `order ${order.order_id} of plan ${order.plan_id}: ${order.status} ${order.filled_qty} of ${order.requested_qty} ${order.side}`;
  if (order.state === 'open') return `${what}, not final yet`;
  if (order.state === 'refused') return `${what}, its answer does not match the send: ${order.problems ?? ''}`;
  return `${what}, no execution record`;
}
