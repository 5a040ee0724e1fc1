import { redisKeys } from '../contract/keys';
import type { CarriedState } from '../contract/types';
import { auditFields } from './audit';
import type { ActivityDeps } from './deps';

/** The record a run leaves for the run it continues as: whose it is, and the state. */
interface CarriedRecord {
  workflow_id: string;
  run_id: string;
  saved_at: number;
  state: CarriedState;
}

/** What the next run is told: the state its predecessor left, or why there is none to take. */
export type Resumption = { carried: CarriedState } | { carried: null; why: string };

/**
 * Why a record is not the state of the run that `workflowId` continued from `previousRunId`, or undefined when it is.
 * A pure check: the record names its workflow and the run that wrote it, and the Temporal server alone sets a run's
 * `continuedFromExecutionRunId` (a starter cannot).
 */
export function carriedRefusal(
  record: CarriedRecord | null,
  expected: { workflowId: string; previousRunId: string; planId: string },
): string | undefined {
  if (!record) return 'no state carried over (none written, or it expired)';
  if (record.workflow_id !== expected.workflowId) return `the state is workflow ${record.workflow_id}'s`;
  if (record.run_id !== expected.previousRunId) {
    return `the state was written by run ${record.run_id}, not by run ${expected.previousRunId} before this one`;
  }
  if (record.state.status.plan_id !== expected.planId) return `the state is plan ${record.state.status.plan_id}'s`;
  return undefined;
}

/**
 * Continue-as-new without trusting a caller: the workflow's input stays the plan alone (the Governor's admission
 * refuses anything else), and a run's state reaches the next run through Redis, in a record that names the run
 * that wrote it. The next run takes it only when that run is the one it continued from.
 */
export function createCarryActivities({ redis, config, clock }: ActivityDeps) {
  const keys = redisKeys(config.keyPrefix);
  return {
    /**
     * Writes the state a run hands to the run it continues as, over any earlier one. It lives as long as a plan may
     * (PLAN_MAX_AGE_S): the next run normally reads it within milliseconds, but no worker may be running then.
     */
    async carryOver({
      workflowId,
      runId,
      state,
    }: {
      workflowId: string;
      runId: string;
      state: CarriedState;
    }): Promise<void> {
      const record: CarriedRecord = { workflow_id: workflowId, run_id: runId, saved_at: clock(), state };
      await redis.set(keys.carriedState(state.status.plan_id), JSON.stringify(record), 'EX', config.planMaxAgeS);
    },

    /**
     * The state the previous run (`previousRunId`, from the server's `continuedFromExecutionRunId`) left for this
     * one. Anything else is refused and audited: the plan then starts over as a new plan would, asking the Governor.
     */
    async resumeCarried({
      workflowId,
      previousRunId,
      planId,
    }: {
      workflowId: string;
      previousRunId: string;
      planId: string;
    }): Promise<Resumption> {
      const raw = await redis.get(keys.carriedState(planId));
      let record: CarriedRecord | null = null;
      try {
        record = raw === null ? null : (JSON.parse(raw) as CarriedRecord);
      } catch {
        record = null;
      }
      const why = carriedRefusal(record, { workflowId, previousRunId, planId });
      if (why === undefined && record) return { carried: record.state };
      const reason = why ?? 'unreadable';
      await redis.xadd(
        keys.auditStream,
        '*',
        ...auditFields({ plan_id: planId, layer: 'governor', decision: 'carry_refused', reason, at: clock() }),
      );
      return { carried: null, why: reason };
    },
  };
}
