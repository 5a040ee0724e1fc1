import { createApplyActivities } from './apply';
import type { ActivityDeps } from './deps';
import { createExecuteActivities } from './execute';
import { createGovernorActivities } from './governor';
import { createP33Activities } from './p33';

export type { ActivityDeps } from './deps';

/** All the chain's activities over one set of clients: what the worker registers. */
export function createActivities(deps: ActivityDeps) {
  return {
    ...createGovernorActivities(deps),
    ...createApplyActivities(deps),
    ...createP33Activities(deps),
    ...createExecuteActivities(deps),
  };
}

export type ChainActivities = ReturnType<typeof createActivities>;
