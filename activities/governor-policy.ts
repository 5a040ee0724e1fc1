import { Dec } from '../lib/decimal';
import {
  approvedByOf,
  quorumNeedsPrice,
  requiredApprovals,
  tallySignatures,
  type QuorumRule,
  type QuorumSignature,
} from '../lib/quorum';
import type { Approval, Plan, PositionSnapshot, TradingMode } from '../contract/types';
import type { SymbolRules } from './exchange/port';
import { ruleViolation, type RuleViolationReason } from './exchange/rules';

/* The Governor's decision, pure: from a plan, the worker's policy and the state it read, a permit or a denial. */

/** Denials for a plan the exchange would refuse: a symbol it does not list, or a broken trading rule. */
export type ExchangeRuleReason = 'unknown_symbol' | RuleViolationReason;

export type GovernorDecision =
  | { kind: 'deny'; reason: 'kill_switch_active' | 'size_limit_exceeded' | ExchangeRuleReason; detail: string }
  | {
      kind: 'ask';
      reason: 'approval_required' | 'approval_stale';
      detail: string;
      /** Distinct approvers needed. */
      required: number;
      /** The signatures that still count, in signing order, and the positions they cover: what to show next. */
      counted: string[];
      shown?: PositionSnapshot;
    }
  | { kind: 'grant'; reason: 'testnet_auto_approved' | 'approved'; approvedBy: string; detail: string };

export interface GovernorPolicy {
  mode: TradingMode;
  /** Decimal strings; absent: no limit. */
  maxQty?: string;
  maxNotional?: string;
  /** Four eyes: distinct approvers needed (production mode); absent: one. */
  quorum?: QuorumRule;
}

export interface GovernorState {
  killSwitch: boolean;
  /**
   * The exchange's trading rules for the symbol: absent when the exchange sets none (paper), 'unknown' when it does
   * not list the symbol.
   */
  rules?: SymbolRules | 'unknown';
  /** The fill price now (the mark price; read only when a notional rule or limit applies): notional = qty × price. */
  price?: Dec;
  /** The positions now (production mode): an approval holds only while they match what the approver saw. */
  positions?: PositionSnapshot;
  /** The verified approvals the plan holds, in signing order, each with the fingerprint of the key that verified it. */
  approvals?: (Approval & QuorumSignature)[];
}

/** Whether the positions still match what the approver saw, each amount within the tolerance. */
export function snapshotHolds(seen: PositionSnapshot, now: PositionSnapshot): boolean {
  const tolerance = new Dec(now.tolerance);
  const drift = (a: string, b: string) => new Dec(a).sub(new Dec(b)).abs();
  return (
    drift(seen.exchange_amount, now.exchange_amount).lte(tolerance) &&
    drift(seen.ledger_amount, now.ledger_amount).lte(tolerance)
  );
}

/** Whether a notional rule or limit applies to the plan, so that the price must be read. */
export function needsPrice(plan: Plan, policy: GovernorPolicy, rules: SymbolRules | 'unknown' | undefined): boolean {
  const minNotional = rules && rules !== 'unknown' && !plan.reduce_only && new Dec(rules.min_notional).gt(0);
  const quorum = policy.mode === 'production' && quorumNeedsPrice(policy.quorum);
  return policy.maxNotional !== undefined || Boolean(minNotional) || quorum;
}

/**
 * The Governor's (P3.2) decision for one plan, a pure function: the kill switch, then the exchange's trading rules
 * (a plan the exchange would refuse is denied here, by the rule's name, never rounded), then the size limits, then who
 * approves (testnet: the Governor itself; production: a person, whose approval holds while the positions match
 * what they saw). The per-symbol rate limit is applied after a grant, atomically in Redis.
 */
export function decidePermit(plan: Plan, policy: GovernorPolicy, state: GovernorState): GovernorDecision {
  if (state.killSwitch) return { kind: 'deny', reason: 'kill_switch_active', detail: 'the kill switch is on' };
  if (state.rules === 'unknown') {
    return { kind: 'deny', reason: 'unknown_symbol', detail: `the exchange does not list ${plan.symbol}` };
  }
  if (state.rules) {
    const broken = ruleViolation({ qty: plan.qty, reduceOnly: plan.reduce_only }, state.rules, state.price);
    if (broken) return { kind: 'deny', ...broken };
  }
  const qty = new Dec(plan.qty);
  if (policy.maxQty !== undefined && qty.gt(policy.maxQty)) {
    return { kind: 'deny', reason: 'size_limit_exceeded', detail: `qty ${plan.qty} > max ${policy.maxQty}` };
  }
  if (policy.maxNotional !== undefined) {
    if (!state.price) throw new Error('decidePermit: a notional limit needs the price');
    const notional = qty.mul(state.price);
    if (notional.gt(policy.maxNotional)) {
      return {
        kind: 'deny',
        reason: 'size_limit_exceeded',
        detail: `notional ${notional.toFixed()} > max ${policy.maxNotional}`,
      };
    }
  }
  if (policy.mode === 'testnet') {
    return { kind: 'grant', reason: 'testnet_auto_approved', approvedBy: 'auto:testnet', detail: 'testnet' };
  }
  if (quorumNeedsPrice(policy.quorum) && !state.price)
    throw new Error('decidePermit: a quorum threshold needs the price');
  const required = requiredApprovals(policy.quorum, state.price ? qty.mul(state.price) : undefined);
  const quorum = required > 1 ? ` (quorum ${required})` : '';
  const tally = tallySignatures(state.approvals ?? []);
  const names = tally.counted.map((a) => a.by);
  if (!tally.snapshot) {
    return { kind: 'ask', reason: 'approval_required', detail: `production mode${quorum}`, required, counted: [] };
  }
  if (!state.positions || !snapshotHolds(tally.snapshot, state.positions)) {
    return {
      kind: 'ask',
      reason: 'approval_stale',
      detail: `positions moved since ${names.join(', ')} approved`,
      required,
      counted: [],
    };
  }
  if (names.length < required) {
    const refused = tally.refused.map((r) => `; ${r.by} not counted: ${r.why}`).join('');
    return {
      kind: 'ask',
      reason: 'approval_required',
      detail: `${names.length} of ${required} distinct approvers signed (${names.join(', ')})${refused}`,
      required,
      counted: names,
      shown: tally.snapshot,
    };
  }
  const approvedBy = approvedByOf(names);
  return { kind: 'grant', reason: 'approved', approvedBy, detail: `approved by ${approvedBy}` };
}
