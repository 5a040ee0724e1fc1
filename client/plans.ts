import { Client, Connection, WorkflowExecutionAlreadyStartedError, type WorkflowHandle } from '@temporalio/client';
import type { ChainConfig } from '../lib/config';
import { connectTemporalWith } from '../lib/connections';
import { PlanConflictError, differingFields, parsePlan, planSummary } from '../lib/plan';
import type { ChainInput, ChainStatus, Plan } from '../contract/types';
import {
  PERMIT_CHAIN_WORKFLOW,
  chainStageKey,
  planIdKey,
  planWorkflowId,
  statusQuery,
  symbolKey,
} from '../contract/messages';
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
 * duplicate is joined (USE_EXISTING) and a finished one is never run again (REJECT_DUPLICATE). The input is the plan
 * alone: its rules are the worker's. With `explicitId` (the caller chose the plan id rather than deriving it from
 * the plan), a plan id that already names a different trade is refused with a {@link PlanConflictError}.
 */
export async function startPlan(
  client: Client,
  config: Pick<ChainConfig, 'taskQueue'>,
  plan: Plan,
  { explicitId = false }: { explicitId?: boolean } = {},
): Promise<StartedPlan> {
  const workflowId = planWorkflowId(plan.plan_id);
  const input: ChainInput = { plan };
  let handle: WorkflowHandle<typeof permitChain>;
  try {
    handle = await client.workflow.start<typeof permitChain>(PERMIT_CHAIN_WORKFLOW, {
      taskQueue: config.taskQueue,
      workflowId,
      args: [input],
      workflowIdConflictPolicy: 'USE_EXISTING',
      workflowIdReusePolicy: 'REJECT_DUPLICATE',
      staticSummary: planSummary(plan),
      staticDetails: `source ${plan.source}${plan.reason ? `: ${plan.reason}` : ''}`,
      // Shown at once in the Web UI; the workflow sets them again (and TradingMode) from what the Governor admits.
      typedSearchAttributes: [
        { key: planIdKey, value: plan.plan_id },
        { key: symbolKey, value: plan.symbol },
        { key: chainStageKey, value: 'governor' },
      ],
    });
  } catch (err) {
    if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
    handle = client.workflow.getHandle(workflowId);
  }
  // A derived id is the plan's own hash: the same id is the same plan. A chosen one may name another trade.
  if (explicitId) {
    const existing = await startedPlan(client, workflowId);
    const differs = existing ? differingFields(existing, plan) : ['plan'];
    if (differs.length > 0) throw new PlanConflictError(plan.plan_id, differs);
  }
  return { planId: plan.plan_id, workflowId, handle };
}

/** The plan a workflow was started with (its first history event), or undefined when that is no valid plan. */
async function startedPlan(client: Client, workflowId: string): Promise<Plan | undefined> {
  const history = await client.workflowService.getWorkflowExecutionHistory({
    namespace: client.options.namespace,
    execution: { workflowId },
    maximumPageSize: 1,
  });
  const payload = history.history?.events?.[0]?.workflowExecutionStartedEventAttributes?.input?.payloads?.[0];
  if (!payload) return undefined;
  const input = client.options.loadedDataConverter.payloadConverter.fromPayload<Partial<ChainInput>>(payload);
  try {
    return parsePlan(input?.plan);
  } catch {
    return undefined;
  }
}

export async function planStatus(client: Client, planId: string): Promise<ChainStatus> {
  return client.workflow.getHandle(planWorkflowId(planId)).query(statusQuery);
}
