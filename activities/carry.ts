import { z } from 'zod';
import { redisKeys } from '../contract/keys';
import type { CarriedState } from '../contract/types';
import { auditFields } from './audit';
import type { ActivityDeps } from './deps';

/**
 * The format this build writes. A contract between builds (docs/contract.md): while an old build drains, a run of it
 * may hand its state to a run of the new build, so a new build reads every format the builds it replaces write, and a
 * change of shape is a new number, read beside the old one until no build writes the old one.
 */
export const CARRIED_FORMAT = 1;
/** The formats this build reads. */
export const CARRIED_FORMATS_READ: readonly number[] = [1];

const finite = z.number().refine(Number.isFinite);
/** Where a run waited, as format 1 holds it: what the next run acts on (its deadlines, the signatures it needs). */
const CarriedWait = z.object({
  started_at: finite,
  waiting: z.discriminatedUnion('stage', [
    z.object({
      stage: z.literal('blocked'),
      denial: z.object({
        reason: z.string(),
        exchange_amount: z.string(),
        ledger_amount: z.string(),
        tolerance: z.string(),
        evaluated_at: finite,
      }),
    }),
    z.object({
      stage: z.literal('awaiting_approval'),
      shown: z.object({
        exchange_amount: z.string(),
        ledger_amount: z.string(),
        tolerance: z.string(),
        taken_at: finite,
      }),
      until: finite,
      stale: z.boolean(),
      required: z.number().int().min(1).optional(),
    }),
  ]),
});

/** The record a run leaves for the run it continues as: its format, whose it is, and the state. */
export interface CarriedRecord {
  format: number;
  workflow_id: string;
  run_id: string;
  saved_at: number;
  state: CarriedState;
}

/**
 * The record as stored (`raw`, the key's value) read for the run that `expected` describes: its state, or why it is
 * refused. Pure: the carried-state fixtures of earlier builds are read through it (test/unit/carried-format.test.ts).
 */
export function readCarried(
  raw: string | null,
  expected: { workflowId: string; previousRunId: string; planId: string },
): { state: CarriedState } | { why: string } {
  if (raw === null) return { why: 'no state carried over (none written, or it expired)' };
  let record: unknown;
  try {
    record = JSON.parse(raw);
  } catch {
    return { why: 'the state is not JSON' };
  }
  if (record === null || typeof record !== 'object' || Array.isArray(record)) {
    return { why: 'the state is not a record' };
  }
  const why = carriedRefusal(record as CarriedRecord, expected);
  return why === undefined ? { state: (record as CarriedRecord).state } : { why };
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
  if (!CARRIED_FORMATS_READ.includes(record.format)) {
    const format = typeof record.format === 'number' ? `format ${record.format}` : 'no format';
    return `the state is in ${format}, which this build does not read (it reads format ${CARRIED_FORMATS_READ.join(', ')})`;
  }
  // A record of a known format from an unknown writer: its shape is checked before it is read.
  const state: unknown = record.state;
  const status = state !== null && typeof state === 'object' ? (state as { status?: unknown }).status : undefined;
  if (status === null || typeof status !== 'object' || typeof (status as { plan_id?: unknown }).plan_id !== 'string') {
    return 'the state has no plan status';
  }
  const wait = CarriedWait.safeParse(state);
  if (!wait.success) {
    const issue = wait.error.issues[0];
    return `the state's ${issue?.path.join('.') || 'wait'} is not as format 1 writes it`;
  }
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
      const record: CarriedRecord = {
        format: CARRIED_FORMAT,
        workflow_id: workflowId,
        run_id: runId,
        saved_at: clock(),
        state,
      };
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
      const read = readCarried(await redis.get(keys.carriedState(planId)), { workflowId, previousRunId, planId });
      if ('state' in read) return { carried: read.state };
      const reason = read.why;
      await redis.xadd(
        keys.auditStream,
        '*',
        ...auditFields({ plan_id: planId, layer: 'governor', decision: 'carry_refused', reason, at: clock() }),
      );
      return { carried: null, why: reason };
    },
  };
}
