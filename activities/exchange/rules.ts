import { Dec } from '../../lib/decimal';
import type { SymbolRules } from './port';

export type RuleViolationReason = 'qty_step_violation' | 'below_min_qty' | 'above_max_qty' | 'below_min_notional';

export interface RuleViolation {
  reason: RuleViolationReason;
  detail: string;
}

/**
 * Whether an order of `qty` breaks the exchange's rules for its symbol, a pure decision: off the step, under the
 * minimum or over the maximum quantity, or (unless reduce-only, as on Binance) under the minimum notional at
 * `price`. Never rounds: a plan that breaks a rule is denied with the rule named, not traded as something else.
 */
export function ruleViolation(
  order: { qty: string; reduceOnly: boolean },
  rules: SymbolRules,
  price: Dec | undefined,
): RuleViolation | null {
  const qty = new Dec(order.qty);
  const step = new Dec(rules.step_size);
  if (step.gt(0) && !qty.mod(step).isZero()) {
    return {
      reason: 'qty_step_violation',
      detail: `qty ${order.qty} is not a multiple of the step ${rules.step_size}`,
    };
  }
  if (qty.lt(rules.min_qty)) {
    return { reason: 'below_min_qty', detail: `qty ${order.qty} < min ${rules.min_qty}` };
  }
  const max = new Dec(rules.max_qty);
  if (max.gt(0) && qty.gt(max)) {
    return { reason: 'above_max_qty', detail: `qty ${order.qty} > max ${rules.max_qty}` };
  }
  const minNotional = new Dec(rules.min_notional);
  if (!order.reduceOnly && minNotional.gt(0)) {
    if (!price) throw new Error('ruleViolation: a minimum notional needs the price');
    const notional = qty.mul(price);
    if (notional.lt(minNotional)) {
      return {
        reason: 'below_min_notional',
        detail: `notional ${notional.toFixed()} (qty ${order.qty} × mark ${price.toFixed()}) < min ${rules.min_notional}`,
      };
    }
  }
  return null;
}
