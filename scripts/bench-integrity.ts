import type { Redis } from 'ioredis';
import { Dec, formatDec, parseAmount } from '../lib/decimal';
import type { RedisKeys } from '../contract/keys';

/** A plan the bench started, and how it ended ('unfinished': not within the bench's bound). */
export interface BenchPlan {
  planId: string;
  symbol: string;
  outcome?: string;
}

/** A symbol's amounts before the bench's plans moved them. */
export interface Baseline {
  exchange: string;
  ledger: string;
}

export interface IntegrityReport {
  plans: number;
  executed: number;
  /** Plans with no entry, or more than one, in the Apply stream; and entries of plans the bench did not start. */
  apply_entries: number;
  apply_missing: number;
  apply_duplicated: number;
  apply_strangers: number;
  /** Paper orders: executed plans without a filled order, and orders of plans that did not execute. */
  orders: number;
  orders_missing: number;
  orders_unexpected: number;
  /** Symbols whose exchange and ledger each moved by exactly the sum of their fills (exact decimals). */
  symbols: number;
  symbols_off: { symbol: string; exchange: string; ledger: string; fills: string }[];
  ok: boolean;
}

const PAGE = 1000;

/** Every entry of a stream, page by page: the plan id of each. */
async function streamPlanIds(redis: Redis, stream: string): Promise<string[]> {
  const ids: string[] = [];
  let start = '-';
  for (;;) {
    const page = await redis.xrange(stream, start, '+', 'COUNT', PAGE);
    for (const [, fields] of page) ids.push(fields[fields.indexOf('plan_id') + 1] ?? '');
    if (page.length < PAGE) return ids;
    start = `(${page[page.length - 1]?.[0] ?? '0'}`;
  }
}

/**
 * Nothing lost or duplicated, as an operator would check it in Redis: one Apply entry per plan, one filled paper
 * order per executed plan and none for the others, and per symbol the exchange's position and the ledger each moved
 * from the baseline by exactly the sum of the fills.
 */
export async function checkIntegrity(
  redis: Redis,
  keys: RedisKeys,
  plans: readonly BenchPlan[],
  baseline: ReadonlyMap<string, Baseline>,
): Promise<IntegrityReport> {
  const byId = new Map(plans.map((plan) => [plan.planId, plan]));
  const entries = new Map<string, number>();
  let strangers = 0;
  const applied = await streamPlanIds(redis, keys.applyStream);
  for (const planId of applied) {
    if (byId.has(planId)) entries.set(planId, (entries.get(planId) ?? 0) + 1);
    else strangers += 1;
  }

  const orderPipeline = redis.pipeline();
  for (const plan of plans) orderPipeline.hgetall(keys.paperOrder(plan.planId));
  const orders = (await orderPipeline.exec()) ?? [];
  const fills = new Map<string, Dec>();
  let placed = 0;
  let missing = 0;
  let unexpected = 0;
  plans.forEach((plan, i) => {
    const order = (orders[i]?.[1] ?? {}) as Record<string, string>;
    const filled = order.status === 'FILLED';
    if (order.client_order_id) placed += 1;
    if (plan.outcome === 'executed' && !filled) missing += 1;
    if (plan.outcome !== 'executed' && order.client_order_id) unexpected += 1;
    if (filled) {
      const qty = new Dec(order.filled_qty ?? '0');
      const sum = fills.get(plan.symbol) ?? new Dec(0);
      fills.set(plan.symbol, order.side === 'BUY' ? sum.add(qty) : sum.sub(qty));
    }
  });

  const symbols = [...baseline.keys()];
  const positionPipeline = redis.pipeline();
  for (const symbol of symbols) {
    positionPipeline.hget(keys.paperPosition(symbol), 'amount');
    positionPipeline.hget(keys.position(symbol), 'ledger_amount');
  }
  const positions = (await positionPipeline.exec()) ?? [];
  const off: IntegrityReport['symbols_off'] = [];
  symbols.forEach((symbol, i) => {
    const base = baseline.get(symbol) ?? { exchange: '0', ledger: '0' };
    const exchange = parseAmount(positions[2 * i]?.[1] as string | null, `exchange position of ${symbol}`);
    const ledger = parseAmount(positions[2 * i + 1]?.[1] as string | null, `ledger_amount of ${symbol}`);
    const sum = fills.get(symbol) ?? new Dec(0);
    if (!exchange.sub(base.exchange).eq(sum) || !ledger.sub(base.ledger).eq(sum)) {
      off.push({ symbol, exchange: formatDec(exchange), ledger: formatDec(ledger), fills: formatDec(sum) });
    }
  });

  const counts = [...byId.keys()].map((planId) => entries.get(planId) ?? 0);
  const report = {
    plans: plans.length,
    executed: plans.filter((plan) => plan.outcome === 'executed').length,
    apply_entries: applied.length,
    apply_missing: counts.filter((n) => n === 0).length,
    apply_duplicated: counts.filter((n) => n > 1).length,
    apply_strangers: strangers,
    orders: placed,
    orders_missing: missing,
    orders_unexpected: unexpected,
    symbols: symbols.length,
    symbols_off: off,
  };
  const ok =
    report.apply_missing === 0 &&
    report.apply_duplicated === 0 &&
    strangers === 0 &&
    missing === 0 &&
    unexpected === 0 &&
    off.length === 0;
  return { ...report, ok };
}

/** One line: what was counted, and what is wrong if anything. */
export function integrityLine(r: IntegrityReport): string {
  const counted =
    `${r.plans} plans: ${r.executed} executed, ${r.apply_entries} Apply entries, ${r.orders} orders, ` +
    `${r.symbols} symbols exchange = ledger = fills`;
  if (r.ok) return `${counted}  ok`;
  const wrong = [
    r.apply_missing && `${r.apply_missing} plans without an Apply entry`,
    r.apply_duplicated && `${r.apply_duplicated} plans with several Apply entries`,
    r.apply_strangers && `${r.apply_strangers} Apply entries of unknown plans`,
    r.orders_missing && `${r.orders_missing} executed plans without a filled order`,
    r.orders_unexpected && `${r.orders_unexpected} orders of plans that did not execute`,
    ...r.symbols_off.map((s) => `${s.symbol}: exchange ${s.exchange}, ledger ${s.ledger}, fills ${s.fills}`),
  ].filter(Boolean);
  return `${counted}  WRONG: ${wrong.join('; ')}`;
}
