import {
  ActivityFailure,
  ApplicationFailure,
  TimeoutFailure,
  proxyActivities,
  proxyLocalActivities,
} from '@temporalio/workflow';
import type { ChainActivities } from '../activities';
import type { ChainOutcome } from '../contract/types';

/** Redis round trips take milliseconds; a layer that has not answered in this long is retried. */
export const LAYER_ATTEMPT_TIMEOUT_MS = 10_000;
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

/** The layers as regular activities (each attempt an event pair in the history); Execute is always one. */
export const regular = proxyActivities<ChainActivities>({
  startToCloseTimeout: LAYER_ATTEMPT_TIMEOUT_MS,
  retry: LAYER_RETRY,
});
/** The layers as local activities (a marker each, no task queue round trip): the default (LAYER_ACTIVITIES). */
export const local = proxyLocalActivities<ChainActivities>({
  startToCloseTimeout: LAYER_ATTEMPT_TIMEOUT_MS,
  retry: LAYER_RETRY,
});
export type Layers = typeof local | typeof regular;

/** Marks a layer call that ran out of permit life: the chain goes back to the Governor. */
export const PERMIT_RAN_OUT = Symbol('permit ran out');

/** How a plan ends, when it ends before executing. */
export interface Ending {
  outcome: ChainOutcome;
  detail: string;
}

/** The options of one layer call: its summary, and timeouts from what remains until `deadline` (ms), if any. */
export function options(summary: string, deadline?: number) {
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
export function isTimeout(err: unknown): boolean {
  return err instanceof TimeoutFailure || (err instanceof ActivityFailure && err.cause instanceof TimeoutFailure);
}

/** Runs a layer within the permit's life; a timeout caused by that deadline means "ask the Governor again". */
export async function withinPermit<T>(deadline: number, call: () => Promise<T>): Promise<T | typeof PERMIT_RAN_OUT> {
  if (Date.now() >= deadline) return PERMIT_RAN_OUT;
  try {
    return await call();
  } catch (err) {
    if (isTimeout(err)) return PERMIT_RAN_OUT;
    throw err;
  }
}

/** The failure as an operator reads it: the layer that failed, and why. */
export function errorMessage(err: unknown, step: string): string {
  if (err instanceof ActivityFailure) {
    const cause = err.cause;
    const message = cause instanceof ApplicationFailure || cause instanceof Error ? cause.message : String(cause);
    return `${err.activityType}: ${message}`;
  }
  const message = err instanceof Error ? err.message : String(err);
  return step ? `${step}: ${message}` : message;
}
