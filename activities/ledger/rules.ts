import { AmountError, Dec, formatDec, parseAmount } from '../../lib/decimal';
import type { Side } from '../../contract/types';
import type { ExchangeOrder } from '../exchange/port';

/* The ledger's rules, pure: what a fill is, how it moves the ledger, how an unapplied one is settled. The I/O that
   applies them is activities/ledger.ts. */

/**
 * How a recorded fill stands with the ledger: field `ledger_applied` of `quantum:execution:{plan_id}`. `1`: the
 * chain moved the ledger by it; `0`: not yet (the ledger changed or turned corrupt between Execute's read and the
 * fill's record); `hand_set`: a person set the ledger to a value that already counts it; `reconcile`: a reconcile set
 * the ledger to the exchange's amount, which includes it. A record from before this field existed counts as `1`.
 */
export type LedgerApplied = '1' | '0' | 'hand_set' | 'reconcile';

/**
 * A fill on the exchange whose ledger move cannot be decided without a person: the ledger holds neither the value it
 * had before the fill nor that value moved by the fill. Retrying does not help; `permit-chain reconcile` does.
 */
export class LedgerConflict extends Error {
  override name = 'LedgerConflict';
}

/** What a reconcile of a symbol starts from: the ledger as stored and as shown, and the unapplied fills it accounts for. */
export interface ReconcileState {
  raw: string | null;
  before: string;
  fills: string[];
}

/** The ledger or the exchange moved between what a person was shown and their yes: nothing was changed. */
export class ReconcileStale extends Error {
  override name = 'ReconcileStale';
}

/** What a fill is, for the ledger: how much was executed, and which way. */
export type Fill = { side: Side; filled_qty: string };

/** Whether the order executed anything at all (a rejected or expired order did not). */
export function executedAny(fill: Fill): boolean {
  return !new Dec(fill.filled_qty).isZero();
}

/**
 * The ledger amount after a fill: BUY adds, SELL subtracts the executed quantity, whatever the order's final state
 * (FILLED, or a partial fill that then EXPIRED or was CANCELED); an order that executed nothing moves nothing.
 */
export function ledgerAfterFill(ledger: Dec, fill: Fill): Dec {
  const filled = new Dec(fill.filled_qty);
  return fill.side === 'BUY' ? ledger.add(filled) : ledger.sub(filled);
}

/** What to do with a recorded fill that is not yet in the ledger, given the ledger now. */
export type Settlement =
  { kind: 'apply'; ledger: string } | { kind: 'counted' } | { kind: 'corrupt' } | { kind: 'conflict' };

export function decimalOrNull(raw: string | null): Dec | null {
  try {
    return parseAmount(raw, 'ledger_amount');
  } catch (err) {
    if (err instanceof AmountError) return null;
    throw err;
  }
}

/**
 * The rule for a fill recorded but not applied, pure: the ledger still at its value from before the fill → move it
 * by the fill; already at that value moved by the fill (a person set it by hand, counting the fill) → mark it
 * applied without moving; not a decimal → a person must fix it; anything else → refuse to guess (a reconcile
 * settles it). An order that filled nothing has nothing to apply. Amounts compare as decimals: `4.0` is `4`.
 */
export function settleUnappliedFill(ledgerBefore: string, fill: Fill, current: string | null): Settlement {
  if (!executedAny(fill)) return { kind: 'counted' };
  const now = decimalOrNull(current);
  if (now === null) return { kind: 'corrupt' };
  const before = decimalOrNull(ledgerBefore);
  if (before === null) return { kind: 'conflict' };
  const after = ledgerAfterFill(before, fill);
  if (now.eq(before)) return { kind: 'apply', ledger: formatDec(after) };
  if (now.eq(after)) return { kind: 'counted' };
  return { kind: 'conflict' };
}

/** An amount as an operator should read it: normalized when it is a decimal, quoted as stored when not. */
export function showAmount(raw: string | null): string {
  const amount = decimalOrNull(raw);
  return amount === null ? `'${raw}'` : formatDec(amount);
}

/**
 * The audit decision for an order's end: `executed` (FILLED), `partially_executed` (a part executed, then the order
 * EXPIRED or was CANCELED), or `order_rejected` (nothing executed: REJECTED, EXPIRED or CANCELED), with the reason.
 */
export function orderAudit(order: ExchangeOrder): { decision: string; reason: string } {
  const filled = `filled ${order.filled_qty} @ ${order.avg_price}`;
  const why = order.reject_reason ? `: ${order.reject_reason}` : '';
  if (order.status === 'FILLED') return { decision: 'executed', reason: filled };
  if (executedAny(order)) {
    return { decision: 'partially_executed', reason: `${order.status}, ${filled} of ${order.qty}${why}` };
  }
  return { decision: 'order_rejected', reason: `${order.status}, nothing filled of ${order.qty}${why}` };
}
