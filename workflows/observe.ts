/**
 * Not a workflow: the workflow interceptors the worker loads beside `workflows/` (`interceptors.workflowModules`).
 * They tell the worker process when a plan's workflow starts and how it ends, through a sink: a sink call is no
 * command and leaves no event in the history, so recorded histories replay unchanged. A replay (a workflow evicted
 * from the cache, another worker taking it over, `Worker.runReplayHistories`) tells nothing: each start and each
 * ending is told once, by the worker that runs it, so the counts are true summed over any number of workers.
 */
import {
  proxySinks,
  workflowInfo,
  type Next,
  type Sinks,
  type WorkflowExecuteInput,
  type WorkflowInboundCallsInterceptor,
  type WorkflowInterceptorsFactory,
} from '@temporalio/workflow';
import { PERMIT_CHAIN_WORKFLOW } from '../contract/messages';
import type { ChainOutcome, ChainStatus } from '../contract/types';

export interface ChainObserverSinks extends Sinks {
  chainObserver: {
    planStarted(): void;
    planEnded(outcome: ChainOutcome | 'unknown'): void;
  };
}

const { chainObserver } = proxySinks<ChainObserverSinks>();

function live(): boolean {
  return !workflowInfo().unsafe.isReplaying;
}

class ObservePlan implements WorkflowInboundCallsInterceptor {
  async execute(input: WorkflowExecuteInput, next: Next<WorkflowInboundCallsInterceptor, 'execute'>): Promise<unknown> {
    if (workflowInfo().workflowType !== PERMIT_CHAIN_WORKFLOW) return next(input);
    // A run that continues a plan is not a new plan; its end, or the run it continues as, tells the rest.
    const firstRun = workflowInfo().continuedFromExecutionRunId === undefined;
    if (live() && firstRun) chainObserver.planStarted();
    const status = (await next(input)) as ChainStatus | undefined;
    if (live()) chainObserver.planEnded(status?.outcome ?? 'unknown');
    return status;
  }
}

export const interceptors: WorkflowInterceptorsFactory = () => ({ inbound: [new ObservePlan()] });
