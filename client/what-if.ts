import { decidePermit, takeRateSlot, type GovernorDecision, type RateWindow } from '../activities/governor';
import { decideP33 } from '../activities/p33';
import type { Approval, GovernorAnswer } from '../contract/types';
import { sizeLimitsFor, toleranceFor, type DecisionSettings } from '../lib/config';
import { Dec, formatDec } from '../lib/decimal';
import { quorumNeedsPrice, quorumRuleText, type QuorumSignature } from '../lib/quorum';
import type { PlanRecord, RecordedDecision, RecordedGovernor, RecordedP33 } from './what-if-history';

/**
 * `permit-chain what-if`: the recorded past re-decided under proposed settings, by the layers' own pure decisions
 * (decidePermit, decideP33, the rate window's pure twin). The source is each plan's Temporal history, the one record
 * that holds everything a decision read: the admitted plan and its mode (governorTurn), every answer of the Governor and
 * when it was asked, every P3.3 comparison with the exchange's and the ledger's amounts, and the fill's price. The
 * audit stream lacks the quantities and positions; the `status` query keeps only each layer's last permit.
 */

/** Denials that come from the exchange's trading rules: not a setting, so they stand as recorded. */
const EXCHANGE_RULE_REASONS: ReadonlySet<string> = new Set([
  'unknown_symbol',
  'qty_step_violation',
  'below_min_qty',
  'above_max_qty',
  'below_min_notional',
]);

export type Layer = 'governor' | 'p33';

/** One decision's outcome, as the audit stream words it. */
export interface DecisionOutcome {
  decision: 'granted' | 'denied' | 'approval_required' | 'rate_limited' | 'allowed';
  reason: string;
}

/** A decision that would come out otherwise under the proposed settings. */
export interface Flip {
  plan_id: string;
  workflow_id: string;
  symbol: string;
  layer: Layer;
  /** When it was decided (ms since epoch). */
  at: number;
  before: DecisionOutcome;
  after: DecisionOutcome;
  why: string;
}

/** A decision that cannot be re-decided from what was recorded, and why. */
export interface Undecided {
  plan_id: string;
  layer: Layer;
  at: number;
  why: string;
}

export interface LayerTotals {
  /** Decisions re-decided. */
  decisions: number;
  flips: number;
  /** Flips by `before → after (reason)`. */
  by_change: Record<string, number>;
}

export interface WhatIfReport {
  /** How many plans of the window were read, and their decisions. */
  plans: number;
  decisions: number;
  flips: Flip[];
  totals: Record<Layer, LayerTotals>;
  undecided: Undecided[];
  /**
   * Decisions a plan made after its first flip: the plan would have gone another way from there, so they are not
   * re-decided (its next Governor request after a new rate-limit wait is simulated, for the window's sake).
   */
  after_flip: number;
}

function recordedOutcome(d: RecordedDecision): DecisionOutcome {
  if (d.layer === 'p33') return { decision: d.allow ? 'allowed' : 'denied', reason: d.reason };
  const a = d.answer;
  if (a.kind === 'permit') return { decision: a.permit.granted ? 'granted' : 'denied', reason: a.permit.reason };
  if (a.kind === 'rate_limited') return { decision: 'rate_limited', reason: 'rate_limit' };
  return { decision: 'approval_required', reason: a.reason };
}

function governorOutcome(d: GovernorDecision): DecisionOutcome {
  if (d.kind === 'grant') return { decision: 'granted', reason: d.reason };
  if (d.kind === 'deny') return { decision: 'denied', reason: d.reason };
  return { decision: 'approval_required', reason: d.reason };
}

/** A queued Governor request: a recorded one, or a simulated ask again after a new rate-limit wait. */
type Step = { record: PlanRecord; decision: RecordedDecision; simulated: boolean; inWindow: boolean };

/**
 * Re-decides the recorded decisions of `window` plans under `settings`, in the order they were made (every symbol's
 * rate window needs the order of its grants). `context` plans (started just before the window) only fill the rate
 * windows. A plan's first flip is reported and its later decisions are not re-decided: from there it would have gone
 * another way. Pure: reads nothing, writes nothing.
 */
export function reDecide(window: PlanRecord[], context: PlanRecord[], settings: DecisionSettings): WhatIfReport {
  const queue: Step[] = [];
  for (const [records, inWindow] of [
    [context, false],
    [window, true],
  ] as const) {
    for (const record of records) {
      for (const decision of record.decisions) queue.push({ record, decision, simulated: false, inWindow });
    }
  }
  const order = (a: Step, b: Step) => a.decision.at - b.decision.at || a.decision.eventId - b.decision.eventId;
  queue.sort(order);
  const report: WhatIfReport = {
    plans: window.length,
    decisions: 0,
    flips: [],
    totals: { governor: totals(), p33: totals() },
    undecided: [],
    after_flip: 0,
  };
  const diverged = new Set<string>();
  const rateWindows = new Map<string, RateWindow>();
  while (queue.length > 0) {
    const step = queue.shift() as Step;
    const { record, decision } = step;
    const planId = record.plan.plan_id;
    if (diverged.has(planId) && !step.simulated) {
      if (step.inWindow) report.after_flip += 1;
      continue;
    }
    const redone =
      decision.layer === 'governor'
        ? reDecideGovernor(record, decision, settings, rateWindows)
        : reDecideP33(record, decision, settings);
    if ('undecided' in redone) {
      if (step.inWindow && !step.simulated) {
        report.undecided.push({ plan_id: planId, layer: decision.layer, at: decision.at, why: redone.undecided });
      }
      continue;
    }
    // A recorded wait is followed by the plan's own recorded ask again; a new one by a simulated ask.
    const newWait = step.simulated || recordedOutcome(decision).decision !== 'rate_limited';
    if (redone.retryAt !== undefined && newWait) {
      // The workflow waits for the slot and asks again then: that request takes its slot when it frees.
      const retry: Step = { ...step, decision: { ...decision, at: redone.retryAt }, simulated: true };
      const at = queue.findIndex((s) => order(retry, s) < 0);
      queue.splice(at < 0 ? queue.length : at, 0, retry);
    }
    if (step.simulated || !step.inWindow) {
      if (redone.after.decision !== recordedOutcome(decision).decision) diverged.add(planId);
      continue;
    }
    const layer = report.totals[decision.layer];
    layer.decisions += 1;
    report.decisions += 1;
    const before = recordedOutcome(decision);
    if (before.decision === redone.after.decision) continue;
    diverged.add(planId);
    const change = `${before.decision} → ${redone.after.decision} (${redone.after.reason})`;
    layer.flips += 1;
    layer.by_change[change] = (layer.by_change[change] ?? 0) + 1;
    report.flips.push({
      plan_id: planId,
      workflow_id: record.workflowId,
      symbol: record.plan.symbol,
      layer: decision.layer,
      at: decision.at,
      before,
      after: redone.after,
      why: redone.why,
    });
  }
  return report;
}

function totals(): LayerTotals {
  return { decisions: 0, flips: 0, by_change: {} };
}

type Redone = { after: DecisionOutcome; why: string; retryAt?: number } | { undecided: string };

/**
 * The Governor's decision again: decidePermit on the recorded plan, mode and kill switch with the proposed limits and
 * quorum, then the proposed rate window. The exchange's trading rules are no setting: a plan they denied stays denied,
 * and a plan they passed passes again. In production, each recorded signature (a grant's `approved_by`, an ask's
 * approvers counted so far) counts when its approver is among the proposed approvers (it was verified when given);
 * the positions are taken as the approvers saw them, so a tighter tolerance does not make an approval stale here.
 */
function reDecideGovernor(
  record: PlanRecord,
  recorded: RecordedGovernor,
  settings: DecisionSettings,
  rateWindows: Map<string, RateWindow>,
): Redone {
  const { plan } = record;
  const answer = recorded.answer;
  if (answer.kind === 'permit' && !answer.permit.granted && EXCHANGE_RULE_REASONS.has(answer.permit.reason)) {
    return {
      after: recordedOutcome(recorded),
      why: `the exchange's rules: ${answer.permit.detail ?? answer.permit.reason}`,
    };
  }
  const policy = { mode: record.mode, ...sizeLimitsFor(settings, plan.symbol), quorum: settings.approvalQuorum };
  if (policy.maxNotional !== undefined && record.price === undefined) {
    return { undecided: `a notional limit needs the price, and no fill or notional denial of this plan recorded one` };
  }
  if (record.mode === 'production' && quorumNeedsPrice(policy.quorum) && record.price === undefined) {
    return {
      undecided: `a quorum threshold needs the price, and no fill or notional denial of this plan recorded one`,
    };
  }
  const signers = recordedSigners(answer);
  const proposed = signers.filter((name) => settings.approvers.includes(name));
  const approvals = proposed.map((name) => recordedApproval(name, recorded.at));
  const decision = decidePermit(plan, policy, {
    killSwitch: answer.kind === 'permit' && answer.permit.reason === 'kill_switch_active',
    ...(record.price !== undefined ? { price: new Dec(record.price) } : {}),
    ...(approvals[0] ? { approvals, positions: approvals[0].snapshot } : {}),
  });
  const after = governorOutcome(decision);
  if (decision.kind !== 'grant' || !settings.rateLimit) {
    const left = signers.filter((name) => !proposed.includes(name));
    const unapproved = left.length > 0 ? `${left.join(', ')} not among the proposed approvers; ` : '';
    const rule = quorumRuleText(settings.approvalQuorum);
    const ranUnder = quorumRuleText(record.quorum);
    const quorum = record.mode === 'production' && rule !== ranUnder ? `; ${rule}, the plan ran under ${ranUnder}` : '';
    return { after, why: `${unapproved}${decision.detail}${quorum}` };
  }
  const symbolWindow = rateWindows.get(plan.symbol) ?? new Map<string, number>();
  rateWindows.set(plan.symbol, symbolWindow);
  const { count, windowMs } = settings.rateLimit;
  const slot = takeRateSlot(symbolWindow, recorded.at, settings.rateLimit, plan.plan_id);
  if (slot.ok) return { after, why: `${decision.detail}; a slot of ${count}/${windowMs / 1000}s free` };
  return {
    after: { decision: 'rate_limited', reason: 'rate_limit' },
    why: `rate limit ${count}/${windowMs / 1000}s on ${plan.symbol}: waits until ${new Date(slot.freeAt).toISOString()}`,
    retryAt: slot.freeAt,
  };
}

/** Who had signed when the Governor decided: a grant's `approved_by` (`alice,bob`), an ask's approvers counted so far. */
function recordedSigners(answer: GovernorAnswer): string[] {
  if (answer.kind === 'permit') {
    const by = answer.permit.reason === 'approved' ? answer.permit.approved_by : null;
    return by ? by.split(',') : [];
  }
  return answer.kind === 'approval_required' ? (answer.counted ?? []) : [];
}

/**
 * A signature a recorded decision held, as decidePermit reads it: who gave it, and the positions they saw, which are
 * also the positions now (the Governor's own read at the grant is not recorded). Each approver had a key of their own
 * (the worker refuses two names with one key), so the name stands for the key.
 */
function recordedApproval(by: string, at: number): Approval & QuorumSignature {
  const snapshot = { exchange_amount: '0', ledger_amount: '0', tolerance: '0', taken_at: at };
  return { by, at, snapshot, expires_at: at, signature: '(verified when given)', key_fingerprint: by };
}

/** P3.3's decision again: decideP33 on the recorded exchange and ledger amounts, with the proposed tolerance. */
function reDecideP33(record: PlanRecord, recorded: RecordedP33, settings: DecisionSettings): Redone {
  const tolerance = toleranceFor(settings, record.plan.symbol);
  const exchangeAmount = new Dec(recorded.exchange_amount);
  const ledgerAmount = new Dec(recorded.ledger_amount);
  const decision = decideP33(record.plan, { exchangeAmount, ledgerAmount, tolerance: new Dec(tolerance) });
  const discrepancy = formatDec(decision.discrepancy);
  const compared = decision.discrepancy.lte(tolerance) ? '<=' : '>';
  return {
    after: { decision: decision.allow ? 'allowed' : 'denied', reason: decision.reason },
    why:
      `${recorded.kind === 'look' ? 'a blocked look: ' : ''}exchange ${recorded.exchange_amount}, ledger ` +
      `${recorded.ledger_amount}: discrepancy ${discrepancy} ${compared} tolerance ${tolerance} (was ${recorded.tolerance})`,
  };
}
