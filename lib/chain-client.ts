import { Client, Connection, WorkflowExecutionAlreadyStartedError, type WorkflowHandle } from '@temporalio/client';
import type { ChainConfig } from './config';
import { chainSettings } from './config';
import { connectTemporalWith } from './connections';
import { planSummary } from './plan';
import type { ChainStatus, Plan } from './types';
import {
  PERMIT_CHAIN_WORKFLOW,
  chainStageKey,
  planIdKey,
  planWorkflowId,
  symbolKey,
  tradingModeKey,
} from '../workflows/messages';
import type { permitChain } from '../workflows';

/** A client of the chain's namespace over the chain's connection options (TLS, API key); one clear line on failure. */
export async function connectTemporal(
  config: Pick<ChainConfig, 'temporalAddress' | 'temporalNamespace' | 'temporalTls' | 'temporalApiKey'>,
): Promise<Client> {
  const connection = await connectTemporalWith(config, async (options) => {
    // Connection.connect would leave a failed connection open, and with it the process.
    const lazy = Connection.lazy(options);
    try {
      await lazy.ensureConnected();
      return lazy;
    } catch (err) {
      await lazy.close().catch(() => undefined);
      throw err;
    }
  });
  return new Client({ connection, namespace: config.temporalNamespace });
}

export interface StartedPlan {
  planId: string;
  workflowId: string;
  handle: WorkflowHandle<typeof permitChain>;
}

/**
 * Starts the plan's workflow, or reaches the one that already exists: the workflow id is the plan's, a running
 * duplicate is joined (USE_EXISTING) and a finished one is never run again (REJECT_DUPLICATE).
 */
export async function startPlan(client: Client, config: ChainConfig, plan: Plan): Promise<StartedPlan> {
  const workflowId = planWorkflowId(plan.plan_id);
  try {
    const handle = await client.workflow.start<typeof permitChain>(PERMIT_CHAIN_WORKFLOW, {
      taskQueue: config.taskQueue,
      workflowId,
      args: [{ plan, settings: chainSettings(config) }],
      workflowIdConflictPolicy: 'USE_EXISTING',
      workflowIdReusePolicy: 'REJECT_DUPLICATE',
      staticSummary: planSummary(plan),
      staticDetails: `source ${plan.source}${plan.reason ? `: ${plan.reason}` : ''}`,
      typedSearchAttributes: [
        { key: planIdKey, value: plan.plan_id },
        { key: symbolKey, value: plan.symbol },
        { key: tradingModeKey, value: config.tradingMode },
        { key: chainStageKey, value: 'governor' },
      ],
    });
    return { planId: plan.plan_id, workflowId, handle };
  } catch (err) {
    if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
    return { planId: plan.plan_id, workflowId, handle: client.workflow.getHandle(workflowId) };
  }
}

export async function planStatus(client: Client, planId: string): Promise<ChainStatus> {
  return client.workflow.getHandle(planWorkflowId(planId)).query<ChainStatus>('status');
}
