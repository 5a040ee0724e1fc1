import type { PayloadConverter } from '@temporalio/common';
import type { temporal } from '@temporalio/proto';
import type { GovernorTurn } from '../activities/governor-turn';
import type {
  Admission,
  ApprovalQuorum,
  ExecuteResult,
  GovernorAnswer,
  P33Permit,
  Plan,
  TradingMode,
} from '../contract/types';
import { Dec, formatDec } from '../lib/decimal';
import type { History, PlanRun } from './histories';

/**
 * What `what-if` re-decides, read from a plan's Temporal histories: the admitted plan and its mode, every answer of
 * the Governor and when it was asked, every P3.3 comparison with the exchange's and the ledger's amounts, and the
 * fill's price. Read from the events alone: no worker of the build the plan ran on is needed.
 */

/** A Governor decision as recorded: its answer, and the workflow's time of the request (the rate window's clock). */
export interface RecordedGovernor {
  layer: 'governor';
  at: number;
  eventId: number;
  answer: GovernorAnswer;
}

/** A P3.3 comparison as recorded: `check` wrote a permit, `look` is a blocked plan's read-only look. */
export interface RecordedP33 {
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
    if (type === 'governorTurn') {
      // One call per turn may carry the admission and, once the symbol was held, the answer.
      const turn = result as GovernorTurn;
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
