import { ApplicationFailure, Context } from '@temporalio/activity';
import { AmountError } from '../lib/decimal';
import { createApplyActivities } from './apply';
import { createCarryActivities } from './carry';
import type { ActivityDeps } from './deps';
import { ExchangeAnswerRefused } from './exchange/answer';
import { ExchangeAuthError, ExchangeBusyError, ExchangeUnknownError } from './exchange/port';
import { createExecuteActivities } from './execute';
import { createGovernorActivities } from './governor';
import { createGovernorTurnActivities } from './governor-turn';
import { LedgerConflict } from './ledger';
import { createP33Activities } from './p33';
import { createSymbolLockActivities } from './symbol-lock';

export type { ActivityDeps } from './deps';

/**
 * Makes bad stored data a permanent failure: an amount in Redis that is not a decimal, or a ledger that cannot be
 * matched with a recorded fill, does not heal by retrying, so the plan ends `failed` with the reason and what to do,
 * and `permit-chain retry` runs it again once a person has fixed it. An exchange that is busy (429/418, 5xx) or whose
 * answer is unknown is retried no sooner than it asks (`Retry-After`), the message saying why, in the activity's
 * attempts as the Web UI shows them. An exchange that refuses the keys (ExchangeAuthError), or whose answer about an
 * order failed its check twice (`exchange_answer_refused`), fails the plan at once.
 */
function failOnBadData<T extends Record<string, (...args: never[]) => Promise<unknown>>>(activities: T): T {
  const wrapped: Record<string, unknown> = {};
  for (const [name, fn] of Object.entries(activities)) {
    wrapped[name] = async (...args: never[]) => {
      try {
        return await fn(...args);
      } catch (err) {
        if (err instanceof AmountError) throw ApplicationFailure.nonRetryable(err.message, 'CorruptAmount');
        if (err instanceof LedgerConflict) throw ApplicationFailure.nonRetryable(err.message, 'LedgerConflict');
        // Refused credentials do not heal by retrying, and retrying them could get the IP banned.
        if (err instanceof ExchangeAuthError) throw ApplicationFailure.nonRetryable(err.message, err.name);
        // An answer that failed its check twice: looking a third time does not make it true; a person decides.
        if (err instanceof ExchangeAnswerRefused) throw ApplicationFailure.nonRetryable(err.message, err.name);
        if (err instanceof ExchangeBusyError || err instanceof ExchangeUnknownError) {
          throw ApplicationFailure.create({
            message: err.message,
            type: err.name,
            nextRetryDelay: Math.max(1, err.retryAfterMs),
          });
        }
        throw err;
      }
    };
  }
  return wrapped as T;
}

/** How often Execute says it is alive while it talks to the exchange (its heartbeat timeout is 10 s: the workflow). */
export const EXECUTE_HEARTBEAT_MS = 2_000;

/**
 * Heartbeats while `fn` runs, so that a worker killed in the middle is noticed at the heartbeat timeout rather than at
 * the end of the attempt's start-to-close timeout. Outside an activity (a direct call in a test) it just runs `fn`.
 */
function heartbeating<A extends unknown[], R>(fn: (...args: A) => Promise<R>): (...args: A) => Promise<R> {
  return async (...args: A) => {
    let context: Context;
    try {
      context = Context.current();
    } catch {
      return fn(...args);
    }
    const timer = setInterval(() => context.heartbeat(), EXECUTE_HEARTBEAT_MS);
    try {
      return await fn(...args);
    } finally {
      clearInterval(timer);
    }
  };
}

/** All the chain's activities over one set of clients: what the worker registers. */
export function createActivities(deps: ActivityDeps) {
  const execute = createExecuteActivities(deps);
  const governor = createGovernorActivities(deps);
  const line = createSymbolLockActivities(deps);
  return failOnBadData({
    // The admission and the permit run inside governorTurn (one call per turn): the workflow calls neither alone.
    verifyDecision: (request: Parameters<typeof governor.verifyDecision>[0]) => governor.verifyDecision(request),
    recordOperatorDecision: (entry: Parameters<typeof governor.recordOperatorDecision>[0]) =>
      governor.recordOperatorDecision(entry),
    ...createGovernorTurnActivities(deps, governor, line),
    ...createApplyActivities(deps),
    ...createP33Activities(deps),
    ...execute,
    executePlan: heartbeating((plan: Parameters<typeof execute.executePlan>[0]) => execute.executePlan(plan)),
    ...line,
    ...createCarryActivities(deps),
  });
}

export type ChainActivities = ReturnType<typeof createActivities>;
