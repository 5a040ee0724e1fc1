import { ApplicationFailure, condition, log, setHandler } from '@temporalio/workflow';
import type {
  Approval,
  ApproveRequest,
  CancelRequest,
  DecisionVerdict,
  OperatorDecision,
  OperatorReply,
  PositionSnapshot,
  RejectRequest,
} from '../contract/types';
import {
  approvePlanUpdate,
  approveSignal,
  cancelPlanUpdate,
  cancelSignal,
  rejectPlanUpdate,
  rejectSignal,
  retrySignal,
  statusQuery,
} from '../contract/messages';
import type { StatusBoard } from './status-board';

/**
 * An update that the plan refused fails, with the reason (the Web UI shows it failed, not completed); the refusal
 * is already in the timeline and the audit stream. Signals have no answer, so they do not go through this.
 */
async function failIfRefused(reply: Promise<OperatorReply>): Promise<OperatorReply> {
  const answer = await reply;
  if (!answer.accepted) throw refusal(answer.detail);
  return answer;
}

/**
 * A refusal as the operator sees it (the CLI's answer, the update's failure in the Web UI): the reason, with no stack
 * trace, which would only show the workflow's source paths.
 */
function refusal(why: string): ApplicationFailure {
  const failure = ApplicationFailure.create({ message: why, type: 'Refused', nonRetryable: true });
  failure.stack = '';
  return failure;
}

/** A person's rejection, accepted by the Governor: who, when, why, and the signature that proves it. */
export interface PersonRejection {
  kind: 'reject';
  by: string;
  at: number;
  reason: string;
  expires_at: number;
  signature: string;
}

/** A decision as it arrived: every field a claim, typed only as far as its shape. */
type DecisionClaim = Partial<ApproveRequest & RejectRequest>;

/** What the desk asks of the activities: the audit record, and the Governor's check of a signed decision. */
export interface DeskCalls {
  record(decision: OperatorDecision): Promise<void>;
  verify(request: {
    plan_id: string;
    kind: 'approve' | 'reject';
    request: DecisionClaim;
    snapshot: PositionSnapshot;
    signed: { by: string }[];
  }): Promise<DecisionVerdict>;
}

const NOT_AWAITING = 'plan is not awaiting approval';
const ENDED = 'plan has already ended';

function text(value: unknown): string {
  return typeof value === 'string' ? value.trim() : '';
}

/** A value copied from a signal into the status and the logs, cut to a length a person reads. */
function bounded(value: string, max = 80): string {
  return value.length > max ? `${value.slice(0, max)}…` : value;
}

/** Keeps of a payload only fields of the right type: a signal's payload can be anything. */
function claimOf(request: unknown): DecisionClaim {
  const raw = request !== null && typeof request === 'object' ? (request as Record<string, unknown>) : {};
  const claim: DecisionClaim = { by: text(raw.by) };
  if (typeof raw.note === 'string') claim.note = raw.note;
  if (typeof raw.reason === 'string') claim.reason = raw.reason;
  if (typeof raw.expires_at === 'number') claim.expires_at = raw.expires_at;
  if (typeof raw.signature === 'string') claim.signature = raw.signature;
  return claim;
}

/**
 * Everything people send a plan: retry, approve, reject, cancel (as signals, and as updates that answer at once),
 * Temporal's own cancellation request, and the `status` query. A decision counts only once the Governor has
 * verified its signature against the positions shown; every refusal is noted in the timeline and audited. What
 * machines send (the symbol let go, the positions changed, a deploy's wake) is the wake-ups' (wake-ups.ts).
 */
export class OperatorDesk {
  /** A retry came in since the blocked plan last looked (taken as acted on before each look). */
  retryRequested = false;
  cancel?: CancelRequest;
  private rejection?: PersonRejection;
  /** While the plan awaits a decision: the positions the approvers are shown, which their signatures cover. */
  private shown?: PositionSnapshot;
  /** While the plan awaits a decision: how many distinct approvers must sign (the plan's approvals hold who has). */
  private required = 1;
  /** An approval came in since the plan last began to wait: news a run must act on before it continues as new. */
  private approvalNews = false;

  constructor(
    private readonly board: StatusBoard,
    private readonly calls: DeskCalls,
  ) {}

  /**
   * Registers every handler; call before the workflow's first await. `cancelRequested` is the root scope's: a
   * Temporal cancellation (Web UI, `temporal workflow cancel`) is taken as a cancel like `permit-chain cancel`.
   */
  register(cancelRequested: Promise<never>): void {
    const status = this.board.status;
    setHandler(statusQuery, () => status);
    setHandler(retrySignal, (request) => {
      this.retryRequested = true;
      const by = bounded(text(request?.by)) || 'an operator';
      const retryId = bounded(text(request?.retry_id));
      // The plan's next look (at once when blocked, or when it blocks) says in `last_retry` that it has looked.
      if (status.stage !== 'done') status.last_retry = { by, ...(retryId ? { retry_id: retryId } : {}), looked: false };
      this.board.note(`retry requested by ${by}`);
      log.info('operator: retry requested', { who: by, stage: status.stage });
    });
    setHandler(approveSignal, (request) => this.decide('approve', request).then(() => undefined));
    setHandler(rejectSignal, (request) => this.decide('reject', request).then(() => undefined));
    setHandler(cancelSignal, (request) => this.requestCancel(request).then(() => undefined));
    setHandler(approvePlanUpdate, (request) => failIfRefused(this.decide('approve', request)), {
      validator: (_request: ApproveRequest) => this.validateDecision(),
    });
    setHandler(rejectPlanUpdate, (request) => failIfRefused(this.decide('reject', request)), {
      validator: (_request: RejectRequest) => this.validateDecision(),
    });
    setHandler(cancelPlanUpdate, (request) => failIfRefused(this.requestCancel(request)), {
      validator: (_request: CancelRequest) => {
        const refused = this.cancelRefusal();
        if (refused) throw refusal(refused);
      },
    });
    cancelRequested.catch(() => {
      this.background.push(this.requestCancel({ by: 'temporal', reason: 'cancellation requested through Temporal' }));
    });
  }

  /** Work started outside a message handler (Temporal's cancellation), which the plan must see done before it ends. */
  private readonly background: Promise<unknown>[] = [];

  /** Waits for what the desk does outside handlers; the workflow also waits for `allHandlersFinished`. */
  async settled(): Promise<void> {
    await Promise.all(this.background);
  }

  private validateDecision(): void {
    if (this.board.status.stage === 'done') throw refusal(ENDED);
    if (!this.shown) throw refusal(NOT_AWAITING);
  }

  private async decide(kind: 'approve' | 'reject', request: unknown): Promise<OperatorReply> {
    const claim = claimOf(request);
    const by = bounded(claim.by ?? '') || '(nobody)';
    const verb = kind === 'approve' ? 'approval' : 'rejection';
    const refuse = async (why: string, audited = false): Promise<OperatorReply> => {
      this.board.note(`${verb} by ${by} refused: ${why}`);
      log.warn(`operator: ${verb} refused`, { who: by, why: bounded(why, 200) });
      if (!audited) {
        await this.calls.record({
          plan_id: this.board.status.plan_id,
          decision: `${verb}_refused`,
          reason: `${by}: ${why}`,
        });
      }
      return { accepted: false, detail: why };
    };
    const shown = this.shown;
    if (!shown) return refuse(this.board.status.stage === 'done' ? ENDED : NOT_AWAITING);
    const settled = this.decidedBy();
    if (settled) return refuse(`already decided by ${settled}`);
    const verdict = await this.calls.verify({
      plan_id: this.board.status.plan_id,
      kind,
      request: claim,
      snapshot: shown,
      signed: this.approvals().map((a) => ({ by: a.by })),
    });
    if (!verdict.valid) return refuse(verdict.why, true);
    // Another decision may have been taken, or the wait ended, while the Governor checked this one.
    const taken = this.decidedBy();
    if (taken) return refuse(`already decided by ${taken}`);
    if (this.shown !== shown) return refuse(NOT_AWAITING);
    const signed = {
      by: claim.by ?? '',
      at: Date.now(),
      expires_at: claim.expires_at ?? 0,
      signature: claim.signature ?? '',
    };
    if (kind === 'reject') {
      const reason = text(claim.reason) || 'no reason given';
      this.rejection = { kind, ...signed, reason: claim.reason ?? '' };
      this.board.note(`rejected by ${by}: ${reason}`);
      log.info('operator: rejection accepted', { who: by, reason: bounded(reason, 200) });
      return { accepted: true, detail: `rejected by ${by}` };
    }
    // Two of the same approver's signatures checked side by side: the first one in counts.
    if (this.approvals().some((a) => a.by === signed.by)) {
      return refuse(`${by} has already signed: each approver counts once`);
    }
    // The note exactly as signed: the Governor verifies the signature again when it grants.
    const note = claim.note ?? '';
    const approval: Approval = {
      ...signed,
      ...(note !== '' ? { note } : {}),
      snapshot: shown,
      ...(verdict.key_fingerprint ? { key_fingerprint: verdict.key_fingerprint } : {}),
    };
    const approvals = [...this.approvals(), approval];
    this.holdApprovals(approvals);
    this.approvalNews = true;
    const count = this.required > 1 ? ` (${approvals.length} of ${this.required})` : '';
    this.board.note(`approved by ${by}${text(note) ? `: ${text(note)}` : ''}${count}`);
    log.info('operator: approval accepted', {
      who: by,
      signed: approvals.length,
      required: this.required,
      ...(verdict.key_fingerprint ? { key_fingerprint: verdict.key_fingerprint } : {}),
    });
    return { accepted: true, detail: `approved by ${by}${count}` };
  }

  /** The approvals the plan holds, in signing order. */
  private approvals(): Approval[] {
    return this.board.status.approvals ?? [];
  }

  /** Sets the approvals the plan holds (`approval` is the first of them, for readers of one approval). */
  holdApprovals(approvals: Approval[]): void {
    const status = this.board.status;
    if (approvals.length === 0) {
      delete status.approvals;
      delete status.approval;
      return;
    }
    status.approvals = approvals;
    status.approval = approvals[0];
  }

  /** Who decided the wait: the approver who rejected, or the quorum that approved; undefined while open. */
  private decidedBy(): string | undefined {
    if (this.rejection) return this.rejection.by;
    const approvals = this.approvals();
    return this.shown && approvals.length >= this.required ? approvals.map((a) => a.by).join(', ') : undefined;
  }

  private cancelRefusal(): string | undefined {
    const stage = this.board.status.stage;
    if (stage === 'done') return ENDED;
    if (stage === 'execute') return 'the order may already be placed: the plan finishes';
    return undefined;
  }

  private async requestCancel(request: unknown): Promise<OperatorReply> {
    const claim = request !== null && typeof request === 'object' ? (request as Record<string, unknown>) : {};
    const by = text(claim.by);
    const reason = text(claim.reason) || 'no reason given';
    const refusal = this.cancelRefusal() ?? (by === '' ? 'cancel needs a name (by)' : undefined);
    if (refusal) {
      this.board.note(`cancel by ${by || '(nobody)'} refused: ${refusal}`);
      log.warn('operator: cancel refused', { who: bounded(by) || '(nobody)', why: refusal });
      return { accepted: false, detail: refusal };
    }
    this.cancel ??= { by, reason };
    this.board.note(`cancel requested by ${by}: ${reason}`);
    log.info('operator: cancel requested', { who: bounded(by), reason: bounded(reason, 200) });
    await this.calls.record({
      plan_id: this.board.status.plan_id,
      decision: 'cancel_requested',
      reason: `${by}: ${reason}`,
    });
    return { accepted: true, detail: `cancel accepted from ${by}` };
  }

  /**
   * Shows the approvers `shown` and waits at most `timeoutMs` for `required` distinct verified approvals (the plan's
   * approvals held already count) or one verified rejection. `'approved'` once the quorum has signed; the rejection;
   * undefined when the time ran out or the plan was cancelled meanwhile; `'wake'` when `wake()` came true first (the
   * plan continues as new): the approvers are still shown `shown` then, so that a decision arriving meanwhile is
   * still taken.
   */
  async awaitDecision(
    shown: PositionSnapshot,
    required: number,
    timeoutMs: number,
    wake: () => boolean = () => false,
  ): Promise<'approved' | PersonRejection | undefined | 'wake'> {
    this.shown = shown;
    this.required = required;
    this.approvalNews = false;
    this.board.publish();
    const decided = () => this.rejection !== undefined || this.approvals().length >= required;
    await condition(() => decided() || this.cancel !== undefined || wake(), Math.max(1, timeoutMs));
    if (!decided() && this.cancel === undefined && wake()) return 'wake';
    this.shown = undefined;
    const rejection = this.rejection;
    this.rejection = undefined;
    if (this.cancel) return undefined;
    if (rejection) return rejection;
    return decided() ? 'approved' : undefined;
  }

  /** Sleeps until `until` (workflow time), or less when cancelled. */
  async pause(until: number): Promise<void> {
    this.board.publish();
    await condition(() => this.cancel !== undefined, Math.max(1, until - Date.now()));
  }

  /**
   * Whether a person sent something that the plan, waiting where it does, must act on before it may continue as new:
   * a cancel; a retry (blocked); a decision or an approval towards it (awaiting approval).
   */
  hasNews(waiting: 'blocked' | 'awaiting_approval'): boolean {
    if (this.cancel !== undefined) return true;
    return waiting === 'blocked' ? this.retryRequested : this.rejection !== undefined || this.approvalNews;
  }
}
