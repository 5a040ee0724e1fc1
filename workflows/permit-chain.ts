import { CancellationScope, ContinueAsNew, allHandlersFinished, condition, workflowInfo } from '@temporalio/workflow';
import type { Admission, ChainInput, ChainStatus } from '../contract/types';
import { awaitApproval } from './approval';
import { type Ending, PERMIT_RAN_OUT, errorMessage, isTimeout, local, options } from './chain-calls';
import { resume } from './continue-as-new';
import { checkPositions, execute, publish } from './layers';
import { OperatorDesk } from './operator-desk';
import { PlanRun } from './plan-run';
import { restWhileBlocked } from './rest-while-blocked';
import { StatusBoard } from './status-board';
import { letGo } from './symbol-line';
import { turnAndPermit } from './turn-and-permit';
import { WakeUps } from './wake-ups';

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

/** The plan's steps: its turn and a permit → Apply → P3.3 → Execute; a block or a lost permit loops back. */
async function steps(run: PlanRun): Promise<Ending> {
  const resumed = await resumeWait(run);
  if (resumed) return resumed;
  for (;;) {
    const stop = run.cancelled() ?? run.tooOld();
    if (stop) return stop;
    const permit = await turnAndPermit(run);
    if (permit === 'again') continue;
    if (permit !== 'held') return permit;
    if ((await publish(run)) === PERMIT_RAN_OUT) continue;
    const positions = await checkPositions(run);
    if (positions === PERMIT_RAN_OUT) continue;
    if (positions !== 'agree') {
      const unblocked = await restWhileBlocked(run, positions);
      if (unblocked) return unblocked;
      continue;
    }
    const executed = await execute(run);
    if (executed) return executed;
  }
}

/** A continued run goes back to where its predecessor waited; returns an ending, or undefined to go on. */
async function resumeWait(run: PlanRun): Promise<Ending | undefined> {
  const waiting = run.carried?.waiting;
  if (!waiting) return undefined;
  if (waiting.stage === 'blocked') return restWhileBlocked(run, waiting.denial, true);
  const ask = { shown: waiting.shown, stale: waiting.stale, required: waiting.required ?? 1 };
  const answer = await awaitApproval(run, ask, waiting.until);
  return answer === 'again' ? undefined : answer;
}

/** The steps of an admitted plan, to their ending; whatever ends them, the symbol is let go. */
async function runChain(run: PlanRun): Promise<Ending> {
  try {
    return await steps(run);
  } catch (err) {
    // Not an ending: the plan goes on in its next run.
    if (err instanceof ContinueAsNew) throw err;
    run.board.status.last_error = errorMessage(err, run.step);
    return { outcome: isTimeout(err) ? 'expired' : 'failed', detail: run.board.status.last_error };
  } finally {
    // The lease would free the symbol too, but later.
    await letGo(run).catch(() => undefined);
  }
}

/** Registers the handlers, admits the plan and runs it; the status is the workflow's result. */
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
  const wakeUps = new WakeUps();
  wakeUps.register();

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
    const run = new PlanRun(admission.plan, admission.rules, board, desk, wakeUps, { turn, at }, carried);
    ending = await runChain(run);
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
