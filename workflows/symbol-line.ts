/**
 * The plan's place in its symbol's line: one plan at a time holds a symbol, the others wait their turn in arrival
 * order, woken by the plan before them as it lets go, never polling.
 */

import { condition, getExternalWorkflowHandle } from '@temporalio/workflow';
import type { SymbolHold } from '../activities/symbol-lock';
import { planWorkflowId, symbolFreeSignal } from '../contract/messages';
import { WAITER_REFRESH_MS } from '../lib/symbol-line';
import { type Ending, options } from './chain-calls';
import type { PlanRun } from './plan-run';

/**
 * Takes the plan's symbol for a blocked plan's look at the positions (it stays blocked while it waits its turn).
 * An ending when the plan is cancelled or too old while it waits.
 */
export async function takeTurnToLook(run: PlanRun): Promise<'held' | Ending> {
  let waiting = false;
  for (;;) {
    const stop = run.cancelled() ?? run.tooOld();
    if (stop) return stop;
    // The lease covers the permit the plan asks for next; a crashed holder frees the symbol when it runs out.
    const leaseMs = (run.rules.permitTtlS + run.rules.permitMarginS) * 1000;
    run.step = 'holdSymbol';
    const hold = await run.layers.holdSymbol.executeWithOptions(options(`symbol: take ${run.plan.symbol}`), [
      run.plan,
      leaseMs,
    ]);
    run.inLine = true;
    if (hold.held) return 'held';
    await waitInLine(run, hold, waiting, true);
    waiting = true;
  }
}

/**
 * Shows where the plan stands in its symbol's line (a timeline line the first time, the details after) and waits
 * to be woken. The plan letting go signals the next in line; the timer only takes a symbol whose holder crashed,
 * and shows the line that this plan is alive. `toLook`: a blocked plan waiting only to look at the positions.
 */
export async function waitInLine(
  run: PlanRun,
  hold: Exclude<SymbolHold, { held: true }>,
  waitedBefore: boolean,
  toLook = false,
): Promise<void> {
  const { board, plan, desk, wakeUps } = run;
  const detail =
    `in line for ${plan.symbol}${toLook ? ' to look at the positions' : ''}: ` +
    (hold.holder ? `plan ${hold.holder} holds it, ${hold.ahead} ahead` : `${hold.ahead} plan(s) ahead`);
  if (waitedBefore) board.show(detail);
  else if (toLook) board.note(detail);
  else board.enter('governor', detail);
  const leaseLeft = hold.holder ? Math.max(1, hold.leaseLeftMs) : WAITER_REFRESH_MS;
  // Woken by the plan ahead letting go of the symbol (it signals), at most after the timeout, or by a cancel.
  board.publish();
  await condition(
    () => wakeUps.symbolFreed || desk.cancel !== undefined,
    Math.max(1, Math.min(WAITER_REFRESH_MS, leaseLeft)),
  );
  wakeUps.symbolFreed = false;
}

/** Lets go of the symbol (or leaves its line), and wakes the plan next in line, skipping plans that ended. */
export async function letGo(run: PlanRun): Promise<void> {
  if (!run.inLine) return;
  run.step = 'releaseSymbol';
  const next = await run.layers.releaseSymbol.executeWithOptions(options(`symbol: let go of ${run.plan.symbol}`), [
    run.plan,
  ]);
  run.inLine = false;
  await wakeNext(run, next);
}

/** Signals the plan next in line; one whose workflow has ended is dropped and the one after it woken instead. */
export async function wakeNext(run: PlanRun, first: string): Promise<void> {
  const { symbol } = run.plan;
  let next = first;
  while (next) {
    try {
      await getExternalWorkflowHandle(planWorkflowId(next)).signal(symbolFreeSignal);
      return;
    } catch {
      next = await run.layers.dropWaiter.executeWithOptions(options(`symbol: drop ended plan ${next}`), [
        { plan_id: next, symbol },
      ]);
    }
  }
}
