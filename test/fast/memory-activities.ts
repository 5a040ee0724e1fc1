import { Context } from '@temporalio/activity';
import type { ChainActivities } from '../../activities';
import { decidePermit, type GovernorPolicy } from '../../activities/governor-policy';
import { createGovernorTurnActivities } from '../../activities/governor-turn';
import { decideP33 } from '../../activities/p33';
import type { SymbolHold } from '../../activities/symbol-lock';
import type {
  Admission,
  ApproveRequest,
  CarriedState,
  ChainRules,
  GovernorAnswer,
  GovernorPermit,
  GovernorRequest,
  Plan,
  PositionSnapshot,
  RejectRequest,
} from '../../contract/types';
import { Dec, formatDec } from '../../lib/decimal';
import { PlanError, admitInput } from '../../lib/plan';

/**
 * The chain's activities over in-memory state: a test double of activities/ for the fast tier (test/fast). The
 * Governor's and P3.3's decisions are the product's pure functions (decidePermit, decideP33); what is in memory is
 * the I/O around them: positions, permits, the Apply stream, the symbol lines, the audit, the carried state, orders.
 * Signatures are not Ed25519 here: a decision is valid when it carries {@link MemoryChain.sign}'s token.
 */
export const MEMORY_ACTIVITY_NAMES = [
  'governorTurn',
  'holdSymbol',
  'releaseSymbol',
  'dropWaiter',
  'publishPlan',
  'checkPosition',
  'peekPosition',
  'executePlan',
  'carryOver',
  'resumeCarried',
  'recordOperatorDecision',
  'verifyDecision',
] as const;
export type MemoryActivityName = (typeof MEMORY_ACTIVITY_NAMES)[number];
export type MemoryActivities = Pick<ChainActivities, MemoryActivityName>;

/** The worker's rules at their real lengths, testnet mode, the layers as local activities. */
export const FAST_RULES: ChainRules = {
  mode: 'testnet',
  permitTtlS: 60,
  permitMarginS: 5,
  recheckIntervalS: 30,
  planMaxAgeS: 600,
  approvalTimeoutS: 600,
  approvers: [],
  layerActivities: 'local',
  continueAsNewEvents: 2000,
};

export interface AuditLine {
  plan_id: string;
  layer: string;
  decision: string;
  reason: string;
}

export class MemoryChain {
  readonly rules: ChainRules;
  /** P3.3's tolerance, for every symbol. */
  tolerance = '0.001';
  /** The Governor's size limit (GOVERNOR_MAX_QTY); absent: none. */
  maxQty?: string;
  killSwitch = false;
  /** Each activity call, by name, in order. */
  readonly calls: MemoryActivityName[] = [];
  readonly audit: AuditLine[] = [];
  /** The Governor's last permit of each plan. */
  readonly permits = new Map<string, GovernorPermit>();
  /** The Apply stream: plan → entry id. */
  readonly applyStream = new Map<string, string>();
  readonly orders: Plan[] = [];
  /** The outcome of each plan that ended, as the worker's observer (its metrics) is told. */
  readonly ended: string[] = [];
  /** Real-time delays (ms) of a layer's successive calls: a layer that outlives its permit. */
  readonly slow: Partial<Record<MemoryActivityName, number[]>> = {};
  private readonly positions = new Map<string, { exchange: Dec; ledger: Dec }>();
  private readonly holders = new Map<string, string>();
  private readonly lines = new Map<string, string[]>();
  private readonly carried = new Map<string, { workflowId: string; runId: string; state: CarriedState }>();

  constructor(rules: Partial<ChainRules> = {}) {
    this.rules = { ...FAST_RULES, ...rules };
  }

  /** Sets the exchange's and the ledger's position of a symbol. */
  setPositions(symbol: string, exchange: string, ledger: string): void {
    this.positions.set(symbol, { exchange: new Dec(exchange), ledger: new Dec(ledger) });
  }

  /** The exchange's and the ledger's position of a symbol, as `exchange/ledger`. */
  position(symbol: string): string {
    const { exchange, ledger } = this.positionOf(symbol);
    return `${formatDec(exchange)}/${formatDec(ledger)}`;
  }

  /** Who holds the symbol ('' when nobody) and who waits in its line. */
  line(symbol: string): { holder: string; waiting: string[] } {
    return { holder: this.holders.get(symbol) ?? '', waiting: [...(this.lines.get(symbol) ?? [])] };
  }

  /** Another plan holds the symbol (as a plan between its permit and its fill would). */
  holdFor(symbol: string, planId: string): void {
    this.holders.set(symbol, planId);
  }

  count(name: MemoryActivityName): number {
    return this.calls.filter((call) => call === name).length;
  }

  /** The audit lines of a plan as `layer decision`. */
  auditOf(planId: string): string[] {
    return this.audit.filter((a) => a.plan_id === planId).map((a) => `${a.layer} ${a.decision}`);
  }

  /** A decision as an approver sends it, with the token the in-memory Governor accepts for them. */
  sign(planId: string, by: string, decision: { note?: string; reason?: string } = {}): ApproveRequest & RejectRequest {
    return {
      by,
      reason: decision.reason ?? '',
      ...(decision.note ? { note: decision.note } : {}),
      expires_at: Date.now() + 300_000,
      signature: this.token(planId, by),
    };
  }

  activities(): MemoryActivities {
    // The product's composition: the admission, the turn on the symbol, the permit once held.
    const turn = createGovernorTurnActivities(
      { config: this.rules },
      {
        admitPlan: (request) => Promise.resolve(this.admitPlan(request)),
        requestPermit: (request) => Promise.resolve(this.requestPermit(request)),
      },
      { holdSymbol: (plan, leaseMs) => Promise.resolve(this.hold(plan, leaseMs)) },
    );
    const calls: MemoryActivities = {
      governorTurn: (request) => turn.governorTurn(request),
      holdSymbol: (plan, leaseMs) => Promise.resolve(this.hold(plan, leaseMs)),
      releaseSymbol: (plan) => Promise.resolve(this.release(plan)),
      dropWaiter: (waiter) => Promise.resolve(this.leaveLine(waiter)),
      publishPlan: (plan) => Promise.resolve(this.publish(plan)),
      checkPosition: (plan) => {
        const view = this.p33(plan);
        this.record(plan.plan_id, 'p33', view.allow ? 'allowed' : 'denied', view.reason);
        return Promise.resolve({ ...view, plan_id: plan.plan_id, symbol: plan.symbol, evaluated_at: Date.now() });
      },
      peekPosition: (plan) => {
        const { discrepancy: _discrepancy, ...view } = this.p33(plan);
        return Promise.resolve(view);
      },
      executePlan: (plan) => Promise.resolve(this.execute(plan)),
      carryOver: ({ workflowId, runId, state }) => {
        this.carried.set(state.status.plan_id, { workflowId, runId, state });
        return Promise.resolve();
      },
      resumeCarried: ({ workflowId, previousRunId, planId }) => {
        const record = this.carried.get(planId);
        if (record?.workflowId === workflowId && record.runId === previousRunId) {
          return Promise.resolve({ carried: record.state });
        }
        this.record(planId, 'governor', 'carry_refused', 'no state from the previous run');
        return Promise.resolve({ carried: null, why: 'no state from the previous run' });
      },
      recordOperatorDecision: (entry) => {
        this.record(entry.plan_id, 'operator', entry.decision, entry.reason);
        return Promise.resolve();
      },
      verifyDecision: ({ plan_id, kind, request, signed = [] }) => {
        const by = request.by ?? '';
        const refusal = !this.rules.approvers.includes(by)
          ? `${by || '(nobody)'} is not an approver`
          : request.signature !== this.token(plan_id, by)
            ? 'the signature does not verify'
            : kind === 'approve' && signed.some((s) => s.by === by)
              ? `${by} has already signed`
              : undefined;
        const noun = kind === 'approve' ? 'approval' : 'rejection';
        const decision = refusal ? `${noun}_refused` : kind === 'approve' ? 'approved' : 'rejected';
        this.record(plan_id, 'operator', decision, refusal ?? by);
        return Promise.resolve(
          refusal ? { valid: false, why: refusal } : { valid: true, key_fingerprint: `memory:${by}` },
        );
      },
    };
    // Each call is counted, and waits first where the test made the layer slow (cancelled with the activity).
    const counted: Record<string, unknown> = {};
    for (const [name, fn] of Object.entries(calls) as [MemoryActivityName, (...args: never[]) => Promise<unknown>][]) {
      counted[name] = async (...args: never[]) => {
        this.calls.push(name);
        const delay = this.slow[name]?.shift();
        if (delay !== undefined) await Context.current().sleep(delay);
        return fn(...args);
      };
    }
    return counted as MemoryActivities;
  }

  private token(planId: string, by: string): string {
    return `memory-signature:${planId}:${by}`;
  }

  private record(plan_id: string, layer: string, decision: string, reason: string): void {
    this.audit.push({ plan_id, layer, decision, reason });
  }

  private positionOf(symbol: string): { exchange: Dec; ledger: Dec } {
    return this.positions.get(symbol) ?? { exchange: new Dec(0), ledger: new Dec(0) };
  }

  private snapshot(symbol: string, at: number): PositionSnapshot {
    const { exchange, ledger } = this.positionOf(symbol);
    return {
      exchange_amount: formatDec(exchange),
      ledger_amount: formatDec(ledger),
      tolerance: this.tolerance,
      taken_at: at,
    };
  }

  /** The Governor's admission: the product's check of the input, the rules this world's. */
  private admitPlan({ input, workflowId }: { input: unknown; workflowId: string }): Admission {
    try {
      return { admitted: true, plan: admitInput(input, workflowId), rules: this.rules };
    } catch (err) {
      if (!(err instanceof PlanError)) throw err;
      this.record(workflowId.replace(/^plan-/, ''), 'governor', 'denied', `invalid_plan: ${err.message}`);
      return { admitted: false, error: err.message, rules: this.rules };
    }
  }

  /** The Governor: the product's decision over the in-memory state; a permit lives PERMIT_TTL_S from `at`. */
  private requestPermit({ plan, at, approvals = [] }: GovernorRequest): GovernorAnswer {
    const policy: GovernorPolicy = { mode: this.rules.mode, ...(this.maxQty ? { maxQty: this.maxQty } : {}) };
    const production = this.rules.mode === 'production';
    const verified = approvals
      .filter((a) => a.signature === this.token(plan.plan_id, a.by))
      .map((a) => ({ ...a, key_fingerprint: `memory:${a.by}` }));
    const decision = decidePermit(plan, policy, {
      killSwitch: this.killSwitch,
      ...(production ? { positions: this.snapshot(plan.symbol, at) } : {}),
      ...(verified.length > 0 ? { approvals: verified } : {}),
    });
    if (decision.kind === 'ask') {
      this.record(plan.plan_id, 'governor', 'approval_requested', decision.reason);
      const snapshot = decision.shown ?? this.snapshot(plan.symbol, at);
      return {
        kind: 'approval_required',
        reason: decision.reason,
        snapshot,
        required: decision.required,
        counted: decision.counted,
      };
    }
    const permit: GovernorPermit = {
      plan_id: plan.plan_id,
      symbol: plan.symbol,
      granted: decision.kind === 'grant',
      mode: this.rules.mode,
      reason: decision.reason,
      ...(decision.kind === 'deny' ? { detail: decision.detail } : {}),
      approved_by: decision.kind === 'grant' ? decision.approvedBy : null,
      issued_at: at,
      expires_at: at + this.rules.permitTtlS * 1000,
    };
    this.permits.set(plan.plan_id, permit);
    this.record(plan.plan_id, 'governor', permit.granted ? 'granted' : 'denied', permit.reason);
    return { kind: 'permit', permit };
  }

  /** The symbol line: first come first served, the holder's own call extends its hold. */
  private hold(plan: Pick<Plan, 'plan_id' | 'symbol'>, leaseMs: number): SymbolHold {
    const holder = this.holders.get(plan.symbol);
    const line = this.lines.get(plan.symbol) ?? [];
    this.lines.set(plan.symbol, line);
    if (holder === plan.plan_id) return { held: true };
    if (!line.includes(plan.plan_id)) line.push(plan.plan_id);
    if (holder === undefined && line[0] === plan.plan_id) {
      line.shift();
      this.holders.set(plan.symbol, plan.plan_id);
      return { held: true };
    }
    return { held: false, holder: holder ?? '', leaseLeftMs: holder ? leaseMs : 0, ahead: line.indexOf(plan.plan_id) };
  }

  /** Lets go of the symbol (or leaves its line); the plan to wake next, '' when none or another plan holds it. */
  private release(plan: Pick<Plan, 'plan_id' | 'symbol'>): string {
    if (this.holders.get(plan.symbol) === plan.plan_id) this.holders.delete(plan.symbol);
    return this.leaveLine(plan);
  }

  private leaveLine(plan: Pick<Plan, 'plan_id' | 'symbol'>): string {
    const line = (this.lines.get(plan.symbol) ?? []).filter((waiting) => waiting !== plan.plan_id);
    this.lines.set(plan.symbol, line);
    return this.holders.has(plan.symbol) ? '' : (line[0] ?? '');
  }

  /** The Apply stream: one entry per plan, however often it is published. */
  private publish(plan: Plan) {
    const existing = this.applyStream.get(plan.plan_id);
    if (existing) return { stream_id: existing, published: false };
    const streamId = `${this.applyStream.size + 1}-0`;
    this.applyStream.set(plan.plan_id, streamId);
    this.record(plan.plan_id, 'apply', 'published', streamId);
    return { stream_id: streamId, published: true };
  }

  private p33(plan: Plan) {
    const { exchange, ledger } = this.positionOf(plan.symbol);
    const decision = decideP33(plan, {
      exchangeAmount: exchange,
      ledgerAmount: ledger,
      tolerance: new Dec(this.tolerance),
    });
    return {
      allow: decision.allow,
      reason: decision.reason,
      exchange_amount: formatDec(exchange),
      ledger_amount: formatDec(ledger),
      discrepancy: formatDec(decision.discrepancy),
      tolerance: this.tolerance,
    };
  }

  /** Execute: refuses without a granted permit; fills the whole order at 1, moves both positions, lets go. */
  private execute(plan: Plan) {
    const permit = this.permits.get(plan.plan_id);
    if (!permit?.granted) {
      return { placed: false as const, reason: 'permit_missing' as const, detail: 'no granted permit' };
    }
    this.orders.push(plan);
    const { exchange, ledger } = this.positionOf(plan.symbol);
    const signed = plan.side === 'SELL' ? new Dec(plan.qty).neg() : new Dec(plan.qty);
    this.positions.set(plan.symbol, { exchange: exchange.add(signed), ledger: ledger.add(signed) });
    this.record(plan.plan_id, 'execute', 'FILLED', `memory-${plan.plan_id}`);
    const next = this.release(plan);
    return {
      placed: true as const,
      execution: {
        order_id: `memory-${plan.plan_id}`,
        client_order_id: `pc-${plan.plan_id}`,
        status: 'FILLED',
        side: plan.side,
        filled_qty: plan.qty,
        avg_price: '1',
        executed_at: Date.now(),
        requested_qty: plan.qty,
      },
      filled: 'all' as const,
      ledger_amount: formatDec(ledger.add(signed)),
      next_in_line: next,
    };
  }
}
