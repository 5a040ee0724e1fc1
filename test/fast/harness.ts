import { randomBytes } from 'node:crypto';
import type { WorkflowHandleWithFirstExecutionRunId } from '@temporalio/client';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { DefaultLogger, Runtime, Worker, type InjectedSinks } from '@temporalio/worker';
import { inject } from 'vitest';
import { registerSearchAttributes } from '../../client/search-attributes';
import { PERMIT_CHAIN_WORKFLOW, planWorkflowId, statusQuery } from '../../contract/messages';
import type { ChainStage, ChainStatus, Plan } from '../../contract/types';
import { makePlan } from '../helpers';
import { testServerExecutable } from '../../cli/servers';
import type { ChainObserverSinks } from '../../workflows/observe';
import type { permitChain } from '../../workflows/permit-chain';
import { MEMORY_ACTIVITY_NAMES, type MemoryActivities, type MemoryChain } from './memory-activities';

export type PlanHandle = WorkflowHandleWithFirstExecutionRunId<typeof permitChain>;

let runtimeInstalled = false;

/** A test file's time-skipping test server and the one worker that serves it, for one in-memory world at a time. */
export interface FastServer {
  env: TestWorkflowEnvironment;
  /**
   * Runs `fn` with `world`'s in-memory activities behind the worker; `start` starts a plan as the client does
   * (workflow id `plan-{plan_id}`, the plan alone as input). One world at a time: the tests of a file run in turn.
   */
  run<T>(world: MemoryChain, fn: (start: (plan: Plan) => Promise<PlanHandle>) => Promise<T>): Promise<T>;
  teardown(): Promise<void>;
}

/**
 * The time-skipping test server of one test file, with the chain's search attributes registered, and one worker on
 * it: the bundled workflows, and activities that are the current world's (creating a worker takes seconds, a world
 * none).
 */
export async function startFastServer(): Promise<FastServer> {
  if (!runtimeInstalled) {
    // Errors only: the tests read the plans' timelines and the audit, and some refuse decisions on purpose.
    Runtime.install({
      logger: new DefaultLogger('ERROR'),
      telemetryOptions: { logging: { filter: { core: 'ERROR', other: 'ERROR' }, forward: {} } },
    });
    runtimeInstalled = true;
  }
  const env = await TestWorkflowEnvironment.createTimeSkipping({ server: { executable: testServerExecutable() } });
  await registerSearchAttributes(env.connection, 'default');
  let world: MemoryChain | undefined;
  let activities: MemoryActivities | undefined;
  const current = (): MemoryActivities => {
    if (!activities) throw new Error('an activity ran outside FastServer.run');
    return activities;
  };
  const delegating = Object.fromEntries(
    MEMORY_ACTIVITY_NAMES.map((name) => [
      name,
      (...args: never[]) => (current()[name] as (...args: never[]) => Promise<unknown>)(...args),
    ]),
  );
  const sinks: InjectedSinks<ChainObserverSinks> = {
    chainObserver: {
      planStarted: { fn: () => undefined },
      planEnded: {
        fn: (_info, outcome) => {
          world?.ended.push(outcome);
        },
      },
    },
  };
  const taskQueue = `fast-${randomBytes(4).toString('hex')}`;
  const worker = await Worker.create({
    connection: env.nativeConnection,
    taskQueue,
    workflowBundle: { codePath: inject('workflowBundlePath') },
    activities: delegating,
    sinks,
  });
  const running = worker.run();
  const start = (plan: Plan) =>
    env.client.workflow.start<typeof permitChain>(PERMIT_CHAIN_WORKFLOW, {
      taskQueue,
      workflowId: planWorkflowId(plan.plan_id),
      args: [{ plan }],
    });
  return {
    env,
    async run(next, fn) {
      world = next;
      activities = next.activities();
      // A worker that fails fails the test, rather than leaving it waiting for a plan that no one runs.
      return Promise.race([fn(start), running.then(() => Promise.reject(new Error('the worker stopped')))]);
    },
    async teardown() {
      worker.shutdown();
      await running;
      await env.teardown();
    },
  };
}

/** A valid plan: SELL 1 BTCUSDT reduce-only unless `fields` say otherwise. */
export function fastPlan(fields: Partial<Plan> = {}): Plan {
  return makePlan({ qty: '1', source: 'fast-test', ...fields });
}

/**
 * The plan's status once `holds` says so of it (queried: a query lets no time pass on the test server, so the plan
 * gets there in real time, within milliseconds of work).
 */
export async function until(
  handle: PlanHandle,
  holds: (status: ChainStatus) => boolean,
  what: string,
  timeoutMs = 10_000,
): Promise<ChainStatus> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const status = await handle.query(statusQuery);
    if (holds(status)) return status;
    if (Date.now() > deadline) throw new Error(`plan ${status.plan_id} is at ${status.stage}: not ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** The plan's status once it has reached `stage`. */
export function reached(handle: PlanHandle, stage: ChainStage): Promise<ChainStatus> {
  return until(handle, (status) => status.stage === stage, stage);
}

/** The timeline as an operator reads it: `stage: detail` lines. */
export function timelineOf(status: ChainStatus): string[] {
  return status.timeline.map((entry) => `${entry.stage}: ${entry.detail}`);
}

/**
 * How long the plan ran on its own clock, first timeline line to last. The test server's clock is no measure: idle
 * between plans, it may skip ahead to a timer that an ended workflow left behind.
 */
export function ageOf(status: ChainStatus): number {
  return (status.timeline.at(-1)?.at ?? 0) - (status.timeline[0]?.at ?? 0);
}
