import {
  Client,
  Connection,
  WorkflowClient,
  WorkflowExecutionAlreadyStartedError,
  type WorkflowExecutionDescription,
  type WorkflowExecutionStatusName,
  type WorkflowHandle,
} from '@temporalio/client';
import type { ChainConfig } from '../lib/config';
import { connectTemporalWith } from '../lib/connections';
import { PlanConflictError, differingFields, parsePlan, planSummary } from '../lib/plan';
import type { PayloadConverter } from '@temporalio/common';
import type { temporal } from '@temporalio/proto';
import type {
  ChainInput,
  ChainStage,
  ChainStatus,
  ClosedByTemporal,
  ExecuteResult,
  ExecutionRecord,
  Plan,
} from '../contract/types';
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
import type { ChainActivities } from '../activities';

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
/** A terminate's reason or a failure's message is anybody's text: this much of it is shown. */
const REASON_MAX_CHARS = 300;

/** Per client, the workflow client `status` queries through (see {@link openOnly}). */
const openOnlyClients = new WeakMap<Client, WorkflowClient>();

/**
 * The client's workflow client, with queries to a closed workflow refused by the server at once (NOT_OPEN) instead
 * of sent to a worker of the build it ran on, which may be retired.
 */
function openOnly(client: Client): WorkflowClient {
  let workflows = openOnlyClients.get(client);
  if (!workflows) {
    workflows = new WorkflowClient({
      connection: client.connection,
      namespace: client.options.namespace,
      identity: client.options.identity,
      dataConverter: client.options.dataConverter,
      interceptors: client.options.interceptors.workflow,
      queryRejectCondition: 'NOT_OPEN',
    });
    openOnlyClients.set(client, workflows);
  }
  return workflows;
}

/**
 * The plan's status. A running plan answers the `status` query. An ended plan is never asked (its query would go to
 * a worker of the build it ran on, which may be retired: the server refuses it instead): its own result (the
 * ChainStatus its workflow returned) and its history answer. For a plan Temporal closed before the chain ended it
 * (terminated, timed out), `closed` says so, with the stage it had reached as `stage` and what to check.
 */
export async function planStatus(client: Client, planId: string): Promise<ChainStatus> {
  const workflowId = planWorkflowId(planId);
  // Asked together: one round trip's wait, not two, for a running plan (`status` is what operators type most).
  const queried = openOnly(client)
    .getHandle<typeof permitChain>(workflowId)
    .query(statusQuery)
    .then(
      (status) => ({ status }),
      (error: unknown) => ({ error }),
    );
  const description = await client.workflow.getHandle(workflowId).describe();
  if (description.status.name !== 'RUNNING') return endedStatus(client, planId, description);
  const answer = await queried;
  if ('error' in answer) throw answer.error;
  return answer.status;
}

/**
 * The status of an ended plan, from the server alone (no worker): a plan the chain ended returned its ChainStatus
 * (the close event's result); one Temporal closed has its search attributes, and its history says whether its order
 * was recorded.
 */
export async function endedStatus(
  client: Client,
  planId: string,
  description: WorkflowExecutionDescription,
): Promise<ChainStatus> {
  const execution = { workflowId: description.workflowId, runId: description.runId };
  const converter = client.options.loadedDataConverter.payloadConverter;
  const how = CLOSED_BY_TEMPORAL[description.status.name];
  if (!how) {
    const last = await client.workflowService.getWorkflowExecutionHistoryReverse({
      namespace: client.options.namespace,
      execution,
      maximumPageSize: 1,
    });
    const event = last.history?.events?.[0];
    const result = event?.workflowExecutionCompletedEventAttributes?.result?.payloads?.[0];
    if (result) return converter.fromPayload<ChainStatus>(result);
    // The workflow itself failed (a bug, not a plan's outcome): its failure is the last thing it says.
    const failure = event?.workflowExecutionFailedEventAttributes?.failure?.message;
    return { ...statusFromAttributes(planId, description), ...(failure ? { last_error: bounded(failure) } : {}) };
  }
  const history = await client.workflow.getHandle(execution.workflowId, execution.runId).fetchHistory();
  const status = statusFromHistory(statusFromAttributes(planId, description), history, converter);
  const reason = history.events?.at(-1)?.workflowExecutionTerminatedEventAttributes?.reason;
  return { ...status, closed: closedByTemporal(description, status, how, reason ? bounded(reason) : undefined) };
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

/** Execute's activity type, as the workflow schedules it. */
const EXECUTE_ACTIVITY: keyof ChainActivities = 'executePlan';

/**
 * What a closed run's history adds to its search attributes: Execute was reached if its activity was scheduled (the
 * attribute follows stages only when the plan waits), and its order is recorded if that activity returned one.
 */
function statusFromHistory(
  status: ChainStatus,
  history: temporal.api.history.v1.IHistory,
  converter: PayloadConverter,
): ChainStatus {
  const events = history.events ?? [];
  const executes = new Set<string>();
  for (const event of events) {
    if (event.activityTaskScheduledEventAttributes?.activityType?.name === EXECUTE_ACTIVITY) {
      executes.add(String(event.eventId));
    }
  }
  if (executes.size === 0) return status;
  let execution: ExecutionRecord | undefined;
  for (const event of events) {
    const completed = event.activityTaskCompletedEventAttributes;
    const payload = completed?.result?.payloads?.[0];
    if (!payload || !executes.has(String(completed.scheduledEventId))) continue;
    const result = converter.fromPayload<ExecuteResult>(payload);
    if (result.placed) execution = result.execution;
  }
  return { ...status, stage: 'execute', ...(execution ? { execution } : {}) };
}

/** Bounded to REASON_MAX_CHARS, saying how long it was. */
function bounded(text: string): string {
  return text.length > REASON_MAX_CHARS ? `${text.slice(0, REASON_MAX_CHARS)}… (${text.length} chars)` : text;
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

function closedByTemporal(
  description: WorkflowExecutionDescription,
  status: ChainStatus,
  how: ClosedByTemporal['status'],
  reason: string | undefined,
): ClosedByTemporal {
  const symbol = description.typedSearchAttributes.get(symbolKey) ?? status.governor?.symbol ?? 'SYMBOL';
  const mayBe = status.stage === 'execute' && !status.execution;
  return {
    status: how,
    at: (description.closeTime ?? new Date()).getTime(),
    ...(reason ? { reason } : {}),
    order_may_be_on_exchange: mayBe,
    next_step: closedNextStep(symbol, status.stage, mayBe),
  };
}
