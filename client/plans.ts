import {
  Client,
  Connection,
  WorkflowExecutionAlreadyStartedError,
  type WorkflowExecutionDescription,
  type WorkflowExecutionStatusName,
  type WorkflowHandle,
} from '@temporalio/client';
import type { ChainConfig } from '../lib/config';
import { connectTemporalWith } from '../lib/connections';
import { PlanConflictError, differingFields, parsePlan, planSummary } from '../lib/plan';
import type { ChainInput, ChainStage, ChainStatus, ClosedByTemporal, Plan } from '../contract/types';
import {
  PERMIT_CHAIN_WORKFLOW,
  chainStageKey,
  planIdKey,
  planWorkflowId,
  statusQuery,
  symbolKey,
  tradingModeKey,
} from '../contract/messages';
import type { permitChain } from '../workflows';

/** A client of the chain's namespace over the chain's connection options (TLS, API key); one clear line on failure. */
export async function connectTemporal(
  config: Pick<ChainConfig, 'temporalAddress' | 'temporalNamespace' | 'temporalTls' | 'temporalApiKey'>,
  { connectTimeoutMs }: { connectTimeoutMs?: number } = {},
): Promise<Client> {
  const connection = await connectTemporalWith(config, async (options) => {
    // Connection.connect would leave a failed connection open, and with it the process.
    const lazy = Connection.lazy({
      ...options,
      ...(connectTimeoutMs !== undefined ? { connectTimeout: connectTimeoutMs } : {}),
    });
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

/** Temporal's ways of closing a plan that the chain never ended itself: its status then has no outcome. */
export const CLOSED_BY_TEMPORAL: Partial<Record<WorkflowExecutionStatusName, ClosedByTemporal['status']>> = {
  TERMINATED: 'terminated',
  TIMED_OUT: 'timed_out',
  CANCELLED: 'canceled',
};
/** A terminate's reason is anybody's text: this much of it is shown. */
const REASON_MAX_CHARS = 300;

/**
 * The plan's status (the `status` query); for a plan Temporal closed before the chain ended it (terminated, timed
 * out), with `closed` saying so, the stage it had reached kept as `stage`, and what to check.
 */
export async function planStatus(client: Client, planId: string): Promise<ChainStatus> {
  const handle = client.workflow.getHandle(planWorkflowId(planId));
  // Asked together: one round trip's wait, not two (`status` is what operators type most).
  const queried = handle.query(statusQuery).then(
    (status) => ({ status }),
    (error: unknown) => ({ error }),
  );
  const description = await handle.describe();
  const answer = await queried;
  const how = CLOSED_BY_TEMPORAL[description.status.name];
  if (!how) {
    if ('error' in answer) throw answer.error;
    return answer.status;
  }
  // A plan closed before its first workflow task has no status to replay: its search attributes stand in.
  const status = 'status' in answer ? answer.status : statusFromAttributes(planId, description);
  return { ...status, closed: await closedByTemporal(client, description, status, how) };
}

function statusFromAttributes(planId: string, description: WorkflowExecutionDescription): ChainStatus {
  const attrs = description.typedSearchAttributes;
  const mode = attrs.get(tradingModeKey);
  return {
    plan_id: planId,
    stage: (attrs.get(chainStageKey) ?? 'governor') as ChainStage,
    ...(mode === 'testnet' || mode === 'production' ? { mode } : {}),
    attempts: 0,
    timeline: [],
  };
}

/** What an operator does about a plan Temporal closed in `stage`: check the exchange if its order may be there. */
export function closedNextStep(symbol: string, stage: string, orderMayBeOnExchange: boolean): string {
  if (orderMayBeOnExchange) {
    return (
      `its order may be on the exchange with no record of the chain's: check \`permit-chain position ${symbol}\`; ` +
      `if the exchange and the ledger differ, \`permit-chain reconcile ${symbol} --by NAME\` (shows the change first)`
    );
  }
  if (stage === 'execute') return `its order was recorded before it was closed: \`permit-chain position ${symbol}\``;
  return `it placed no order (closed in stage ${stage}); submit a new plan if the trade is still wanted`;
}

async function closedByTemporal(
  client: Client,
  description: WorkflowExecutionDescription,
  status: ChainStatus,
  how: ClosedByTemporal['status'],
): Promise<ClosedByTemporal> {
  const symbol = description.typedSearchAttributes.get(symbolKey) ?? status.governor?.symbol ?? 'SYMBOL';
  const mayBe = status.stage === 'execute' && !status.execution;
  const reason = await closeReason(client, description).catch(() => undefined);
  return {
    status: how,
    at: (description.closeTime ?? new Date()).getTime(),
    ...(reason ? { reason } : {}),
    order_may_be_on_exchange: mayBe,
    next_step: closedNextStep(symbol, status.stage, mayBe),
  };
}

/** The reason a terminate gave, from the run's last history event (read alone, newest first). */
async function closeReason(client: Client, description: WorkflowExecutionDescription): Promise<string | undefined> {
  const last = await client.workflowService.getWorkflowExecutionHistoryReverse({
    namespace: client.options.namespace,
    execution: { workflowId: description.workflowId, runId: description.runId },
    maximumPageSize: 1,
  });
  const reason = last.history?.events?.[0]?.workflowExecutionTerminatedEventAttributes?.reason;
  if (!reason) return undefined;
  return reason.length > REASON_MAX_CHARS ? `${reason.slice(0, REASON_MAX_CHARS)}… (${reason.length} chars)` : reason;
}
