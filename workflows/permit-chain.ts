import {
  ActivityFailure,
  ApplicationFailure,
  CancellationScope,
  ContinueAsNew,
  TimeoutFailure,
  allHandlersFinished,
  condition,
  getExternalWorkflowHandle,
  log,
  makeContinueAsNewFunc,
  proxyActivities,
  proxyLocalActivities,
  workflowInfo,
} from '@temporalio/workflow';
import type { ChainActivities } from '../activities';
import type { GovernorTurn } from '../activities/governor-turn';
import type { P33View } from '../activities/p33';
import type { SymbolHold } from '../activities/symbol-lock';
import { WAITER_REFRESH_MS } from '../lib/symbol-line';
import type {
  Admission,
  CarriedState,
  ChainInput,
  ChainOutcome,
  ChainRules,
  ChainStatus,
  GovernorAnswer,
  GovernorPermit,
  Plan,
} from '../contract/types';
import { planWorkflowId, symbolFreeSignal } from '../contract/messages';
import { OperatorDesk } from './operator-desk';
import { StatusBoard, awaitingNextStep, blockedDetail, blockedNextStep, clockTime } from './status-board';

/** Redis round trips take milliseconds; a layer that has not answered in this long is retried. */
const LAYER_ATTEMPT_TIMEOUT_MS = 10_000;
/**
 * Execute talks to the exchange: an attempt may look the order up, send it and look again, each request allowed
 * 10 s (activities/exchange/binance.ts). A retry never sends twice (the adapter's sent marker), so this only bounds
 * how long a hung attempt is waited for.
 */
const EXECUTE_ATTEMPT_TIMEOUT_MS = 60_000;
/** Execute heartbeats every 2 s (activities/index.ts): a worker killed mid-Execute is noticed in this long. */
const EXECUTE_HEARTBEAT_TIMEOUT_MS = 10_000;
/**
 * Short backoff: the permit's life is measured in seconds, so retries must fit many times into it. Not retried:
 * `CorruptAmount` (a stored amount that is not a decimal), `LedgerConflict` (a ledger that matches neither side
 * of a recorded fill; activities/index.ts) and `exchange_answer_refused` (an exchange's answer about an order that
 * failed its check twice; activities/exchange/answer.ts), which need a person, not time.
 */
const LAYER_RETRY = {
  initialInterval: '200ms',
  backoffCoefficient: 2,
  maximumInterval: '2s',
  nonRetryableErrorTypes: ['CorruptAmount', 'LedgerConflict', 'exchange_answer_refused'],
};
/**
 * A blocked plan is woken by the position watcher (which sweeps blocked symbols every RECHECK_INTERVAL_S) or by a
 * `retry`; it also looks by itself every this many intervals, for a deployment where no watcher runs.
 */
const BLOCKED_FALLBACK_INTERVALS = 10;
/**
 * A plan waiting long (blocked, or awaiting a person) continues as a new run before its history reaches this many
 * events (the worker's CONTINUE_AS_NEW_EVENTS, this when its rules do not say): a plan blocked for days would
 * otherwise grow its history by some 6 events per look, towards Temporal's limit of 51,200.
 */
const CONTINUE_AS_NEW_EVENTS = 2000;
/** Events a run may still add between deciding to continue and its last event (a look, the carried state, the end). */
const CONTINUE_AS_NEW_RESERVE = 50;

const regular = proxyActivities<ChainActivities>({ startToCloseTimeout: LAYER_ATTEMPT_TIMEOUT_MS, retry: LAYER_RETRY });
const local = proxyLocalActivities<ChainActivities>({
  startToCloseTimeout: LAYER_ATTEMPT_TIMEOUT_MS,
  retry: LAYER_RETRY,
});

/** Marks a layer call that ran out of permit life: the chain goes back to the Governor. */
const PERMIT_RAN_OUT = Symbol('permit ran out');

/** How a plan ends, when it ends before executing. */
interface Ending {
  outcome: ChainOutcome;
  detail: string;
}

/** The options of one layer call: its summary, and timeouts from what remains until `deadline` (ms), if any. */
function options(summary: string, deadline?: number) {
  if (deadline === undefined) return { summary, startToCloseTimeout: LAYER_ATTEMPT_TIMEOUT_MS, retry: LAYER_RETRY };
  const remaining = Math.max(1, deadline - Date.now());
  return {
    summary,
    scheduleToCloseTimeout: remaining,
    startToCloseTimeout: Math.min(remaining, LAYER_ATTEMPT_TIMEOUT_MS),
    retry: LAYER_RETRY,
  };
}

/** A timeout of a regular activity comes wrapped in an ActivityFailure; a local activity's comes as it is. */
function isTimeout(err: unknown): boolean {
  return err instanceof TimeoutFailure || (err instanceof ActivityFailure && err.cause instanceof TimeoutFailure);
}

/** Runs a layer within the permit's life; a timeout caused by that deadline means "ask the Governor again". */
async function withinPermit<T>(deadline: number, call: () => Promise<T>): Promise<T | typeof PERMIT_RAN_OUT> {
  if (Date.now() >= deadline) return PERMIT_RAN_OUT;
  try {
    return await call();
  } catch (err) {
    if (isTimeout(err)) return PERMIT_RAN_OUT;
    throw err;
  }
}

/**
 * One plan: its turn on the symbol → Governor (P3.2) → Apply (P3) → P3.3 → Execute, then the next plan on the
 * symbol. The Governor first admits the input (the plan alone, validated where it runs) and hands over the
 * worker's rules; in production mode a person approves, with a signature the Governor verifies. A P3.3 denial
 * blocks the plan at rest: it holds nothing and does nothing until the positions change (the position watcher),
 * a `retry`, or a rare fallback look, and asks for its permits again only once they agree; it ends `expired` after
 * PLAN_MAX_AGE_S. A Temporal cancellation request is a cancel: before the order the plan ends `cancelled`, after it
 * the fill still reaches the ledger.
 */
export async function permitChain(input: ChainInput): Promise<ChainStatus> {
  const cancelRequested = CancellationScope.current().cancelRequested;
  // The chain itself never stops half-way: a cancellation request reaches it as a cancel through the desk.
  return CancellationScope.nonCancellable(() => runPlan(input, cancelRequested));
}

async function runPlan(input: unknown, cancelRequested: Promise<never>): Promise<ChainStatus> {
  const workflowId = workflowInfo().workflowId;
  const board = new StatusBoard(workflowId.replace(/^plan-/, ''));
  const status = board.status;
  // Non-cancellable: a Temporal cancellation request must still get its audit line and its refusals checked.
  const desk = new OperatorDesk(board, {
    record: (entry) =>
      CancellationScope.nonCancellable(() =>
        local.recordOperatorDecision.executeWithOptions(options(`operator: ${entry.decision}`), [entry]),
      ),
    verify: (request) =>
      CancellationScope.nonCancellable(() =>
        local.verifyDecision.executeWithOptions(
          options(`Governor: verify ${request.kind} by ${request.request.by || '(nobody)'}`),
          [request],
        ),
      ),
  });
  desk.register(cancelRequested);

  // The Governor's admission: the plan checked where it runs, and the rules it runs under (the worker's). The same
  // call takes the plan's turn on its symbol and asks for its permit (not for a continued run, which goes back to
  // where its predecessor waited).
  const at = Date.now();
  const take = workflowInfo().continuedFromExecutionRunId === undefined;
  const turn = await local.governorTurn.executeWithOptions(
    options(take ? 'Governor: admit plan, its turn, a permit' : 'Governor: admit plan'),
    [{ admit: { input, workflowId }, take, permit: true, at }],
  );
  if (!turn.admission) throw new Error('governorTurn: no admission for an input to admit');
  const admission: Admission = turn.admission;
  let ending: Ending;
  if (admission.admitted) {
    board.admit(admission.plan, admission.rules.mode);
    const carried = await resume(admission.plan, board);
    ending = await new Chain(admission.plan, admission.rules, board, desk, { turn, at }, carried).run();
  } else {
    status.mode = admission.rules.mode;
    status.last_error = admission.error;
    ending = { outcome: 'denied', detail: `invalid plan: ${admission.error}` };
  }
  board.finish(ending.outcome, ending.detail);
  await desk.settled();
  await condition(allHandlersFinished);
  return status;
}

/**
 * A run that continues a plan's earlier run takes the state that run left (activities/carry.ts: only if that run
 * wrote it); a first run, or one whose state is refused, starts the plan from the beginning.
 */
async function resume(plan: Plan, board: StatusBoard): Promise<CarriedState | undefined> {
  const { workflowId, continuedFromExecutionRunId: previousRunId } = workflowInfo();
  if (previousRunId === undefined) return undefined;
  const resumption = await local.resumeCarried.executeWithOptions(options('carried state: take over'), [
    { workflowId, previousRunId, planId: plan.plan_id },
  ]);
  if (!resumption.carried) {
    board.note(`continued from run ${previousRunId}, but its state was not taken (${resumption.why}): starting over`);
    return undefined;
  }
  board.resume(resumption.carried.status);
  return resumption.carried;
}

/** The Governor's answer to the call that admitted the plan, and the workflow's time when it was asked. */
interface FirstTurn {
  turn: GovernorTurn;
  at: number;
}

/** The chain of one admitted plan, step by step; each step says in the plan's status where it is. */
class Chain {
  private readonly layers: typeof local | typeof regular;
  private readonly planDeadline: number;
  private readonly permitLifeMs: number;
  /** The permit in hand and when its life for the chain ends (the workflow's clock, from before the request). */
  private permit?: { permit: GovernorPermit; deadline: number };
  /** Whether the plan holds its symbol or stands in its line: either way it must let go when it leaves. */
  private inLine = false;
  /** The layer called last: a local activity's failure does not name it, the plan's error should. */
  private step = '';
  /** When the plan's first run started: its age counts from there, across runs. */
  private readonly startedAt: number;
  /** The admitting call's turn, until the plan acts on it. */
  private firstTurn?: FirstTurn;
  constructor(
    private readonly plan: Plan,
    private readonly rules: ChainRules,
    private readonly board: StatusBoard,
    private readonly desk: OperatorDesk,
    /** The admitting call's answer: its turn on the symbol, taken already, and its permit. */
    firstTurn: FirstTurn,
    /** Where an earlier run of the plan left it, when this run continues it. */
    private readonly carried?: CarriedState,
  ) {
    this.firstTurn = firstTurn;
    // The admitting call took the plan's turn: held or in line, the plan lets go whatever ends it first (a cancel).
    this.inLine = firstTurn.turn.hold !== undefined;
    this.layers = rules.layerActivities === 'local' ? local : regular;
    // A carried start can only make the plan older, never younger.
    this.startedAt = Math.min(carried?.started_at ?? Infinity, workflowInfo().startTime.getTime());
    this.planDeadline = this.startedAt + rules.planMaxAgeS * 1000;
    this.permitLifeMs = (rules.permitTtlS - rules.permitMarginS) * 1000;
  }

  async run(): Promise<Ending> {
    try {
      return await this.steps();
    } catch (err) {
      // Not an ending: the plan goes on in its next run.
      if (err instanceof ContinueAsNew) throw err;
      this.board.status.last_error = errorMessage(err, this.step);
      return { outcome: isTimeout(err) ? 'expired' : 'failed', detail: this.board.status.last_error };
    } finally {
      // Whatever happened, the symbol is not left held by this plan (the lease would free it, but later).
      await this.letGo().catch(() => undefined);
    }
  }

  private cancelled(): Ending | undefined {
    const cancel = this.desk.cancel;
    return cancel && { outcome: 'cancelled', detail: `cancelled by ${cancel.by}: ${cancel.reason}` };
  }

  private tooOld(state = 'not done'): Ending | undefined {
    if (Date.now() < this.planDeadline) return undefined;
    return { outcome: 'expired', detail: `${state} after ${this.rules.planMaxAgeS}s` };
  }

  /** The seed's table: turn on the symbol → Governor → Apply → P3.3 → Execute; a block or a lost permit loops. */
  private async steps(): Promise<Ending> {
    const resumed = await this.resumeWait();
    if (resumed) return resumed;
    for (;;) {
      const stop = this.cancelled() ?? this.tooOld();
      if (stop) return stop;
      const permit = await this.turnAndPermit();
      if (permit === 'again') continue;
      if (permit !== 'held') return permit;
      if ((await this.publish()) === PERMIT_RAN_OUT) continue;
      const positions = await this.checkPositions();
      if (positions === PERMIT_RAN_OUT) continue;
      if (positions !== 'agree') {
        const unblocked = await this.restWhileBlocked(positions);
        if (unblocked) return unblocked;
        continue;
      }
      const executed = await this.execute();
      if (executed) return executed;
    }
  }

  /** A continued run goes back to where its predecessor waited; returns an ending, or undefined to go on. */
  private async resumeWait(): Promise<Ending | undefined> {
    const waiting = this.carried?.waiting;
    if (!waiting) return undefined;
    if (waiting.stage === 'blocked') return this.restWhileBlocked(waiting.denial, true);
    const ask = { shown: waiting.shown, stale: waiting.stale, required: waiting.required ?? 1 };
    const answer = await this.awaitApproval(ask, waiting.until);
    return answer === 'again' ? undefined : answer;
  }

  /**
   * Whether a new build is current that this run should move onto: the deployment's target version is no longer the
   * one the run is pinned to, and UPGRADE_ON_CONTINUE_AS_NEW is on. Always false on an unversioned worker.
   */
  private upgradeDue(): boolean {
    return this.rules.upgradeOnContinueAsNew === true && workflowInfo().targetWorkerDeploymentVersionChanged;
  }

  /** Whether this run should continue as new where it waits: its history is long, or a new build is current. */
  private shouldContinue(): boolean {
    const info = workflowInfo();
    const limit = (this.rules.continueAsNewEvents ?? CONTINUE_AS_NEW_EVENTS) - CONTINUE_AS_NEW_RESERVE;
    return info.continueAsNewSuggested || info.historyLength >= limit || this.upgradeDue();
  }

  /**
   * Continues the plan as a new run when it should (a long history, or a new build current), at a point where it
   * holds nothing: no symbol, no permit, no order between placing and recording, and no message handler running. The
   * state goes through Redis (carryOver), the input stays the plan alone, the search attributes go along. Returns
   * when it should not (false), or when a message came in that this run must act on first ('news'; it continues at
   * its next wait).
   */
  private async continueIfDue(waiting: CarriedState['waiting']): Promise<false | 'news'> {
    if (!this.shouldContinue() || this.inLine) return false;
    await condition(allHandlersFinished);
    if (this.desk.hasNews(waiting.stage)) return 'news';
    const info = workflowInfo();
    // Decided once, for the note and the continue alike: a run told of a new build that continues without
    // AUTO_UPGRADE declines that build for good (its next run is not told again), even when it continues for length.
    const upgrade = this.upgradeDue();
    const state: CarriedState = {
      started_at: this.startedAt,
      status: this.board.carried(
        upgrade
          ? 'a new build is current: continued as new onto it'
          : `continued as a new run after ${info.historyLength} events`,
      ),
      waiting,
    };
    this.step = 'carryOver';
    await this.layers.carryOver.executeWithOptions(options('carried state: hand over'), [
      { workflowId: info.workflowId, runId: info.runId, state },
    ]);
    if (this.desk.hasNews(waiting.stage)) return 'news';
    // A handler started, or the target moved, while the state was handed over: this run continues at its next wait.
    if (!allHandlersFinished() || this.upgradeDue() !== upgrade) return false;
    this.board.publish();
    if (upgrade)
      log.info('deploy: continuing as new onto the current build', {
        from: info.currentDeploymentVersion?.buildId ?? '',
      });
    // Without them the next run would start with none: the Web UI's filters would lose the plan.
    const next = makeContinueAsNewFunc<typeof permitChain>({
      typedSearchAttributes: workflowInfo().typedSearchAttributes,
      ...(upgrade ? { initialVersioningBehavior: 'AUTO_UPGRADE' as const } : {}),
    });
    return next({ plan: this.plan });
  }

  /**
   * The plan's turn on its symbol and, once it holds it, the Governor's answer, in one call (governorTurn): waiting
   * its turn in arrival order, woken by the plan before it, never polling. A permit still in hand is not asked again.
   */
  private async turnAndPermit(): Promise<'held' | 'again' | Ending> {
    const { status } = this.board;
    let waiting = false;
    for (;;) {
      let { turn, at } = this.firstTurn ?? {};
      this.firstTurn = undefined;
      if (!turn?.hold || at === undefined) {
        const stop = this.cancelled() ?? this.tooOld();
        if (stop) return stop;
        const needPermit = !(this.permit && Date.now() < this.permit.deadline);
        // The permit's life is counted on the workflow's clock from before the request: never later than the
        // Governor's own issue time, and immune to skew between worker and server clocks.
        at = Date.now();
        this.step = 'governorTurn';
        turn = await this.layers.governorTurn.executeWithOptions(
          needPermit
            ? {
                ...options(`Governor: turn on ${this.plan.symbol}, permit`, this.planDeadline),
                startToCloseTimeout: LAYER_ATTEMPT_TIMEOUT_MS,
              }
            : options(`symbol: take ${this.plan.symbol}`),
          [
            {
              plan: this.plan,
              take: true,
              permit: needPermit,
              at,
              ...(status.approvals ? { approvals: status.approvals } : {}),
            },
          ],
        );
      }
      this.inLine = true;
      const hold = turn.hold;
      if (!hold) throw new Error('governorTurn: no turn taken');
      if (hold.held) {
        if (!turn.answer) return 'held';
        status.attempts += 1;
        this.board.enter('governor', `asked the Governor for a permit (attempt ${status.attempts})`);
        return this.onAnswer(turn.answer, at);
      }
      await this.waitInLine(hold, waiting);
      waiting = true;
    }
  }

  /**
   * Takes the plan's symbol, waiting its turn in arrival order: woken by the plan before it, never polling. `toLook`:
   * a blocked plan taking it only to look at the positions (it stays blocked while it waits).
   */
  private async takeTurn(toLook = false): Promise<'held' | Ending> {
    let waiting = false;
    for (;;) {
      const stop = this.cancelled() ?? this.tooOld();
      if (stop) return stop;
      // The lease covers the permit the plan asks for next; a crashed holder frees the symbol when it runs out.
      const leaseMs = (this.rules.permitTtlS + this.rules.permitMarginS) * 1000;
      this.step = 'holdSymbol';
      const hold = await this.layers.holdSymbol.executeWithOptions(options(`symbol: take ${this.plan.symbol}`), [
        this.plan,
        leaseMs,
      ]);
      this.inLine = true;
      if (hold.held) return 'held';
      await this.waitInLine(hold, waiting, toLook);
      waiting = true;
    }
  }

  /**
   * Shows where the plan stands in its symbol's line (a timeline line the first time, the details after) and waits
   * to be woken. The plan letting go signals the next in line; the timer only takes a symbol whose holder crashed,
   * and shows the line that this plan is alive.
   */
  private async waitInLine(
    hold: Exclude<SymbolHold, { held: true }>,
    waitedBefore: boolean,
    toLook = false,
  ): Promise<void> {
    const detail =
      `in line for ${this.plan.symbol}${toLook ? ' to look at the positions' : ''}: ` +
      (hold.holder ? `plan ${hold.holder} holds it, ${hold.ahead} ahead` : `${hold.ahead} plan(s) ahead`);
    if (waitedBefore) this.board.show(detail);
    else if (toLook) this.board.note(detail);
    else this.board.enter('governor', detail);
    const leaseLeft = hold.holder ? Math.max(1, hold.leaseLeftMs) : WAITER_REFRESH_MS;
    await this.desk.awaitSymbol(Math.min(WAITER_REFRESH_MS, leaseLeft));
  }

  /** Lets go of the symbol (or leaves its line), and wakes the plan next in line, skipping plans that ended. */
  private async letGo(): Promise<void> {
    if (!this.inLine) return;
    this.step = 'releaseSymbol';
    const next = await this.layers.releaseSymbol.executeWithOptions(options(`symbol: let go of ${this.plan.symbol}`), [
      this.plan,
    ]);
    this.inLine = false;
    await this.wake(next);
  }

  /** Signals the plan next in line; one whose workflow has ended is dropped and the one after it woken instead. */
  private async wake(first: string): Promise<void> {
    const { symbol } = this.plan;
    let next = first;
    while (next) {
      try {
        await getExternalWorkflowHandle(planWorkflowId(next)).signal(symbolFreeSignal);
        return;
      } catch {
        next = await this.layers.dropWaiter.executeWithOptions(options(`symbol: drop ended plan ${next}`), [
          { plan_id: next, symbol },
        ]);
      }
    }
  }

  /**
   * The Governor's answer, asked at `askedAt` (the workflow's clock) with the symbol held: a permit (granted or an
   * ending), or the symbol let go to wait for a rate slot or a person's decision.
   */
  private async onAnswer(answer: GovernorAnswer, askedAt: number): Promise<'held' | 'again' | Ending> {
    const { status } = this.board;
    if (answer.kind === 'permit') {
      status.governor = answer.permit;
      if (!answer.permit.granted) {
        const why = answer.permit.detail ? `: ${answer.permit.detail}` : '';
        return { outcome: 'denied', detail: `Governor denied: ${answer.permit.reason}${why}` };
      }
      this.board.note(
        `permit granted (${answer.permit.reason}), valid until ${new Date(answer.permit.expires_at).toISOString()}`,
      );
      this.permit = { permit: answer.permit, deadline: askedAt + this.permitLifeMs };
      return 'held';
    }
    await this.letGo();
    if (answer.kind === 'rate_limited') {
      this.board.note(`${answer.detail}: waiting for the next slot at ${clockTime(answer.retry_at)} UTC`);
      await this.desk.pause(Math.min(answer.retry_at, this.planDeadline));
      return 'again';
    }
    // Signatures that still count (over the positions shown again) stay; the others are asked for again.
    this.desk.holdApprovals((status.approvals ?? []).filter((a) => answer.counted?.includes(a.by)));
    const stale = answer.reason === 'approval_stale';
    return this.awaitApproval({ shown: answer.snapshot, stale, required: answer.required ?? 1 });
  }

  /**
   * People decide (production mode), shown the plan and the positions P3.3 sees now, until `until` (a continued run
   * waits out its predecessor's deadline, never longer than APPROVAL_TIMEOUT_S from now): `required` distinct
   * approvers sign (the approvals the plan holds count), or one rejects.
   */
  private async awaitApproval(
    { shown, stale, required }: { shown: NonNullable<ChainStatus['awaiting']>; stale: boolean; required: number },
    resumedUntil?: number,
  ): Promise<'again' | Ending> {
    const { status } = this.board;
    const fresh = Date.now() + this.rules.approvalTimeoutS * 1000;
    const until = Math.min(resumedUntil ?? fresh, fresh);
    status.awaiting = shown;
    status.quorum = { required, approvers: this.rules.approvers };
    if (resumedUntil === undefined) {
      const quorum = required > 1 ? ` by ${required} distinct approvers` : '';
      this.board.enter(
        'awaiting_approval',
        `${stale ? `positions moved since the approval${required > 1 ? 's' : ''}; ` : ''}awaiting approval${quorum} ` +
          `of ${this.plan.side} ${this.plan.qty} ${this.plan.symbol}: exchange ${shown.exchange_amount}, ` +
          `ledger ${shown.ledger_amount}, tolerance ${shown.tolerance}; ` +
          `until ${clockTime(until)} UTC`,
        awaitingNextStep(this.plan, until, required),
      );
      log.info('operator: awaiting approval', { who: this.rules.approvers.join(', '), required });
    } else
      this.board.resumeAt(
        awaitingNextStep(this.plan, until, required),
        `awaiting approval until ${clockTime(until)} UTC`,
      );
    for (;;) {
      const timeoutMs = Math.min(until - Date.now(), this.planDeadline - Date.now());
      const decision = await this.desk.awaitDecision(shown, required, timeoutMs, () => this.shouldContinue());
      if (decision === 'wake') {
        await this.continueIfDue({ stage: 'awaiting_approval', shown, until, stale, required });
        continue;
      }
      delete status.awaiting;
      if (!decision) {
        return this.cancelled() ?? { outcome: 'expired', detail: `no approval within ${this.rules.approvalTimeoutS}s` };
      }
      if (decision !== 'approved') {
        return { outcome: 'rejected', detail: `rejected by ${decision.by}: ${decision.reason}` };
      }
      return 'again';
    }
  }

  /** The Apply layer (P3): publishes the plan to the Apply stream, once however often it is called. */
  private async publish(): Promise<'published' | typeof PERMIT_RAN_OUT> {
    const { status } = this.board;
    if (status.apply) return 'published';
    const deadline = this.permit?.deadline ?? 0;
    this.board.enter('apply', 'publishing to the Apply stream');
    this.step = 'publishPlan';
    const applied = await withinPermit(deadline, () =>
      this.layers.publishPlan.executeWithOptions(options('Apply: publish plan', deadline), [
        this.plan,
        workflowInfo().workflowId,
      ]),
    );
    if (applied === PERMIT_RAN_OUT) return applied;
    status.apply = applied;
    this.board.note(`${applied.published ? 'published' : 'already published'} as ${applied.stream_id}`);
    return 'published';
  }

  /** The Position State Brain (P3.3), holding the symbol: the exchange's and the ledger's positions must agree. */
  private async checkPositions(): Promise<'agree' | NonNullable<ChainStatus['p33']> | typeof PERMIT_RAN_OUT> {
    const { status } = this.board;
    const deadline = this.permit?.deadline ?? 0;
    this.board.enter('p33', 'comparing exchange and ledger positions');
    this.step = 'checkPosition';
    const p33 = await withinPermit(deadline, () =>
      this.layers.checkPosition.executeWithOptions(options('P3.3: position check', deadline), [this.plan]),
    );
    if (p33 === PERMIT_RAN_OUT) return p33;
    status.p33 = p33;
    if (!p33.allow) return p33;
    this.board.note(`positions agree: exchange ${p33.exchange_amount}, ledger ${p33.ledger_amount}`);
    return 'agree';
  }

  /**
   * Blocked by P3.3: the symbol let go, no permit kept, nothing done until woken (the position watcher, `retry`, or
   * the fallback look); each wake is one read of the positions. Returns an ending, or undefined once they agree.
   * `resumed`: a continued run, blocked already.
   */
  private async restWhileBlocked(
    denial: NonNullable<ChainStatus['p33']>,
    resumed = false,
  ): Promise<Ending | undefined> {
    await this.letGo();
    this.permit = undefined;
    const fallbackMs = this.rules.recheckIntervalS * 1000 * BLOCKED_FALLBACK_INTERVALS;
    let seen = { reason: denial.reason, exchange: denial.exchange_amount, ledger: denial.ledger_amount };
    /** What P3.3 saw last: what a continued run starts from. */
    let latest = denial;
    let nextLookAt = Math.min(Date.now() + fallbackMs, this.planDeadline);
    if (resumed) this.board.resumeAt(blockedNextStep(this.plan), blockedDetail(denial));
    else this.board.enter('blocked', blockedDetail(denial), blockedNextStep(this.plan));
    this.board.lookNextAt(nextLookAt);
    const { status } = this.board;
    for (;;) {
      // A message that came in while the plan was about to continue is acted on now: a look, at once.
      const news = await this.continueIfDue({ stage: 'blocked', denial: latest });
      const woken = news || (await this.desk.rest(nextLookAt, () => this.shouldContinue()));
      if (woken === 'wake') continue;
      // The retry this look answers (a retry coming during the look is answered by the next one).
      const retry = status.last_retry && !status.last_retry.looked ? status.last_retry : undefined;
      // Taken before the look: a wake that comes while the plan looks is news for its next rest, not lost.
      this.desk.takeNews();
      const stop = this.cancelled() ?? this.tooOld('still blocked');
      if (stop) return stop;
      const view = await this.look();
      if ('outcome' in view) return view;
      latest = { ...denial, ...view };
      status.p33 = latest;
      if (retry) retry.looked = true;
      if (view.allow) {
        this.board.note(`positions agree again: exchange ${view.exchange_amount}, ledger ${view.ledger_amount}`);
        return undefined;
      }
      nextLookAt = Math.min(Date.now() + fallbackMs, this.planDeadline);
      const detail = blockedDetail(latest);
      const now = { reason: view.reason, exchange: view.exchange_amount, ledger: view.ledger_amount };
      const changed = now.reason !== seen.reason || now.exchange !== seen.exchange || now.ledger !== seen.ledger;
      // A person who retried reads the answer in the timeline: still blocked, and why.
      if (retry) this.board.note(`looked again after the retry by ${retry.by}: still ${detail}`);
      else if (changed) this.board.note(detail);
      else this.board.show(detail);
      this.board.lookNextAt(nextLookAt);
      seen = now;
    }
  }

  /**
   * One look at the positions (P3.3, read only). A disagreement seen while they may have been moving (another plan
   * held the symbol, its order perhaps placed and not yet in the ledger) is looked at again with the symbol held, the
   * plan waiting its turn for it: no order is in flight then. An agreement found so keeps the symbol for the chain,
   * which goes on at once; a disagreement lets it go. An ending when the plan ended while it waited its turn.
   */
  private async look(): Promise<P33View | Ending> {
    this.step = 'peekPosition';
    const view = await this.layers.peekPosition.executeWithOptions(options('P3.3: look at positions'), [this.plan]);
    if (view.allow || view.unsettled === undefined) return view;
    const { symbol } = this.plan;
    this.board.note(
      `positions disagree while they may be moving (${view.unsettled}): looking again at this plan's turn on ${symbol}`,
    );
    const turn = await this.takeTurn(true);
    if (turn !== 'held') return turn;
    this.step = 'peekPosition';
    const held = await this.layers.peekPosition.executeWithOptions(options(`P3.3: look at positions, ${symbol} held`), [
      this.plan,
    ]);
    if (!held.allow) await this.letGo();
    return held;
  }

  /**
   * Execute. The last point where a cancel stops the plan is before it: after this the order may be on the
   * exchange, so the activity retries until it is done and its fill reaches the ledger whatever the permits say.
   */
  private async execute(): Promise<Ending | undefined> {
    const { status } = this.board;
    const stop = this.cancelled();
    if (stop) return stop;
    this.board.enter('execute', 'placing the order');
    this.step = 'executePlan';
    this.board.publish();
    const result = await regular.executePlan.executeWithOptions(
      {
        ...options('Execute: place order'),
        startToCloseTimeout: EXECUTE_ATTEMPT_TIMEOUT_MS,
        heartbeatTimeout: EXECUTE_HEARTBEAT_TIMEOUT_MS,
      },
      [this.plan],
    );
    if (!result.placed) {
      // Still holding the symbol: the plan asks for a fresh permit without losing its turn.
      this.board.note(`no order: ${result.detail}; asking the Governor again`);
      this.permit = undefined;
      return undefined;
    }
    // Execute let go of the symbol with the fill in the ledger; the next plan is woken from here.
    this.inLine = false;
    await this.wake(result.next_in_line);
    status.execution = result.execution;
    const { execution } = result;
    const fill = `${execution.status} ${execution.filled_qty} @ ${execution.avg_price}`;
    const filled = result.filled ?? (execution.status === 'FILLED' ? 'all' : 'none');
    const asked = execution.requested_qty ?? this.plan.qty;
    const why = execution.reject_reason ? ` (${execution.reject_reason})` : '';
    if (filled === 'none') {
      return { outcome: 'failed', detail: `exchange ${fill}${why}: nothing traded, the ledger did not move` };
    }
    const mismatch = result.post_trade?.agrees === false ? `; post-trade check: ${result.post_trade.detail}` : '';
    const order = `order ${execution.order_id}, ledger ${result.ledger_amount}${mismatch}`;
    if (filled === 'part') {
      return {
        outcome: 'executed',
        detail: `partially filled: ${execution.filled_qty} of ${asked} @ ${execution.avg_price}, then ${execution.status}${why}; ${order}; the rest was not traded`,
      };
    }
    return { outcome: 'executed', detail: `${fill}, ${order}` };
  }
}

/** The failure as an operator reads it: the layer that failed, and why. */
function errorMessage(err: unknown, step: string): string {
  if (err instanceof ActivityFailure) {
    const cause = err.cause;
    const message = cause instanceof ApplicationFailure || cause instanceof Error ? cause.message : String(cause);
    return `${err.activityType}: ${message}`;
  }
  const message = err instanceof Error ? err.message : String(err);
  return step ? `${step}: ${message}` : message;
}
