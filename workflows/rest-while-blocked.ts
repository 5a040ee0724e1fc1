import { condition } from '@temporalio/workflow';
import type { P33View } from '../activities/p33';
import type { ChainStatus } from '../contract/types';
import { type Ending, options } from './chain-calls';
import { continueIfDue, shouldContinue } from './continue-as-new';
import type { PlanRun } from './plan-run';
import { blockedDetail, blockedNextStep } from './status-board';
import { letGo, takeTurnToLook } from './symbol-line';

/**
 * A blocked plan is woken by the position watcher (which sweeps blocked symbols every RECHECK_INTERVAL_S) or by a
 * `retry`; it also looks by itself every this many intervals, for a deployment where no watcher runs.
 */
const BLOCKED_FALLBACK_INTERVALS = 10;

/**
 * Blocked by P3.3: the symbol let go, no permit kept, nothing done until woken (the position watcher, `retry`, or
 * the fallback look); each wake is one read of the positions. Returns an ending, or undefined once they agree.
 * `resumed`: a continued run, blocked already.
 */
export async function restWhileBlocked(
  run: PlanRun,
  denial: NonNullable<ChainStatus['p33']>,
  resumed = false,
): Promise<Ending | undefined> {
  const { board, plan, desk } = run;
  await letGo(run);
  run.permit = undefined;
  const fallbackMs = run.rules.recheckIntervalS * 1000 * BLOCKED_FALLBACK_INTERVALS;
  let seen = { reason: denial.reason, exchange: denial.exchange_amount, ledger: denial.ledger_amount };
  /** What P3.3 saw last: what a continued run starts from. */
  let latest = denial;
  let nextLookAt = Math.min(Date.now() + fallbackMs, run.planDeadline);
  if (resumed) board.resumeAt(blockedNextStep(plan), blockedDetail(denial));
  else board.enter('blocked', blockedDetail(denial), blockedNextStep(plan));
  board.lookNextAt(nextLookAt);
  const { status } = board;
  for (;;) {
    // A message that came in while the plan was about to continue is acted on now: a look, at once.
    const news = await continueIfDue(run, { stage: 'blocked', denial: latest });
    const woken = news || (await rest(run, nextLookAt));
    if (woken === 'wake') continue;
    // The retry this look answers (a retry coming during the look is answered by the next one).
    const retry = status.last_retry && !status.last_retry.looked ? status.last_retry : undefined;
    // Taken before the look: a wake that comes while the plan looks is news for its next rest, not lost.
    desk.retryRequested = false;
    run.wakeUps.positionsChanged = false;
    const stop = run.cancelled() ?? run.tooOld('still blocked');
    if (stop) return stop;
    const view = await look(run);
    if ('outcome' in view) return view;
    latest = { ...denial, ...view };
    status.p33 = latest;
    if (retry) retry.looked = true;
    if (view.allow) {
      board.note(`positions agree again: exchange ${view.exchange_amount}, ledger ${view.ledger_amount}`);
      return undefined;
    }
    nextLookAt = Math.min(Date.now() + fallbackMs, run.planDeadline);
    const detail = blockedDetail(latest);
    const now = { reason: view.reason, exchange: view.exchange_amount, ledger: view.ledger_amount };
    const changed = now.reason !== seen.reason || now.exchange !== seen.exchange || now.ledger !== seen.ledger;
    // A person who retried reads the answer in the timeline: still blocked, and why.
    if (retry) board.note(`looked again after the retry by ${retry.by}: still ${detail}`);
    else if (changed) board.note(detail);
    else board.show(detail);
    board.lookNextAt(nextLookAt);
    seen = now;
  }
}

/**
 * The plan at rest: sleeps until someone retries it, the position watcher says its positions changed, it is
 * cancelled, or `until` (the fallback look) comes. `'wake'` when only the need to continue as new came true.
 * News not yet taken wakes it at once.
 */
async function rest(run: PlanRun, until: number): Promise<'wake' | undefined> {
  const { desk, wakeUps } = run;
  run.board.publish();
  const news = () => desk.cancel !== undefined || desk.retryRequested || wakeUps.positionsChanged;
  const woken = await condition(() => news() || shouldContinue(run), Math.max(1, until - Date.now()));
  return woken && !news() ? 'wake' : undefined;
}

/**
 * One look at the positions (P3.3, read only). A disagreement seen while they may have been moving (another plan
 * held the symbol, its order perhaps placed and not yet in the ledger) is looked at again with the symbol held, the
 * plan waiting its turn for it: no order is in flight then. An agreement found so keeps the symbol for the chain,
 * which goes on at once; a disagreement lets it go. An ending when the plan ended while it waited its turn.
 */
async function look(run: PlanRun): Promise<P33View | Ending> {
  const { plan, layers } = run;
  run.step = 'peekPosition';
  const view = await layers.peekPosition.executeWithOptions(options('P3.3: look at positions'), [plan]);
  if (view.allow || view.unsettled === undefined) return view;
  const { symbol } = plan;
  run.board.note(
    `positions disagree while they may be moving (${view.unsettled}): looking again at this plan's turn on ${symbol}`,
  );
  const turn = await takeTurnToLook(run);
  if (turn !== 'held') return turn;
  run.step = 'peekPosition';
  const held = await layers.peekPosition.executeWithOptions(options(`P3.3: look at positions, ${symbol} held`), [plan]);
  if (!held.allow) await letGo(run);
  return held;
}
