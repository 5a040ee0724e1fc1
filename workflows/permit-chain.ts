import {
  ActivityFailure,
  ApplicationFailure,
  CancellationScope,
  TimeoutFailure,
  allHandlersFinished,
  condition,
  getExternalWorkflowHandle,
  isCancellation,
  proxyActivities,
  workflowInfo,
  type ActivityOptions,
} from '@temporalio/workflow';
import type { ChainActivities } from '../activities';
import type { ChainInput, ChainOutcome, ChainStatus, GovernorPermit, P33Permit } from '../lib/types';
import { planWorkflowId, symbolFreeSignal } from './messages';
import { OperatorDesk } from './operator-desk';
import { StatusBoard, blockedDetail, clockTime } from './status-board';

/** Redis round trips take milliseconds; a layer that has not answered in this long is retried. */
const LAYER_ATTEMPT_TIMEOUT_MS = 10_000;
/**
 * Short backoff: the permit's life is measured in seconds, so retries must fit many times into it. Not retried:
 * `CorruptAmount` (a stored amount that is not a decimal; activities/index.ts), which needs a person, not time.
 */
const LAYER_RETRY = {
  initialInterval: '200ms',
  backoffCoefficient: 2,
  maximumInterval: '2s',
  nonRetryableErrorTypes: ['CorruptAmount', 'LedgerConflict'],
};
/**
 * How long a plan waiting for its symbol sleeps before it asks again if nobody wakes it: the plan letting go
 * signals the next in line, so this only matters when that plan died. Below WAITER_STALE_MS, so a waiter keeps
 * its place in line.
 */
const SYMBOL_RECHECK_MS = 1_000;

const layers = proxyActivities<ChainActivities>({ startToCloseTimeout: LAYER_ATTEMPT_TIMEOUT_MS, retry: LAYER_RETRY });

/** Marks a layer call that ran out of permit life: the chain goes back to the Governor. */
const PERMIT_RAN_OUT = Symbol('permit ran out');

/** How a plan ends, when it ends before executing. */
interface Ending {
  outcome: ChainOutcome;
  detail: string;
}

/** Options for a call that must finish by `deadline` (ms): both timeouts come from what remains. */
function until(deadline: number, summary: string): ActivityOptions {
  const remaining = Math.max(1, deadline - Date.now());
  return {
    summary,
    scheduleToCloseTimeout: remaining,
    startToCloseTimeout: Math.min(remaining, LAYER_ATTEMPT_TIMEOUT_MS),
    retry: LAYER_RETRY,
  };
}

function isTimeout(err: unknown): boolean {
  return err instanceof ActivityFailure && err.cause instanceof TimeoutFailure;
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
 * One plan, Governor → Apply → P3.3 → Execute. The Governor first admits the input (the plan alone, validated where
 * it runs) and hands over the worker's rules; in production mode it waits for a person's signed approval. A P3.3
 * denial blocks the plan: it re-checks every RECHECK_INTERVAL_S, at once on `retry`, asks the Governor again once
 * its permit has run out, and ends `expired` after PLAN_MAX_AGE_S. One plan per symbol runs P3.3 through the
 * ledger update at a time. A Temporal cancellation request is a cancel: before the order the plan ends `cancelled`,
 * after it the fill still reaches the ledger.
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
        layers.recordOperatorDecision.executeWithOptions(
          { summary: `operator: ${entry.decision}`, startToCloseTimeout: LAYER_ATTEMPT_TIMEOUT_MS, retry: LAYER_RETRY },
          [entry],
        ),
      ),
    verify: (request) =>
      CancellationScope.nonCancellable(() =>
        layers.verifyDecision.executeWithOptions(
          {
            summary: `Governor: verify ${request.kind} by ${request.request.by || '(nobody)'}`,
            startToCloseTimeout: LAYER_ATTEMPT_TIMEOUT_MS,
            retry: LAYER_RETRY,
          },
          [request],
        ),
      ),
  });
  desk.register(cancelRequested);

  // The Governor's admission: the plan checked where it runs, and the rules it runs under (the worker's).
  const admission = await layers.admitPlan.executeWithOptions(
    { summary: 'Governor: admit plan', startToCloseTimeout: LAYER_ATTEMPT_TIMEOUT_MS, retry: LAYER_RETRY },
    [{ input, workflowId }],
  );
  const rules = admission.rules;
  if (!admission.admitted) {
    status.mode = rules.mode;
    status.last_error = admission.error;
    board.finish('denied', `invalid plan: ${admission.error}`);
    await condition(allHandlersFinished);
    return status;
  }
  const plan = admission.plan;
  board.admit(plan, rules.mode);

  const planDeadline = workflowInfo().startTime.getTime() + rules.planMaxAgeS * 1000;
  const permitLifeMs = (rules.permitTtlS - rules.permitMarginS) * 1000;
  const cancelled = (): Ending | undefined =>
    desk.cancel && { outcome: 'cancelled', detail: `cancelled by ${desk.cancel.by}: ${desk.cancel.reason}` };
  const tooOld = (state = 'not done'): Ending | undefined =>
    Date.now() >= planDeadline ? { outcome: 'expired', detail: `${state} after ${rules.planMaxAgeS}s` } : undefined;

  /** The Governor (P3.2), with a person's approval in production mode and waits for rate slots. */
  async function obtainPermit(): Promise<{ permit: GovernorPermit; deadline: number } | Ending> {
    for (;;) {
      const ending = cancelled() ?? tooOld();
      if (ending) return ending;
      status.attempts += 1;
      board.enter('governor', `asking the Governor for a permit (attempt ${status.attempts})`);
      // The permit's life is counted on the workflow's clock from before the request: never later than the
      // Governor's own issue time, and immune to skew between worker and server clocks.
      const askedAt = Date.now();
      const answer = await layers.requestPermit.executeWithOptions(
        { ...until(planDeadline, 'Governor: permit'), startToCloseTimeout: LAYER_ATTEMPT_TIMEOUT_MS },
        [{ plan, at: askedAt, ...(status.approval ? { approval: status.approval } : {}) }],
      );
      if (answer.kind === 'permit') {
        status.governor = answer.permit;
        if (!answer.permit.granted) return { outcome: 'denied', detail: `Governor denied: ${answer.permit.reason}` };
        board.note(
          `permit granted (${answer.permit.reason}), valid until ${new Date(answer.permit.expires_at).toISOString()}`,
        );
        return { permit: answer.permit, deadline: askedAt + permitLifeMs };
      }
      if (answer.kind === 'rate_limited') {
        board.note(`${answer.detail}: waiting for the next slot at ${clockTime(answer.retry_at)} UTC`);
        await desk.pause(Math.min(answer.retry_at, planDeadline));
        continue;
      }
      // A person decides (production mode): shown the plan and the positions P3.3 sees now.
      delete status.approval;
      status.awaiting = answer.snapshot;
      const shown = answer.snapshot;
      board.enter(
        'awaiting_approval',
        `${answer.reason === 'approval_stale' ? 'positions moved since the approval; ' : ''}awaiting approval of ` +
          `${plan.side} ${plan.qty} ${plan.symbol}: exchange ${shown.exchange_amount}, ledger ${shown.ledger_amount}, ` +
          `tolerance ${shown.tolerance}; until ${clockTime(Date.now() + rules.approvalTimeoutS * 1000)} UTC`,
      );
      const decision = await desk.awaitDecision(
        shown,
        Math.min(rules.approvalTimeoutS * 1000, planDeadline - Date.now()),
      );
      delete status.awaiting;
      if (!decision) {
        return cancelled() ?? { outcome: 'expired', detail: `no approval within ${rules.approvalTimeoutS}s` };
      }
      if (decision.kind === 'reject')
        return { outcome: 'rejected', detail: `rejected by ${decision.by}: ${decision.reason}` };
      status.approval = {
        by: decision.by,
        at: decision.at,
        ...(decision.note !== undefined ? { note: decision.note } : {}),
        snapshot: shown,
        expires_at: decision.expires_at,
        signature: decision.signature,
      };
    }
  }

  /** Whether this plan holds its symbol or stands in its line: either way it must let go when it leaves. */
  let holding = false;

  /** Takes the plan's symbol (per-symbol serialization), waiting its turn while other plans hold or wait for it. */
  async function holdSymbol(deadline: number): Promise<'held' | typeof PERMIT_RAN_OUT | Ending> {
    let waiting = false;
    for (;;) {
      const ending = cancelled();
      if (ending) return ending;
      // The lease outlives the permit by the margin: a crashed holder frees the symbol soon after its permit ends.
      const leaseMs = deadline - Date.now() + rules.permitMarginS * 1000;
      const hold = await withinPermit(deadline, () =>
        layers.holdSymbol.executeWithOptions(until(deadline, `symbol: hold ${plan.symbol}`), [plan, leaseMs]),
      );
      if (hold === PERMIT_RAN_OUT) return hold;
      holding = true;
      if (hold.held) return 'held';
      const detail =
        `waiting for ${plan.symbol}: ` +
        (hold.holder
          ? `plan ${hold.holder} is between P3.3 and its ledger update (${hold.ahead} ahead in line)`
          : `${hold.ahead} plan(s) ahead in line`);
      if (waiting) board.show(detail);
      else board.enter('p33', detail);
      waiting = true;
      await desk.awaitSymbol(
        Math.min(SYMBOL_RECHECK_MS, hold.holder ? Math.max(1, hold.leaseLeftMs) : SYMBOL_RECHECK_MS),
      );
    }
  }

  /** Lets go of the symbol (or leaves its line), and wakes the plan next in line. */
  async function releaseSymbol(): Promise<void> {
    if (!holding) return;
    const next = await layers.releaseSymbol.executeWithOptions(
      { summary: `symbol: release ${plan.symbol}`, startToCloseTimeout: LAYER_ATTEMPT_TIMEOUT_MS, retry: LAYER_RETRY },
      [plan],
    );
    holding = false;
    // It may have ended meanwhile; then there is nobody to wake.
    if (next)
      await getExternalWorkflowHandle(planWorkflowId(next))
        .signal(symbolFreeSignal)
        .catch(() => undefined);
  }

  async function runChain(): Promise<Ending> {
    chain: for (;;) {
      const obtained = await obtainPermit();
      if ('outcome' in obtained) return obtained;
      const { deadline } = obtained;

      // Apply layer (P3)
      board.enter('apply', 'publishing to the Apply stream');
      const applied = await withinPermit(deadline, () =>
        layers.publishPlan.executeWithOptions(until(deadline, 'Apply: publish plan'), [
          plan,
          workflowInfo().workflowId,
        ]),
      );
      if (applied === PERMIT_RAN_OUT) continue chain;
      status.apply = applied;
      board.note(`${applied.published ? 'published' : 'already published'} as ${applied.stream_id}`);

      // Position State Brain (P3.3), holding the symbol, blocking until the positions agree
      board.enter('p33', 'comparing exchange and ledger positions');
      for (;;) {
        const held = await holdSymbol(deadline);
        if (held === PERMIT_RAN_OUT) {
          await releaseSymbol(); // out of the line too: a waiter that does not ask would hold up the others
          continue chain;
        }
        if (held !== 'held') return held;
        const p33: P33Permit | typeof PERMIT_RAN_OUT = await withinPermit(deadline, () =>
          layers.checkPosition.executeWithOptions(until(deadline, 'P3.3: position check'), [plan]),
        );
        if (p33 === PERMIT_RAN_OUT) {
          await releaseSymbol();
          continue chain;
        }
        const changed = status.p33?.reason !== p33.reason || status.p33?.ledger_amount !== p33.ledger_amount;
        status.p33 = p33;
        if (p33.allow) break;

        await releaseSymbol();
        const nextCheckAt = Math.min(Date.now() + rules.recheckIntervalS * 1000, planDeadline);
        if (changed || status.stage !== 'blocked') board.enter('blocked', blockedDetail(p33, nextCheckAt));
        else board.show(blockedDetail(p33, nextCheckAt));
        await desk.pause(nextCheckAt, true);
        const ending = cancelled() ?? tooOld('still blocked');
        if (ending) return ending;
        if (Date.now() >= deadline) {
          board.note('permit ran out while blocked; asking the Governor again');
          continue chain;
        }
      }
      board.enter('p33', `positions agree: exchange ${status.p33.exchange_amount}, ledger ${status.p33.ledger_amount}`);

      // The last point where a cancel stops the plan: after this the order may be on the exchange.
      const ending = cancelled();
      if (ending) return ending;

      // Execute. The permit check is inside the activity, so it retries until it is done: once an order may be on
      // the exchange, its fill must reach the ledger whatever the permits say by then.
      board.enter('execute', 'placing the order');
      const result = await layers.executePlan.executeWithOptions(
        { summary: 'Execute: place order', startToCloseTimeout: LAYER_ATTEMPT_TIMEOUT_MS, retry: LAYER_RETRY },
        [plan],
      );
      await releaseSymbol();
      if (!result.placed) {
        board.note(`no order: ${result.detail}; asking the Governor again`);
        continue chain;
      }
      status.execution = result.execution;
      const fill = `${result.execution.status} ${result.execution.filled_qty} @ ${result.execution.avg_price}`;
      if (result.execution.status !== 'FILLED') return { outcome: 'failed', detail: `exchange ${fill}` };
      return {
        outcome: 'executed',
        detail: `${fill}, order ${result.execution.order_id}, ledger ${result.ledger_amount}`,
      };
    }
  }

  let ending: Ending;
  try {
    ending = await runChain();
  } catch (err) {
    if (isCancellation(err)) throw err;
    status.last_error = errorMessage(err);
    ending = { outcome: isTimeout(err) ? 'expired' : 'failed', detail: status.last_error };
  } finally {
    // Whatever happened, the symbol is not left held by this plan (the lease would free it, but later).
    await CancellationScope.nonCancellable(() => releaseSymbol()).catch(() => undefined);
  }
  board.finish(ending.outcome, ending.detail);
  await desk.settled();
  await condition(allHandlersFinished);
  return status;
}

function errorMessage(err: unknown): string {
  if (err instanceof ActivityFailure) {
    const cause = err.cause;
    const message = cause instanceof ApplicationFailure || cause instanceof Error ? cause.message : String(cause);
    return `${err.activityType}: ${message}`;
  }
  return err instanceof Error ? err.message : String(err);
}
