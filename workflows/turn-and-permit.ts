import type { GovernorAnswer } from '../contract/types';
import { type Ending, LAYER_ATTEMPT_TIMEOUT_MS, options } from './chain-calls';
import { awaitApproval } from './approval';
import type { PlanRun } from './plan-run';
import { clockTime } from './status-board';
import { letGo, waitInLine } from './symbol-line';

/**
 * The plan's turn on its symbol and, once it holds it, the Governor's answer, in one call (governorTurn): waiting
 * its turn in arrival order, woken by the plan before it, never polling. A permit still in hand is not asked again.
 * 'held': the symbol held with a permit; 'again': the plan let go and asks again (a rate slot, an approval).
 */
export async function turnAndPermit(run: PlanRun): Promise<'held' | 'again' | Ending> {
  const { board, plan } = run;
  const { status } = board;
  let waiting = false;
  for (;;) {
    let { turn, at } = run.firstTurn ?? {};
    run.firstTurn = undefined;
    if (!turn?.hold || at === undefined) {
      const stop = run.cancelled() ?? run.tooOld();
      if (stop) return stop;
      const needPermit = !(run.permit && Date.now() < run.permit.deadline);
      // The permit's life is counted on the workflow's clock from before the request: never later than the
      // Governor's own issue time, and immune to skew between worker and server clocks.
      at = Date.now();
      run.step = 'governorTurn';
      turn = await run.layers.governorTurn.executeWithOptions(
        needPermit
          ? {
              ...options(`Governor: turn on ${plan.symbol}, permit`, run.planDeadline),
              startToCloseTimeout: LAYER_ATTEMPT_TIMEOUT_MS,
            }
          : options(`symbol: take ${plan.symbol}`),
        [{ plan, take: true, permit: needPermit, at, ...(status.approvals ? { approvals: status.approvals } : {}) }],
      );
    }
    run.inLine = true;
    const hold = turn.hold;
    if (!hold) throw new Error('governorTurn: no turn taken');
    if (hold.held) {
      if (!turn.answer) return 'held';
      status.attempts += 1;
      board.enter('governor', `asked the Governor for a permit (attempt ${status.attempts})`);
      return onAnswer(run, turn.answer, at);
    }
    await waitInLine(run, hold, waiting);
    waiting = true;
  }
}

/**
 * The Governor's answer, asked at `askedAt` (the workflow's clock) with the symbol held: a permit (granted or an
 * ending), or the symbol let go to wait for a rate slot or a person's decision.
 */
async function onAnswer(run: PlanRun, answer: GovernorAnswer, askedAt: number): Promise<'held' | 'again' | Ending> {
  const { board, desk } = run;
  const { status } = board;
  if (answer.kind === 'permit') {
    status.governor = answer.permit;
    if (!answer.permit.granted) {
      const why = answer.permit.detail ? `: ${answer.permit.detail}` : '';
      return { outcome: 'denied', detail: `Governor denied: ${answer.permit.reason}${why}` };
    }
    board.note(
      `permit granted (${answer.permit.reason}), valid until ${new Date(answer.permit.expires_at).toISOString()}`,
    );
    run.permit = { permit: answer.permit, deadline: askedAt + run.permitLifeMs };
    return 'held';
  }
  await letGo(run);
  if (answer.kind === 'rate_limited') {
    board.note(`${answer.detail}: waiting for the next slot at ${clockTime(answer.retry_at)} UTC`);
    await desk.pause(Math.min(answer.retry_at, run.planDeadline));
    return 'again';
  }
  // Signatures that still count (over the positions shown again) stay; the others are asked for again.
  desk.holdApprovals((status.approvals ?? []).filter((a) => answer.counted?.includes(a.by)));
  const stale = answer.reason === 'approval_stale';
  return awaitApproval(run, { shown: answer.snapshot, stale, required: answer.required ?? 1 });
}
