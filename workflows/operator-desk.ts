import { condition, setHandler } from '@temporalio/workflow';
import type {
  ApproveRequest,
  CancelRequest,
  ChainSettings,
  OperatorDecision,
  OperatorReply,
  RejectRequest,
} from '../lib/types';
import {
  approvePlanUpdate,
  approveSignal,
  cancelPlanUpdate,
  cancelSignal,
  rejectPlanUpdate,
  rejectSignal,
  retrySignal,
  statusQuery,
  symbolFreeSignal,
} from './messages';
import type { StatusBoard } from './status-board';

export type PersonDecision =
  | { kind: 'approve'; by: string; at: number; note?: string }
  | { kind: 'reject'; by: string; at: number; reason: string };

const NOT_AWAITING = 'plan is not awaiting approval';
const NOT_AN_APPROVER = 'not an approver';

function name(value: unknown): string {
  return typeof value === 'string' ? value.trim() : '';
}

/**
 * Everything people send a plan: retry, approve, reject, cancel (as signals, and as updates that answer at once),
 * and the `status` query. It keeps what they asked for until the chain is ready to act on it, so a decision that
 * arrives early is not lost.
 */
export class OperatorDesk {
  retryRequested = false;
  symbolFreed = false;
  cancel?: CancelRequest;
  private decision?: PersonDecision;
  /** Once the plan has asked for approval, decisions count only while it waits for one. */
  private asked = false;

  constructor(
    private readonly board: StatusBoard,
    private readonly settings: ChainSettings,
    private readonly record: (decision: OperatorDecision) => Promise<void>,
  ) {}

  /** Registers every handler; call before the workflow's first await. */
  register(): void {
    const status = this.board.status;
    setHandler(statusQuery, () => status);
    setHandler(retrySignal, (request) => {
      this.retryRequested = true;
      this.board.note(`retry requested by ${name(request?.by) || 'an operator'}`);
    });
    setHandler(symbolFreeSignal, () => {
      this.symbolFreed = true;
    });
    setHandler(approveSignal, (request) => this.decide({ kind: 'approve', ...request }).then(() => undefined));
    setHandler(rejectSignal, (request) => this.decide({ kind: 'reject', ...request }).then(() => undefined));
    setHandler(cancelSignal, (request) => this.requestCancel(request).then(() => undefined));
    setHandler(approvePlanUpdate, (request) => this.decide({ kind: 'approve', ...request }), {
      validator: (_request: ApproveRequest) => this.validateDecision(),
    });
    setHandler(rejectPlanUpdate, (request) => this.decide({ kind: 'reject', ...request }), {
      validator: (_request: RejectRequest) => this.validateDecision(),
    });
    setHandler(cancelPlanUpdate, (request) => this.requestCancel(request), {
      validator: (_request: CancelRequest) => {
        const refusal = this.cancelRefusal();
        if (refusal) throw new Error(refusal);
      },
    });
  }

  private validateDecision(): void {
    if (this.board.status.stage !== 'awaiting_approval') throw new Error(NOT_AWAITING);
  }

  private isApprover(by: string): boolean {
    return by !== '' && (this.settings.approvers.length === 0 || this.settings.approvers.includes(by));
  }

  private async decide(request: { kind: 'approve' | 'reject'; by: string; note?: string; reason?: string }) {
    const by = name(request.by);
    const verb = request.kind === 'approve' ? 'approval' : 'rejection';
    const refuse = async (why: string): Promise<OperatorReply> => {
      this.board.note(`${verb} by ${by || '(nobody)'} refused: ${why}`);
      await this.record({ plan_id: this.board.status.plan_id, decision: `${verb}_refused`, reason: `${by}: ${why}` });
      return { accepted: false, detail: why };
    };
    if (!this.isApprover(by)) return refuse(NOT_AN_APPROVER);
    if (this.settings.mode === 'testnet') return refuse('testnet mode: the Governor approves by itself');
    if (this.board.status.stage === 'done' || (this.asked && this.board.status.stage !== 'awaiting_approval')) {
      return refuse(NOT_AWAITING);
    }
    if (this.decision) return refuse(`already decided by ${this.decision.by}`);
    const at = Date.now();
    if (request.kind === 'approve') {
      const note = name(request.note);
      this.decision = { kind: 'approve', by, at, ...(note ? { note } : {}) };
      this.board.note(`approved by ${by}${note ? `: ${note}` : ''}`);
      await this.record({
        plan_id: this.board.status.plan_id,
        decision: 'approved',
        reason: `${by}${note ? `: ${note}` : ''}`,
      });
    } else {
      const reason = name(request.reason) || 'no reason given';
      this.decision = { kind: 'reject', by, at, reason };
      this.board.note(`rejected by ${by}: ${reason}`);
      await this.record({ plan_id: this.board.status.plan_id, decision: 'rejected', reason: `${by}: ${reason}` });
    }
    return { accepted: true, detail: `${request.kind === 'approve' ? 'approved' : 'rejected'} by ${by}` };
  }

  private cancelRefusal(): string | undefined {
    const stage = this.board.status.stage;
    if (stage === 'done') return 'plan has already ended';
    if (stage === 'execute') return 'the order may already be placed: the plan finishes';
    return undefined;
  }

  private async requestCancel(request: CancelRequest): Promise<OperatorReply> {
    const by = name(request.by);
    const reason = name(request.reason) || 'no reason given';
    const refusal = this.cancelRefusal() ?? (by === '' ? 'cancel needs a name (by)' : undefined);
    if (refusal) {
      this.board.note(`cancel by ${by || '(nobody)'} refused: ${refusal}`);
      return { accepted: false, detail: refusal };
    }
    this.cancel ??= { by, reason };
    this.board.note(`cancel requested by ${by}: ${reason}`);
    await this.record({ plan_id: this.board.status.plan_id, decision: 'cancel_requested', reason: `${by}: ${reason}` });
    return { accepted: true, detail: `cancel accepted from ${by}` };
  }

  /**
   * Waits for a person's decision at most `timeoutMs`; a decision that came early is taken at once. Undefined when
   * the time ran out or the plan was cancelled meanwhile.
   */
  async awaitDecision(timeoutMs: number): Promise<PersonDecision | undefined> {
    this.asked = true;
    await condition(() => this.decision !== undefined || this.cancel !== undefined, Math.max(1, timeoutMs));
    const decision = this.cancel ? undefined : this.decision;
    this.decision = undefined;
    return decision;
  }

  /** Sleeps until `until` (workflow time), or less when cancelled, or — with `wakeOnRetry` — retried. */
  async pause(until: number, wakeOnRetry = false): Promise<void> {
    if (wakeOnRetry) this.retryRequested = false;
    await condition(
      () => this.cancel !== undefined || (wakeOnRetry && this.retryRequested),
      Math.max(1, until - Date.now()),
    );
  }

  /** Waits for the plan ahead to let go of the symbol (it signals), or at most `timeoutMs`, or a cancel. */
  async awaitSymbol(timeoutMs: number): Promise<void> {
    await condition(() => this.symbolFreed || this.cancel !== undefined, Math.max(1, timeoutMs));
    this.symbolFreed = false;
  }
}
