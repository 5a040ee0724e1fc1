/**
 * The chaos run's invariants, pure: what the run fed, what Temporal, Redis and the exchange hold at its end, and the
 * list of what is wrong, each naming the plans involved. A unit test feeds it broken endings.
 */
import type { ChainOutcome } from '../../contract/types';
import { Dec, formatDec } from '../../lib/decimal';

/** A plan the run fed, and how it was designed to end. */
export interface FedPlan {
  planId: string;
  symbol: string;
  outcome: ChainOutcome;
}

/** An order as the exchange holds it, mapped back to its plan (undefined: an order of no plan of the run). */
export interface ExchangeOrderRecord {
  planId: string | undefined;
  clientOrderId: string;
  symbol: string;
  side: string;
  status: string;
  executedQty: string;
  /** When the exchange placed it, ms since the epoch. */
  time: number;
}

export interface ChaosEnding {
  /** How each plan's workflow ended; undefined: it has not. */
  outcomes: ReadonlyMap<string, ChainOutcome | undefined>;
  /** The Governor's last permit's `expires_at` per plan (from the workflow's result), where it has one. */
  permitExpiresAt: ReadonlyMap<string, number>;
  /** Workflows of the chain's type: one per plan. */
  workflows: number;
  /** The plan id of every entry of the Apply stream. */
  applyEntries: readonly string[];
  orders: readonly ExchangeOrderRecord[];
  /** Per symbol: the amounts at the start, and at the end on the exchange and in the ledger (raw strings). */
  positions: ReadonlyMap<string, { start: string; exchange: string | null; ledger: string | null }>;
  intake: { pending: number; lag: number | null };
  /** The exit stream's entry ids the run wrote malformed on purpose. */
  malformed: readonly string[];
  /** The dead-letter stream: each entry's `original_id`. */
  deadLettered: readonly string[];
}

/** One broken invariant, and the plans it involves (none for a symbol's or the intake's). */
export interface Violation {
  text: string;
  planIds: string[];
}

/** Every invariant of the chaos run that the ending breaks; empty when the run lost and duplicated nothing. */
export function chaosViolations(plans: readonly FedPlan[], ending: ChaosEnding): Violation[] {
  const wrong: Violation[] = [];
  const byId = new Map(plans.map((plan) => [plan.planId, plan]));
  const about = (text: string, ...planIds: string[]) => wrong.push({ text, planIds });

  for (const plan of plans) {
    const outcome = ending.outcomes.get(plan.planId);
    if (outcome === undefined) about(`plan ${plan.planId} has not ended`, plan.planId);
    else if (outcome !== plan.outcome) {
      about(`plan ${plan.planId} ended ${outcome}, designed to end ${plan.outcome}`, plan.planId);
    }
  }
  if (ending.workflows !== plans.length) about(`${ending.workflows} chain workflows for ${plans.length} plans`);

  const entries = countBy(ending.applyEntries, (planId) => planId);
  for (const [planId, n] of entries) if (!byId.has(planId)) about(`${n} Apply entries of unknown plan ${planId}`);
  const ordersOf = new Map<string, ExchangeOrderRecord[]>();
  for (const order of ending.orders) {
    if (order.planId === undefined || !byId.has(order.planId)) {
      about(`order ${order.clientOrderId} on ${order.symbol} belongs to no plan of the run`);
      continue;
    }
    ordersOf.set(order.planId, [...(ordersOf.get(order.planId) ?? []), order]);
  }
  for (const plan of plans) {
    const applied = entries.get(plan.planId) ?? 0;
    const orders = ordersOf.get(plan.planId) ?? [];
    const executed = ending.outcomes.get(plan.planId) === 'executed';
    if (applied > 1 || (executed && applied !== 1)) {
      about(`plan ${plan.planId} has ${applied} Apply entries, expected ${executed ? 1 : 'at most 1'}`, plan.planId);
    }
    if (orders.length > 1 || (executed && orders.length !== 1)) {
      about(`plan ${plan.planId} has ${orders.length} orders, expected ${executed ? 1 : 'at most 1'}`, plan.planId);
    }
    const expiresAt = ending.permitExpiresAt.get(plan.planId);
    for (const order of orders) {
      if (expiresAt === undefined) {
        about(`plan ${plan.planId} has an order but no Governor permit`, plan.planId);
      } else if (order.time > expiresAt) {
        about(
          `plan ${plan.planId}: order placed at ${new Date(order.time).toISOString()}, after its permit's deadline ` +
            new Date(expiresAt).toISOString(),
          plan.planId,
        );
      }
    }
  }

  const fills = new Map<string, Dec>();
  const fillers = new Map<string, string[]>();
  for (const order of ending.orders) {
    const qty = decimal(order.executedQty);
    if (qty === undefined) {
      about(`order ${order.clientOrderId}: executed quantity ${JSON.stringify(order.executedQty)}`);
      continue;
    }
    if (qty.isZero()) continue;
    fills.set(order.symbol, (fills.get(order.symbol) ?? new Dec(0))[order.side === 'BUY' ? 'add' : 'sub'](qty));
    if (order.planId) fillers.set(order.symbol, [...(fillers.get(order.symbol) ?? []), order.planId]);
  }
  const duplicated = new Set([...ordersOf].filter(([, orders]) => orders.length > 1).map(([planId]) => planId));
  for (const [symbol, { start, exchange: exchangeRaw, ledger: ledgerRaw }] of ending.positions) {
    const exchange = decimal(exchangeRaw);
    const ledger = decimal(ledgerRaw);
    const base = decimal(start);
    // The plans to look at first: those with more than one order on the symbol, else every plan that filled there.
    const suspects = (fillers.get(symbol) ?? []).filter((planId) => duplicated.has(planId));
    const involved = suspects.length > 0 ? [...new Set(suspects)] : [];
    if (!exchange || !ledger || !base) {
      about(`${symbol}: amounts not decimals (exchange ${exchangeRaw}, ledger ${ledgerRaw})`, ...involved);
      continue;
    }
    const sum = fills.get(symbol) ?? new Dec(0);
    if (!exchange.eq(ledger)) {
      about(`${symbol}: exchange ${formatDec(exchange)} != ledger ${formatDec(ledger)}`, ...involved);
    }
    if (!exchange.sub(base).eq(sum)) {
      about(
        `${symbol}: exchange moved ${formatDec(exchange.sub(base))} from ${formatDec(base)}, fills ${formatDec(sum)}`,
        ...involved,
      );
    }
    if (!ledger.sub(base).eq(sum)) {
      about(`${symbol}: ledger moved ${formatDec(ledger.sub(base))} from ${formatDec(base)}, fills ${formatDec(sum)}`);
    }
  }
  for (const symbol of fills.keys()) if (!ending.positions.has(symbol)) about(`fills on unexpected symbol ${symbol}`);

  if (ending.intake.pending !== 0) about(`${ending.intake.pending} entries pending in the intake's consumer group`);
  if (ending.intake.lag !== 0) about(`intake group lag ${ending.intake.lag}: entries never read`);
  const dead = new Set(ending.deadLettered);
  const malformed = new Set(ending.malformed);
  for (const id of ending.malformed) if (!dead.has(id)) about(`malformed entry ${id} was not dead-lettered`);
  for (const id of ending.deadLettered) if (!malformed.has(id)) about(`entry ${id} was dead-lettered, not malformed`);
  // Each finding once, however many ways it was reached.
  const seen = new Set<string>();
  return wrong.filter((v) => !seen.has(v.text) && Boolean(seen.add(v.text)));
}

/** The plan ids named by the violations, each once. */
export function involvedPlans(violations: readonly Violation[]): string[] {
  return [...new Set(violations.flatMap((v) => v.planIds))];
}

/** How many items share each key (invariants.ts counts with it too). */
export function countBy<T>(items: readonly T[], key: (item: T) => string): Map<string, number> {
  const counts = new Map<string, number>();
  for (const item of items) counts.set(key(item), (counts.get(key(item)) ?? 0) + 1);
  return counts;
}

/** An exact decimal, or undefined for anything that is not one (absent, empty, corrupt). */
export function decimal(raw: string | null | undefined): Dec | undefined {
  if (raw === null || raw === undefined || !/^-?\d+(\.\d+)?$/.test(raw.trim())) return undefined;
  return new Dec(raw.trim());
}
