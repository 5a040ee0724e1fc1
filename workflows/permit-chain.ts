import {
  ActivityFailure,
  ApplicationFailure,
  TimeoutFailure,
  condition,
  isCancellation,
  proxyActivities,
  setHandler,
  workflowInfo,
  type ActivityOptions,
} from '@temporalio/workflow';
import type { ChainActivities } from '../activities';
import type { ChainInput, ChainStatus, P33Permit } from '../lib/types';
import { retrySignal, statusQuery } from './messages';
import { StatusBoard, blockedDetail } from './status-board';

/** Redis round trips take milliseconds; a layer that has not answered in this long is retried. */
const LAYER_ATTEMPT_TIMEOUT_MS = 10_000;
/** Short backoff: the permit's life is measured in seconds, so retries must fit many times into it. */
const LAYER_RETRY = { initialInterval: '200ms', backoffCoefficient: 2, maximumInterval: '2s' } as const;

const layers = proxyActivities<ChainActivities>({ startToCloseTimeout: LAYER_ATTEMPT_TIMEOUT_MS, retry: LAYER_RETRY });

/** Marks a layer call that ran out of permit life: the chain goes back to the Governor. */
const PERMIT_RAN_OUT = Symbol('permit ran out');

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
 * One plan, Governor → Apply → P3.3 → Execute. A P3.3 denial blocks the plan: it re-checks every
 * RECHECK_INTERVAL_S, at once on `retry`, asks the Governor again once its permit has run out, and ends `expired`
 * after PLAN_MAX_AGE_S.
 */
export async function permitChain({ plan, settings }: ChainInput): Promise<ChainStatus> {
  const board = new StatusBoard(plan, settings.mode);
  const status = board.status;
  let retryRequested = false;
  setHandler(statusQuery, () => status);
  setHandler(retrySignal, (request) => {
    retryRequested = true;
    board.note(`retry requested by ${request?.by ?? 'an operator'}`);
  });

  const planDeadline = workflowInfo().startTime.getTime() + settings.planMaxAgeS * 1000;
  const permitLifeMs = (settings.permitTtlS - settings.permitMarginS) * 1000;

  try {
    chain: for (;;) {
      if (Date.now() >= planDeadline) return board.finish('expired', `not done after ${settings.planMaxAgeS}s`);

      // Governor (P3.2)
      status.attempts += 1;
      board.enter('governor', `asking the Governor for a permit (attempt ${status.attempts})`);
      // The permit's life is counted on the workflow's clock from before the request: never later than the
      // Governor's own issue time, and immune to skew between worker and server clocks.
      const askedAt = Date.now();
      const permit = await layers.requestPermit.executeWithOptions(
        { ...until(planDeadline, 'Governor: permit'), startToCloseTimeout: LAYER_ATTEMPT_TIMEOUT_MS },
        [plan],
      );
      status.governor = permit;
      if (!permit.granted) return board.finish('denied', `Governor denied: ${permit.reason}`);
      const permitDeadline = askedAt + permitLifeMs;
      board.note(`permit granted (${permit.reason}), valid until ${new Date(permit.expires_at).toISOString()}`);

      // Apply layer (P3)
      board.enter('apply', 'publishing to the Apply stream');
      const applied = await withinPermit(permitDeadline, () =>
        layers.publishPlan.executeWithOptions(until(permitDeadline, 'Apply: publish plan'), [
          plan,
          workflowInfo().workflowId,
        ]),
      );
      if (applied === PERMIT_RAN_OUT) continue chain;
      status.apply = applied;
      board.note(`${applied.published ? 'published' : 'already published'} as ${applied.stream_id}`);

      // Position State Brain (P3.3), blocking until the positions agree
      board.enter('p33', 'comparing exchange and ledger positions');
      for (;;) {
        const p33: P33Permit | typeof PERMIT_RAN_OUT = await withinPermit(permitDeadline, () =>
          layers.checkPosition.executeWithOptions(until(permitDeadline, 'P3.3: position check'), [plan]),
        );
        if (p33 === PERMIT_RAN_OUT) continue chain;
        const changed = status.p33?.reason !== p33.reason || status.p33?.ledger_amount !== p33.ledger_amount;
        status.p33 = p33;
        if (p33.allow) break;

        const nextCheckAt = Math.min(Date.now() + settings.recheckIntervalS * 1000, planDeadline);
        if (changed || status.stage !== 'blocked') board.enter('blocked', blockedDetail(p33, nextCheckAt));
        else board.show(blockedDetail(p33, nextCheckAt));
        retryRequested = false;
        await condition(() => retryRequested, Math.max(1, nextCheckAt - Date.now()));
        if (Date.now() >= planDeadline) return board.finish('expired', `still blocked after ${settings.planMaxAgeS}s`);
        if (Date.now() >= permitDeadline) {
          board.note('permit ran out while blocked; asking the Governor again');
          continue chain;
        }
      }
      board.enter('p33', `positions agree: exchange ${status.p33.exchange_amount}, ledger ${status.p33.ledger_amount}`);

      // Execute. The permit check is inside the activity, so it retries until it is done: once an order may be on
      // the exchange, its fill must reach the ledger whatever the permits say by then.
      board.enter('execute', 'placing the order');
      const result = await layers.executePlan.executeWithOptions(
        { summary: 'Execute: place order', startToCloseTimeout: LAYER_ATTEMPT_TIMEOUT_MS, retry: LAYER_RETRY },
        [plan],
      );
      if (!result.placed) {
        board.note(`no order: ${result.detail}; asking the Governor again`);
        continue chain;
      }
      status.execution = result.execution;
      const fill = `${result.execution.status} ${result.execution.filled_qty} @ ${result.execution.avg_price}`;
      if (result.execution.status !== 'FILLED') return board.finish('failed', `exchange ${fill}`);
      return board.finish('executed', `${fill}, order ${result.execution.order_id}, ledger ${result.ledger_amount}`);
    }
  } catch (err) {
    if (isCancellation(err)) throw err;
    status.last_error = errorMessage(err);
    if (err instanceof ActivityFailure && isTimeout(err)) return board.finish('expired', status.last_error);
    return board.finish('failed', status.last_error);
  }
}

function errorMessage(err: unknown): string {
  if (err instanceof ActivityFailure) {
    const cause = err.cause;
    const message = cause instanceof ApplicationFailure || cause instanceof Error ? cause.message : String(cause);
    return `${err.activityType}: ${message}`;
  }
  return err instanceof Error ? err.message : String(err);
}
