import { setCurrentDetails, upsertSearchAttributes } from '@temporalio/workflow';
import type { ChainOutcome, ChainStage, ChainStatus, P33Permit, Plan, TradingMode } from '../contract/types';
import { chainOutcomeKey, chainStageKey, planIdKey, symbolKey, tradingModeKey } from '../contract/messages';
import { quorumProgressLine } from '../lib/quorum';

/** How many timeline entries a plan keeps; older re-checks of a long-blocked plan give way to newer ones. */
const MAX_TIMELINE = 200;
/** How many of the last timeline entries a run hands to the run it continues as, beside the first. */
const CARRIED_TIMELINE = 50;

/** `10:31:08` (UTC): the time of day a person reads in the Web UI. */
export function clockTime(ms: number): string {
  return new Date(ms).toISOString().slice(11, 19);
}

/** What an operator does for a plan blocked by P3.3: the commands, ready to copy. */
export function blockedNextStep(plan: Plan): string {
  return (
    `bring the ledger to the exchange's position: \`permit-chain reconcile ${plan.symbol} --by NAME\` ` +
    `(shows the change; add \`--yes\` to make it). The position watcher then wakes this plan; if it does not, ` +
    `\`permit-chain retry ${plan.plan_id}\`.`
  );
}

/** What approvers do for a plan awaiting approval (production mode), how many of them, and by when. */
export function awaitingNextStep(plan: Plan, until: number, required = 1): string {
  const who = required > 1 ? `${required} distinct approvers sign, each once` : 'an approver signs';
  return (
    `${who}, before ${clockTime(until)} UTC: \`permit-chain approve ${plan.plan_id} --by NAME --key FILE\` ` +
    `or \`permit-chain reject ${plan.plan_id} --by NAME --key FILE --reason WHY\`.`
  );
}

/** The blocked plan's explanation, as the timeline and the Web UI show it. */
export function blockedDetail(p33: P33Permit): string {
  return (
    `blocked: ${p33.reason}, exchange ${p33.exchange_amount} vs ledger ${p33.ledger_amount}, ` +
    `tolerance ${p33.tolerance}`
  );
}

/**
 * The plan's public face: the `status` query's answer, the `ChainStage`/`ChainOutcome` search attributes and the
 * current details in the Web UI, kept in step from one place.
 */
export class StatusBoard {
  readonly status: ChainStatus;
  /** The plan once the Governor has admitted it; until then the board knows only the workflow's plan id. */
  private plan?: Plan;
  /**
   * Search attributes not yet sent. They are sent when the plan is about to wait (`publish`), not at every stage:
   * a chain passes Apply and P3.3 in milliseconds, and each upsert is a history event and a visibility write. The
   * attributes say where a plan waits, which is what people search for; the `status` query says where it is now.
   */
  private pending: { key: typeof chainStageKey; value: string }[] = [];
  private published = new Map<string, string>();

  constructor(planId: string) {
    this.status = { plan_id: planId, stage: 'governor', attempts: 0, timeline: [] };
    // Whatever the starter set: the workflow's own stage goes out with its first upsert.
    this.set(chainStageKey, 'governor');
  }

  /**
   * The admitted plan and the worker's mode: the search attributes follow them, whatever the starter claimed.
   */
  admit(plan: Plan, mode: TradingMode): void {
    this.plan = plan;
    this.status.mode = mode;
    this.set(planIdKey, plan.plan_id);
    this.set(symbolKey, plan.symbol);
    this.set(tradingModeKey, mode);
  }

  /**
   * The status a previous run of the plan carried over: all its search attributes go out again with this run's first
   * upsert (the continued run's attributes are its predecessor's, but this run does not take them on trust).
   */
  resume(carried: ChainStatus): void {
    const { outcome: _outcome, ...status } = carried;
    Object.assign(this.status, status, { plan_id: this.status.plan_id, mode: this.status.mode });
    this.set(chainStageKey, this.status.stage);
  }

  /** The status to carry over: all but the middle of a long timeline (the earlier runs' histories keep it all). */
  carried(note: string): ChainStatus {
    const { timeline } = this.status;
    const kept =
      timeline.length > CARRIED_TIMELINE + 1 ? [timeline[0], ...timeline.slice(-CARRIED_TIMELINE)] : timeline;
    const line = { stage: this.status.stage, at: Date.now(), detail: note };
    return { ...this.status, timeline: [...kept.filter((entry) => entry !== undefined), line] };
  }

  private set(key: typeof chainStageKey, value: string): void {
    this.pending = this.pending.filter((attribute) => attribute.key.name !== key.name);
    if (this.published.get(key.name) !== value) this.pending.push({ key, value });
  }

  /** Sends the search attributes that changed since the last time: call before the plan waits, and at its end. */
  publish(): void {
    if (this.pending.length === 0) return;
    upsertSearchAttributes(this.pending);
    for (const { key, value } of this.pending) this.published.set(key.name, value);
    this.pending = [];
  }

  /**
   * What a person can do about the plan where it waits, shown under the details in the Web UI (not in the timeline);
   * cleared when the plan moves on to another stage.
   */
  private nextStep = '';

  /** The detail the current details show now (the last `note` or `show`). */
  private detail = '';

  /** Moves to a stage (its search attribute follows when the plan next waits) and writes the timeline line. */
  enter(stage: ChainStage, detail: string, nextStep = ''): void {
    if (stage !== this.status.stage) {
      this.status.stage = stage;
      this.set(chainStageKey, stage);
    }
    this.nextStep = nextStep;
    delete this.status.next_look_at;
    this.note(detail);
  }

  /** A continued run waiting where its predecessor waited: the details and the next step again, no timeline line. */
  resumeAt(nextStep: string, detail: string): void {
    this.nextStep = nextStep;
    this.show(detail);
  }

  /**
   * When a blocked plan looks by itself next: shown in the current details and the status, never in the timeline
   * (a timeline line would state a time that a retry or the watcher makes stale). Cleared when the plan changes stage.
   */
  lookNextAt(at: number): void {
    this.status.next_look_at = at;
    this.show(this.detail);
  }

  /** A timeline line in the current stage, also shown as the workflow's current details. */
  note(detail: string): void {
    this.status.timeline.push({ stage: this.status.stage, at: Date.now(), detail });
    if (this.status.timeline.length > MAX_TIMELINE) this.status.timeline.splice(1, 1);
    this.show(detail);
  }

  /**
   * Current details only: for what changes often and would flood the timeline. The details end with the next step,
   * which the `status` query carries too (`next_step`), so that `status` names the command the Web UI does.
   */
  show(detail: string): void {
    this.detail = detail;
    const plan = this.plan ? ` · ${this.plan.side} ${this.plan.qty} ${this.plan.symbol}` : '';
    const recheck =
      this.status.next_look_at !== undefined ? `; next re-check ${clockTime(this.status.next_look_at)} UTC` : '';
    const nextStep = this.nextStepNow();
    if (nextStep) this.status.next_step = nextStep;
    else delete this.status.next_step;
    const next = nextStep ? `\n\n**Next:** ${nextStep}` : '';
    setCurrentDetails(`**${this.status.stage}**${plan}\n\n${detail}${recheck}${this.approvalsLine()}${next}`);
  }

  /** The next step, led while the plan awaits approval by the approvers who may still sign. */
  private nextStepNow(): string {
    const { stage, quorum, approvals } = this.status;
    if (!this.nextStep || stage !== 'awaiting_approval' || !quorum) return this.nextStep;
    const still = quorum.approvers.filter((name) => !(approvals ?? []).some((a) => a.by === name));
    return still.length > 0 ? `awaiting approval by ${still.join(', ')}: ${this.nextStep}` : this.nextStep;
  }

  /** While the plan awaits approval: who has signed, with their keys, and how many more of whom are needed. */
  private approvalsLine(): string {
    const { stage, quorum, approvals } = this.status;
    if (stage !== 'awaiting_approval' || !quorum) return '';
    return `\n\n**Approvals:** ${quorumProgressLine(quorum.required, approvals ?? [], quorum.approvers)}`;
  }

  finish(outcome: ChainOutcome, detail: string): ChainStatus {
    this.nextStep = '';
    delete this.status.next_look_at;
    this.status.outcome = outcome;
    this.status.stage = 'done';
    this.set(chainStageKey, 'done');
    this.set(chainOutcomeKey, outcome);
    this.publish();
    this.note(`${outcome}: ${detail}`);
    return this.status;
  }
}
