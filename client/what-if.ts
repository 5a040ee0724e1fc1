import type { PayloadConverter } from '@temporalio/common';
import type { temporal } from '@temporalio/proto';
import { decidePermit, takeRateSlot, type GovernorDecision, type RateWindow } from '../activities/governor';
import type { GovernorTurn } from '../activities/governor-turn';
import { decideP33 } from '../activities/p33';
import type {
  Admission,
  Approval,
  ApprovalQuorum,
  ExecuteResult,
  GovernorAnswer,
  P33Permit,
  Plan,
  TradingMode,
} from '../contract/types';
import { sizeLimitsFor, toleranceFor, type DecisionSettings } from '../lib/config';
import { Dec, formatDec } from '../lib/decimal';
import { quorumNeedsPrice, quorumRuleText, type QuorumSignature } from '../lib/quorum';
import type { History, PlanRun } from './histories';

/**
 * `permit-chain what-if`: the recorded past re-decided under proposed settings, by the layers' own pure decisions
 * (decidePermit, decideP33, the rate window's pure twin). The source is each plan's Temporal history, the one record
 * that holds everything a decision read: the admitted plan and its mode (admitPlan), every answer of the Governor and
 * when it was asked, every P3.3 comparison with the exchange's and the ledger's amounts, and the fill's price. The
 * audit stream lacks the quantities and positions; the `status` query keeps only each layer's last permit.
 */

/** A Governor decision as recorded: its answer, and the workflow's time of the request (the rate window's clock). */
interface RecordedGovernor {
  layer: 'governor';
  at: number;
  eventId: number;
  answer: GovernorAnswer;
}

/** A P3.3 comparison as recorded: `check` wrote a permit, `look` is a blocked plan's read-only look. */
interface RecordedP33 {
  layer: 'p33';
  at: number;
  eventId: number;
  kind: 'check' | 'look';
  allow: boolean;
  reason: string;
  exchange_amount: string;
  ledger_amount: string;
  tolerance: string;
}

export type RecordedDecision = RecordedGovernor | RecordedP33;

/** What one plan's history tells: the plan, its mode, its decisions in order, and a price if one was seen. */
export interface PlanRecord {
  workflowId: string;
  startedAt: number;
  plan: Plan;
  mode: TradingMode;
  /** The quorum rule the plan ran under, as its admission recorded it (absent: one signature). */
  quorum?: ApprovalQuorum;
  decisions: RecordedDecision[];
  /** The fill's price (Execute, moments after the Governor), or the one a recorded notional denial implies. */
  price?: string;
}

/** The history's local activity marker, as the SDK's core records it. */
const LOCAL_ACTIVITY_MARKER = 'core_local_activity';

function eventMs(event: temporal.api.history.v1.IHistoryEvent): number {
  const time = event.eventTime;
  if (!time) return 0;
  return Number(time.seconds ?? 0) * 1000 + Math.floor((time.nanos ?? 0) / 1_000_000);
}

/** What one run's history holds: the admission (the first run's), its decisions, a fill's price. */
interface RunRecord {
  admission?: Admission;
  decisions: RecordedDecision[];
  price?: string;
}

/**
 * Reads one run's history: the activities' results (local ones from their markers, regular ones from their completed
 * events), in the order the workflow got them. A Governor request's time is the `at` it was sent with: a regular
 * activity's input holds it; for a local one it is the workflow's clock of the task that ran it, which is that task's
 * start event's time (the workflow's `Date.now()`).
 */
function readRun(history: History, converter: PayloadConverter): RunRecord {
  let admission: Admission | undefined;
  const decisions: RecordedDecision[] = [];
  let price: string | undefined;
  let taskStartedAt = 0;
  const scheduled = new Map<string, { type: string; input: unknown[] }>();
  const results: { type: string; input?: unknown[]; result: unknown; eventId: number; at: number }[] = [];
  for (const event of history.events ?? []) {
    const eventId = Number(event.eventId ?? 0);
    if (event.workflowTaskStartedEventAttributes) taskStartedAt = eventMs(event);
    const marker = event.markerRecordedEventAttributes;
    if (marker?.markerName === LOCAL_ACTIVITY_MARKER) {
      const data = marker.details?.data?.payloads?.[0];
      const result = marker.details?.result?.payloads?.[0];
      if (!data || !result) continue; // a local activity that failed: no decision was made
      const meta = converter.fromPayload<{ activity_type: string }>(data);
      results.push({ type: meta.activity_type, result: converter.fromPayload(result), eventId, at: taskStartedAt });
    }
    const scheduledAttrs = event.activityTaskScheduledEventAttributes;
    if (scheduledAttrs) {
      const input = (scheduledAttrs.input?.payloads ?? []).map((p) => converter.fromPayload(p));
      scheduled.set(String(eventId), { type: scheduledAttrs.activityType?.name ?? '', input });
    }
    const completed = event.activityTaskCompletedEventAttributes;
    if (completed) {
      const from = scheduled.get(String(completed.scheduledEventId));
      const payload = completed.result?.payloads?.[0];
      if (from && payload) {
        results.push({ ...from, result: converter.fromPayload(payload), eventId, at: eventMs(event) });
      }
    }
  }
  for (const { type, input, result, eventId, at } of results) {
    if (type === 'admitPlan') admission = result as Admission;
    else if (type === 'requestPermit' || type === 'governorTurn') {
      // One call per turn (governorTurn) may carry the admission and, once the symbol was held, the answer.
      const turn: GovernorTurn =
        type === 'governorTurn' ? (result as GovernorTurn) : { answer: result as GovernorAnswer };
      if (turn.admission) admission = turn.admission;
      const asked = (input?.[0] as { at?: number } | undefined)?.at;
      if (turn.answer) decisions.push({ layer: 'governor', at: asked ?? at, eventId, answer: turn.answer });
    } else if (type === 'checkPosition' || type === 'peekPosition') {
      const p33 = result as Pick<P33Permit, 'allow' | 'reason' | 'exchange_amount' | 'ledger_amount' | 'tolerance'>;
      const evaluatedAt = (result as Partial<P33Permit>).evaluated_at;
      decisions.push({
        layer: 'p33',
        at: evaluatedAt ?? at,
        eventId,
        kind: type === 'checkPosition' ? 'check' : 'look',
        allow: p33.allow,
        reason: p33.reason,
        exchange_amount: p33.exchange_amount,
        ledger_amount: p33.ledger_amount,
        tolerance: p33.tolerance,
      });
    } else if (type === 'executePlan') {
      const executed = result as ExecuteResult;
      if (executed.placed && new Dec(executed.execution.avg_price).gt(0)) price = executed.execution.avg_price;
    }
  }
  return { ...(admission ? { admission } : {}), decisions, ...(price !== undefined ? { price } : {}) };
}

/**
 * One plan from the histories of its runs (a plan continued as new has several, oldest first): the plan and mode its
 * admission gave, every decision of every run. Undefined for a plan whose input was never admitted (invalid).
 */
export function readPlanRecord(runs: PlanRun[], converter: PayloadConverter): PlanRecord | undefined {
  const first = runs[0];
  if (!first) return undefined;
  const read = runs.map((run) => readRun(run.history, converter));
  const admission = read.find((r) => r.admission)?.admission;
  if (!admission?.admitted) return undefined;
  const { plan } = admission;
  const decisions = read.flatMap((r) => r.decisions);
  const price = read.find((r) => r.price !== undefined)?.price ?? impliedPrice(plan, decisions);
  return {
    workflowId: first.workflowId,
    startedAt: first.startedAt.getTime(),
    plan,
    mode: admission.rules.mode,
    ...(admission.rules.approvalQuorum ? { quorum: admission.rules.approvalQuorum } : {}),
    decisions,
    ...(price !== undefined ? { price } : {}),
  };
}

/** The price a recorded notional denial implies: its detail says `notional N > max M`, and N = qty × price. */
function impliedPrice(plan: Plan, decisions: RecordedDecision[]): string | undefined {
  for (const d of decisions) {
    if (d.layer !== 'governor' || d.answer.kind !== 'permit') continue;
    const notional = /^notional (\S+) > max /.exec(d.answer.permit.detail ?? '')?.[1];
    if (notional) return formatDec(new Dec(notional).div(plan.qty));
  }
  return undefined;
}

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
