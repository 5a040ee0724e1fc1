import { Dec, formatDec } from '../lib/decimal';
import { redisKeys } from '../contract/keys';
import type { P33Permit, Plan } from '../contract/types';
import { writePermit } from './audit';
import type { ActivityDeps } from './deps';
import { readPositions } from './positions';

export type P33Reason =
  | 'positions_reconciled'
  | 'reconcile_required_qty_mismatch'
  | 'reduce_only_wrong_side'
  | 'reduce_only_exceeds_position';

export interface P33Decision {
  allow: boolean;
  reason: P33Reason;
  discrepancy: Dec;
}

/**
 * The Position State Brain's (P3.3) decision: the exchange's and the ledger's positions must agree within the
 * tolerance (a discrepancy exactly at the tolerance is allowed), and a reduce-only plan must reduce the position it
 * meets on the exchange, by no more than that position.
 */
/** The exchange's and the ledger's amounts agree within the tolerance (exactly at the tolerance is agreement). */
export function positionsAgree(state: { exchangeAmount: Dec; ledgerAmount: Dec; tolerance: Dec }): boolean {
  return state.exchangeAmount.sub(state.ledgerAmount).abs().lte(state.tolerance);
}

export function decideP33(
  plan: Pick<Plan, 'side' | 'qty' | 'reduce_only'>,
  state: { exchangeAmount: Dec; ledgerAmount: Dec; tolerance: Dec },
): P33Decision {
  const discrepancy = state.exchangeAmount.sub(state.ledgerAmount).abs();
  if (!positionsAgree(state)) return { allow: false, reason: 'reconcile_required_qty_mismatch', discrepancy };
  if (plan.reduce_only) {
    const position = state.exchangeAmount;
    const reducesLong = plan.side === 'SELL' && position.gt(0);
    const reducesShort = plan.side === 'BUY' && position.lt(0);
    if (!position.isZero() && !reducesLong && !reducesShort) {
      return { allow: false, reason: 'reduce_only_wrong_side', discrepancy };
    }
    if (new Dec(plan.qty).gt(position.abs()))
      return { allow: false, reason: 'reduce_only_exceeds_position', discrepancy };
  }
  return { allow: true, reason: 'positions_reconciled', discrepancy };
}

/** What a blocked plan learns when it looks again: P3.3's decision on the positions now, nothing written. */
export interface P33View {
  allow: boolean;
  reason: P33Reason;
  exchange_amount: string;
  ledger_amount: string;
  tolerance: string;
  /**
   * Set when the positions disagreed while they may have been moving, and why: another plan (or a reconcile) held the
   * symbol, between its order and its ledger update perhaps, or the ledger changed while the exchange was read. Such
   * a disagreement says nothing; the plan looks again holding the symbol itself.
   */
  unsettled?: string;
}

export function createP33Activities({ redis, config, exchange, clock }: ActivityDeps) {
  const keys = redisKeys(config.keyPrefix);

  /**
   * Who holds the symbol and its ledger, read at one instant: the raw `ledger_amount`, and the whole hash as text
   * (every ledger write changes its `updated_at`).
   */
  async function symbolMoment(
    symbol: string,
  ): Promise<{ holder: string | null; ledgerAmount: string | null; ledger: string }> {
    const replies = await redis.multi().get(keys.symbolLock(symbol)).hgetall(keys.position(symbol)).exec();
    const [lock, hash] = (replies ?? []).map(([err, value]) => {
      if (err) throw err;
      return value;
    });
    const ledger = (hash ?? {}) as Record<string, string>;
    return {
      holder: typeof lock === 'string' ? lock : null,
      ledgerAmount: ledger.ledger_amount ?? null,
      ledger: JSON.stringify(ledger),
    };
  }

  /**
   * P3.3's decision on the positions now, as the permit and a blocked plan's look both show it (`ledger`: the raw
   * ledger amount, when read already).
   */
  async function evaluate(plan: Plan, ledger?: string | null): Promise<P33View & { discrepancy: string }> {
    const positions = await readPositions({ redis, exchange, config, keys }, plan.symbol, ledger);
    const decision = decideP33(plan, positions);
    return {
      allow: decision.allow,
      reason: decision.reason,
      exchange_amount: formatDec(positions.exchangeAmount),
      ledger_amount: formatDec(positions.ledgerAmount),
      discrepancy: formatDec(decision.discrepancy),
      tolerance: formatDec(positions.tolerance),
    };
  }

  return {
    /**
     * A blocked plan's look at the positions: P3.3's decision, read only. No permit is written and no audit entry:
     * a plan at rest costs nothing until the positions agree, and then it asks for its permits again.
     */
    async peekPosition(plan: Plan): Promise<P33View> {
      // The ledger with the holder, then the exchange: one Redis read more than a bare look, the ledger's read once.
      const before = await symbolMoment(plan.symbol);
      const { discrepancy: _discrepancy, ...view } = await evaluate(plan, before.ledgerAmount);
      if (view.allow) return view;
      // A disagreement counts only if no order can have been in flight while the positions were read: nobody else
      // held the symbol before or after, and the ledger did not change between (an order placed and recorded wholly
      // within the look moves it).
      const after = await symbolMoment(plan.symbol);
      const holder = [before.holder, after.holder].find((id) => id !== null && id !== plan.plan_id);
      if (holder !== undefined) return { ...view, unsettled: `${holder} holds ${plan.symbol}` };
      if (before.ledger !== after.ledger) return { ...view, unsettled: `the ledger of ${plan.symbol} moved meanwhile` };
      return view;
    },

    /**
     * Compares the exchange's position with the ledger's and writes P3.3's permit at `quantum:permit:p33:{plan_id}`
     * (EX PERMIT_TTL_S), with its audit entry in the same MULTI.
     */
    async checkPosition(plan: Plan): Promise<P33Permit> {
      const decision = await evaluate(plan);
      const evaluatedAt = clock();
      const permit: P33Permit = { plan_id: plan.plan_id, symbol: plan.symbol, ...decision, evaluated_at: evaluatedAt };
      const key = keys.p33Permit(plan.plan_id);
      const entry = {
        plan_id: plan.plan_id,
        layer: 'p33' as const,
        decision: decision.allow ? 'allowed' : 'denied',
        reason: decision.reason,
        at: evaluatedAt,
      };
      // The position watcher's register, in the same MULTI: a denied plan waits at rest until it is woken.
      await writePermit(redis, { key, value: permit, ttlS: config.permitTtlS }, keys.auditStream, entry, (multi) => {
        if (decision.allow) multi.zrem(keys.p33Blocked(plan.symbol), plan.plan_id);
        else
          multi.zadd(keys.p33Blocked(plan.symbol), evaluatedAt, plan.plan_id).sadd(keys.p33BlockedSymbols, plan.symbol);
      });
      return permit;
    },
  };
}
