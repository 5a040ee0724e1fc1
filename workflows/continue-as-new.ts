import { allHandlersFinished, condition, log, makeContinueAsNewFunc, workflowInfo } from '@temporalio/workflow';
import type { CarriedState, ChainInput, ChainStatus, Plan } from '../contract/types';
import { local, options } from './chain-calls';
import type { PlanRun } from './plan-run';
import type { StatusBoard } from './status-board';

/**
 * A plan waiting long (blocked, or awaiting a person) continues as a new run before its history reaches this many
 * events (the worker's CONTINUE_AS_NEW_EVENTS, this when its rules do not say): a plan blocked for days would
 * otherwise grow its history by some 6 events per look, towards Temporal's limit of 51,200.
 */
const CONTINUE_AS_NEW_EVENTS = 2000;
/** Events a run may still add between deciding to continue and its last event (a look, the carried state, the end). */
const CONTINUE_AS_NEW_RESERVE = 50;

/**
 * A run that continues a plan's earlier run takes the state that run left (activities/carry.ts: only if that run
 * wrote it); a first run, or one whose state is refused, starts the plan from the beginning.
 */
export async function resume(plan: Plan, board: StatusBoard): Promise<CarriedState | undefined> {
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

/**
 * Whether a new build is current that this run should move onto: the deployment's target version is no longer the
 * one the run is pinned to, and UPGRADE_ON_CONTINUE_AS_NEW is on. Always false on an unversioned worker.
 */
function upgradeDue(run: PlanRun): boolean {
  return run.rules.upgradeOnContinueAsNew === true && workflowInfo().targetWorkerDeploymentVersionChanged;
}

/** Whether this run should continue as new where it waits: its history is long, or a new build is current. */
export function shouldContinue(run: PlanRun): boolean {
  const info = workflowInfo();
  const limit = (run.rules.continueAsNewEvents ?? CONTINUE_AS_NEW_EVENTS) - CONTINUE_AS_NEW_RESERVE;
  return info.continueAsNewSuggested || info.historyLength >= limit || upgradeDue(run);
}

/**
 * Whether something came in that the plan, waiting where it does, must act on before it may continue as new: a
 * cancel; a retry or a position change (blocked); a decision or an approval towards it (awaiting approval): the
 * state carried over may have been written before it.
 */
function hasNews(run: PlanRun, waiting: CarriedState['waiting']['stage']): boolean {
  return run.desk.hasNews(waiting) || (waiting === 'blocked' && run.wakeUps.positionsChanged);
}

/**
 * Continues the plan as a new run when it should (a long history, or a new build current), at a point where it
 * holds nothing: no symbol, no permit, no order between placing and recording, and no message handler running. The
 * state goes through Redis (carryOver), the input stays the plan alone, the search attributes go along. Returns
 * when it should not (false), or when a message came in that this run must act on first ('news'; it continues at
 * its next wait).
 */
export async function continueIfDue(run: PlanRun, waiting: CarriedState['waiting']): Promise<false | 'news'> {
  if (!shouldContinue(run) || run.inLine) return false;
  await condition(allHandlersFinished);
  if (hasNews(run, waiting.stage)) return 'news';
  const info = workflowInfo();
  // Decided once, for the note and the continue alike: a run told of a new build that continues without
  // AUTO_UPGRADE declines that build for good (its next run is not told again), even when it continues for length.
  const upgrade = upgradeDue(run);
  const state: CarriedState = {
    started_at: run.startedAt,
    status: run.board.carried(
      upgrade
        ? 'a new build is current: continued as new onto it'
        : `continued as a new run after ${info.historyLength} events`,
    ),
    waiting,
  };
  run.step = 'carryOver';
  await run.layers.carryOver.executeWithOptions(options('carried state: hand over'), [
    { workflowId: info.workflowId, runId: info.runId, state },
  ]);
  if (hasNews(run, waiting.stage)) return 'news';
  // A handler started, or the target moved, while the state was handed over: this run continues at its next wait.
  if (!allHandlersFinished() || upgradeDue(run) !== upgrade) return false;
  run.board.publish();
  if (upgrade)
    log.info('deploy: continuing as new onto the current build', {
      from: info.currentDeploymentVersion?.buildId ?? '',
    });
  // Without them the next run would start with none: the Web UI's filters would lose the plan.
  const next = makeContinueAsNewFunc<(input: ChainInput) => Promise<ChainStatus>>({
    typedSearchAttributes: workflowInfo().typedSearchAttributes,
    ...(upgrade ? { initialVersioningBehavior: 'AUTO_UPGRADE' as const } : {}),
  });
  return next({ plan: run.plan });
}
