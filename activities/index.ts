import { ApplicationFailure } from '@temporalio/activity';
import { AmountError } from '../lib/decimal';
import { createApplyActivities } from './apply';
import type { ActivityDeps } from './deps';
import { createExecuteActivities } from './execute';
import { createGovernorActivities } from './governor';
import { LedgerConflict } from './ledger';
import { createP33Activities } from './p33';
import { createSymbolLockActivities } from './symbol-lock';

export type { ActivityDeps } from './deps';

/**
 * Makes bad stored data a permanent failure: an amount in Redis that is not a decimal, or a ledger that cannot be
 * matched with a recorded fill, does not heal by retrying, so the plan ends `failed` with the reason and what to do,
 * and `permit-chain retry` runs it again once a person has fixed it.
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
        throw err;
      }
    };
  }
  return wrapped as T;
}

/** All the chain's activities over one set of clients: what the worker registers. */
export function createActivities(deps: ActivityDeps) {
  return failOnBadData({
    ...createGovernorActivities(deps),
    ...createApplyActivities(deps),
    ...createP33Activities(deps),
    ...createExecuteActivities(deps),
    ...createSymbolLockActivities(deps),
  });
}

export type ChainActivities = ReturnType<typeof createActivities>;
