import { randomUUID } from 'node:crypto';
import type { Client, WorkflowExecutionInfo } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import type { Redis } from 'ioredis';
import { auditFields } from '../activities/audit';
import { ReconcileStale, createLedger, type ReconcileState } from '../activities/ledger';
import { createSymbolLine } from '../activities/symbol-lock';
import {
  describeUnrecorded,
  findUnrecordedOrders,
  unrecordedEntry,
  type UnrecordedOrder,
} from '../activities/unrecorded';
import type { ExchangePort } from '../activities/exchange';
import type { ChainConfig } from '../lib/config';
import { formatDec } from '../lib/decimal';
import { positionsAgree } from '../activities/p33';
import { readPositions } from '../activities/positions';
import { redisKeys, type RedisKeys } from '../contract/keys';
import { CLOSED_BY_TEMPORAL, endedStatus } from './plans';
import { currentBuildId, pinnedVersionOf, type PinnedVersion } from './deployment-version';
import type { ChainOutcome, ChainStage, ChainStatus, ClosedByTemporal } from '../contract/types';
import {
  PERMIT_CHAIN_WORKFLOW,
  chainOutcomeKey,
  chainStageKey,
  planIdKey,
  planWorkflowId,
  retrySignal,
  symbolFreeSignal,
  symbolKey,
  tradingModeKey,
} from '../contract/messages';

export const STAGES: readonly ChainStage[] = [
  'governor',
  'awaiting_approval',
  'apply',
  'p33',
  'blocked',
  'execute',
  'done',
];
export const OUTCOMES: readonly ChainOutcome[] = ['executed', 'denied', 'rejected', 'expired', 'cancelled', 'failed'];
/** What `list` shows and filters as a plan's outcome: the chain's, or how Temporal closed a plan the chain had not. */
export const LIST_OUTCOMES: readonly (ChainOutcome | ClosedByTemporal['status'])[] = [
  ...OUTCOMES,
  'terminated',
  'timed_out',
  'canceled',
];
/** The visibility ExecutionStatus of each way Temporal closes a plan. */
const EXECUTION_STATUS: Record<ClosedByTemporal['status'], string> = {
  terminated: 'Terminated',
  timed_out: 'TimedOut',
  canceled: 'Canceled',
};

/** An operator's action that is not about one plan, in the audit stream (plan id `-`). */
function operatorAudit(decision: string, reason: string): string[] {
  return auditFields({ plan_id: '-', layer: 'operator', decision, reason, at: Date.now() });
}

/** Sets or clears the Governor's kill switch, audited in the same MULTI. */
export async function setKillSwitch(redis: Redis, keys: RedisKeys, on: boolean, by: string): Promise<void> {
  const multi = redis.multi();
  if (on) multi.set(keys.killSwitch, '1');
  else multi.del(keys.killSwitch);
  await multi
    .xadd(keys.auditStream, '*', ...operatorAudit(on ? 'kill_switch_on' : 'kill_switch_off', `by ${by}`))
    .exec();
}

export interface PlanFilter {
  stage?: ChainStage;
  outcome?: ChainOutcome | ClosedByTemporal['status'];
  symbol?: string;
  /** Only running workflows. */
  running?: boolean;
  /** Only plans started before this time. */
  startedBefore?: Date;
}

/** The visibility query for a filter: every clause a search attribute of the contract. */
export function planQuery(filter: PlanFilter): string {
  const clauses = [`WorkflowType = "${PERMIT_CHAIN_WORKFLOW}"`];
  if (filter.stage) clauses.push(`ChainStage = "${filter.stage}"`);
  if (filter.outcome && filter.outcome in EXECUTION_STATUS) {
    clauses.push(`ExecutionStatus = "${EXECUTION_STATUS[filter.outcome as ClosedByTemporal['status']]}"`);
  } else if (filter.outcome) clauses.push(`ChainOutcome = "${filter.outcome}"`);
  if (filter.symbol) clauses.push(`Symbol = "${filter.symbol}"`);
  if (filter.running) clauses.push('ExecutionStatus = "Running"');
  if (filter.startedBefore) clauses.push(`StartTime < "${filter.startedBefore.toISOString()}"`);
  return clauses.join(' AND ');
}

export interface PlanRow {
  plan_id: string;
  workflow_id: string;
  symbol: string;
  stage: string;
  outcome: string;
  mode: string;
  status: string;
  started_at: string;
  /** For a plan Temporal closed in Execute: its order may be on the exchange, and the command to check. */
  next_step?: string;
}

function row(info: WorkflowExecutionInfo): PlanRow {
  const attrs = info.typedSearchAttributes;
  const symbol = attrs.get(symbolKey) ?? '';
  const stage = attrs.get(chainStageKey) ?? '';
  const closed = CLOSED_BY_TEMPORAL[info.status.name];
  return {
    plan_id: attrs.get(planIdKey) ?? info.workflowId.replace(/^plan-/, ''),
    workflow_id: info.workflowId,
    symbol,
    stage,
    outcome: attrs.get(chainOutcomeKey) ?? closed ?? '',
    mode: attrs.get(tradingModeKey) ?? '',
    status: info.status.name,
    started_at: info.startTime.toISOString(),
    // The search attribute says execute from the moment Execute is scheduled: its order may be out.
    ...(closed && stage === 'execute'
      ? { next_step: `order may be on the exchange: permit-chain position ${symbol || 'SYMBOL'}` }
      : {}),
  };
}

export async function listPlans(client: Client, filter: PlanFilter, limit: number): Promise<PlanRow[]> {
  const rows: PlanRow[] = [];
  for await (const info of client.workflow.list({ query: planQuery(filter), pageSize: Math.min(limit, 1000) })) {
    rows.push(row(info));
    if (rows.length >= limit) break;
  }
  return rows;
}

/**
 * Signals `retry` to every running blocked plan the filter finds (named `retryId`, for client/retry-report.ts);
 * returns the plan ids it woke.
 */
export async function retryBlocked(
  client: Client,
  filter: Pick<PlanFilter, 'symbol' | 'startedBefore'>,
  by: string,
  retryId?: string,
): Promise<string[]> {
  const woken: string[] = [];
  for (const plan of await listPlans(client, { ...filter, stage: 'blocked', running: true }, 10_000)) {
    try {
      await client.workflow
        .getHandle(plan.workflow_id)
        .signal(retrySignal, { by, ...(retryId ? { retry_id: retryId } : {}) });
      woken.push(plan.plan_id);
    } catch {
      // It ended between the list and the signal: nothing to wake.
    }
  }
  return woken;
}

/** How long an operator's action waits for a symbol that plans keep busy before it gives up. */
const SYMBOL_WAIT_MS = 30_000;
/** Its own hold is short: reading two amounts and writing one. A crashed CLI frees the symbol after this. */
const OPERATOR_LEASE_MS = 10_000;

type ReconcileDeps = {
  redis: Redis;
  config: Pick<ChainConfig, 'keyPrefix' | 'permitTtlS'>;
  exchange: ExchangePort;
  clock: () => number;
};

/**
 * A claimed send with no order on the exchange this long after its claim never will have one: beyond any permit's
 * life plus Binance's largest receive window (60 s) and margins.
 */
const CLAIM_STALE_AFTER_MS = 120_000;

/** The exchange's and the ledger's position of a symbol, as `position` shows it. */
export interface PositionView {
  symbol: string;
  exchange_amount: string;
  ledger_amount: string;
  discrepancy: string;
  tolerance: string;
  within_tolerance: boolean;
  /** Orders the exchange has under a claimed send of the chain that no execution record names. */
  unrecorded_orders: UnrecordedOrder[];
}

/** The exchange's (through the exchange port) and the ledger's amounts, their discrepancy and the tolerance. */
export async function positionView(
  deps: ReconcileDeps & { config: ChainConfig },
  symbol: string,
): Promise<PositionView> {
  const keys = redisKeys(deps.config.keyPrefix);
  const [positions, { orders }] = await Promise.all([
    readPositions({ redis: deps.redis, exchange: deps.exchange, config: deps.config, keys }, symbol),
    unrecordedOrders(deps, symbol),
  ]);
  const { exchangeAmount, ledgerAmount, tolerance } = positions;
  return {
    symbol,
    exchange_amount: formatDec(exchangeAmount),
    ledger_amount: formatDec(ledgerAmount),
    discrepancy: formatDec(exchangeAmount.sub(ledgerAmount).abs()),
    tolerance: formatDec(tolerance),
    within_tolerance: positionsAgree(positions),
    unrecorded_orders: orders,
  };
}

/** The orders the exchange has under the symbol's claimed sends with no execution record (activities/unrecorded.ts). */
export function unrecordedOrders(
  deps: ReconcileDeps,
  symbol: string,
): Promise<{ orders: UnrecordedOrder[]; stale: string[] }> {
  return findUnrecordedOrders(
    {
      redis: deps.redis,
      keys: redisKeys(deps.config.keyPrefix),
      exchange: deps.exchange,
      clock: deps.clock,
      staleAfterMs: deps.config.permitTtlS * 1000 + CLAIM_STALE_AFTER_MS,
    },
    symbol,
  );
}

/**
 * What a reconcile of a symbol would change now: the ledger before and after, the fills it would account for, and the
 * orders found on the exchange with no execution record (accounted for too).
 */
export interface ReconcilePreview extends ReconcileState {
  symbol: string;
  /** The exchange's amount: what the ledger becomes. */
  exchange: string;
  orders: UnrecordedOrder[];
}

/** Reads what `reconcileLedger` would do, and writes nothing: `reconcile --dry-run`, and what a person says yes to. */
export async function previewReconcile(deps: ReconcileDeps, symbol: string): Promise<ReconcilePreview> {
  const ledger = createLedger(deps.redis, redisKeys(deps.config.keyPrefix), deps.clock);
  const exchange = formatDec(await deps.exchange.getPosition(symbol));
  const { orders } = await unrecordedOrders(deps, symbol);
  return { symbol, exchange, ...(await ledger.readReconcile(symbol)), orders };
}

/**
 * Sets the ledger to the exchange's amount and marks the symbol's unapplied fills as accounted for (the exchange's
 * amount includes them), audited, in one atomic step; returns both amounts and the plans whose fills it accounted
 * for. A ledger that is not a decimal is reconciled too: that is how a person repairs it. It takes the symbol first,
 * like a plan: a reconcile between a plan's fill and its ledger update would count that fill twice. With `expected`
 * (a preview a person said yes to), it changes nothing unless the ledger, the exchange and the fills are still as
 * shown (ReconcileStale otherwise).
 */
export async function reconcileLedger(
  deps: ReconcileDeps,
  client: Client,
  symbol: string,
  by: string,
  expected?: ReconcilePreview,
): Promise<{ before: string; after: string; fills: string[]; orders: UnrecordedOrder[] }> {
  const lock = createSymbolLine(deps.redis, deps.config.keyPrefix, deps.clock);
  const holder = { plan_id: `reconcile-${randomUUID()}`, symbol };
  const deadline = Date.now() + SYMBOL_WAIT_MS;
  while (!(await lock.holdSymbol(holder, OPERATOR_LEASE_MS)).held) {
    if (Date.now() > deadline) {
      await lock.releaseSymbol(holder);
      throw new Error(`reconcile: ${symbol} stayed busy for ${SYMBOL_WAIT_MS / 1000}s; nothing changed, try again`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  try {
    const keys = redisKeys(deps.config.keyPrefix);
    const ledger = createLedger(deps.redis, keys, deps.clock);
    const { orders, stale } = await unrecordedOrders(deps, symbol);
    const exchange = await deps.exchange.getPosition(symbol);
    if (expected && formatDec(exchange) !== expected.exchange) {
      throw new ReconcileStale(
        `reconcile: the exchange's ${symbol} changed since it was shown (now ${formatDec(exchange)}); nothing changed, look again`,
      );
    }
    const shown = (list: UnrecordedOrder[]) => list.map((o) => `${o.order_id}:${o.filled_qty}`).join();
    if (expected && shown(orders) !== shown(expected.orders)) {
      throw new ReconcileStale(
        `reconcile: the orders of ${symbol} with no execution record changed since they were shown; nothing changed, look again`,
      );
    }
    const open = orders.filter((order) => order.state === 'open');
    if (open.length > 0) {
      throw new ReconcileStale(
        `reconcile: ${open.map(describeUnrecorded).join('; ')}: its fill may still change; nothing changed, try again ` +
          'in a moment',
      );
    }
    const now = deps.clock();
    const result = await ledger.reconcile(
      symbol,
      exchange,
      by,
      expected,
      orders.map((order) => unrecordedEntry(order, now)),
    );
    if (stale.length > 0) await deps.redis.hdel(keys.executeClaims(symbol), ...stale);
    return { ...result, orders };
  } finally {
    const next = await lock.releaseSymbol(holder);
    if (next)
      await client.workflow
        .getHandle(planWorkflowId(next))
        .signal(symbolFreeSignal)
        .catch(() => undefined);
  }
}

const WORKFLOW_TASK_COMPLETED = temporal.api.enums.v1.EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED;

/** Where a reset plan runs again: the build it is pinned to, when it is a versioned plan. */
export interface ResetPlan {
  runId: string;
  /** A versioned plan's build its new run is sent to: the deployment's current one, or its own when there is none. */
  buildId?: string;
}

/** A reset the worker refuses: the plan did not end `failed`. */
export class ResetRefused extends Error {
  override name = 'ResetRefused';
}

/**
 * Refuses (ResetRefused) unless the plan ended `failed`: what the worker checks before a `reset` operation, which can
 * come from anyone who reaches Temporal, not only the CLI.
 */
export async function refuseUnlessFailed(client: Client, planId: string): Promise<void> {
  const description = await client.workflow.getHandle(planWorkflowId(planId)).describe();
  const ended = description.status.name === 'RUNNING' ? undefined : await endedStatus(client, planId, description);
  if (ended?.outcome !== 'failed') {
    throw new ResetRefused(
      `plan ${planId} ${ended ? `ended ${ended.outcome ?? ended.closed?.status ?? 'without an outcome'}` : 'is running'}: ` +
        'only a failed plan runs again',
    );
  }
}

/**
 * Runs a plan that ended `failed` again from its start with Temporal's reset, the reason recorded in its history
 * and in the audit stream. The layers are idempotent (one stream entry, one order per plan), so a rerun never
 * publishes or fills twice. A versioned plan runs again on its deployment's current build, wherever it ran before
 * (that build may be retired, its workers gone): the new run keeps none of the old run's workflow tasks (it starts
 * over from the first), so no code of the old build needs to replay it.
 */
export async function resetFailedPlan(
  client: Client,
  redis: Redis,
  keys: RedisKeys,
  planId: string,
  by: string,
): Promise<ResetPlan> {
  const handle = client.workflow.getHandle(planWorkflowId(planId));
  const description = await handle.describe();
  const history = await handle.fetchHistory();
  const firstTask = history.events?.find((event) => event.eventType === WORKFLOW_TASK_COMPLETED);
  if (!firstTask?.eventId) throw new Error(`plan ${planId} has no completed workflow task to reset to`);
  const pinned = pinnedVersionOf(description.raw.workflowExecutionInfo?.versioningInfo);
  // A versioned plan runs again on the current build, or on its own when the deployment has no current one.
  const target = pinned && {
    ...pinned,
    buildId: (await currentBuildId(client, pinned.deploymentName)) ?? pinned.buildId,
  };
  const onto = !pinned || !target ? '' : resetOnto(pinned, target);
  const reason = `retry of a failed plan by ${by}${onto}`;
  const reset = await client.workflowService.resetWorkflowExecution({
    namespace: client.options.namespace,
    workflowExecution: { workflowId: description.workflowId, runId: description.runId },
    reason,
    workflowTaskFinishEventId: firstTask.eventId,
    requestId: randomUUID(),
    ...(target ? { postResetOperations: [firstTaskOn(target)] } : {}),
  });
  await redis.xadd(
    keys.auditStream,
    '*',
    ...auditFields({ plan_id: planId, layer: 'operator', decision: 'reset', reason, at: Date.now() }),
  );
  return { runId: reset.runId ?? '', ...(target ? { buildId: target.buildId } : {}) };
}

/** Where the audit entry says a versioned plan runs again. */
function resetOnto(ran: PinnedVersion, target: PinnedVersion): string {
  return target.buildId !== ran.buildId
    ? ` onto build ${target.buildId} of ${target.deploymentName} (it ran on build ${ran.buildId}, not current)`
    : ` on its build ${ran.buildId} of ${ran.deploymentName}`;
}

/**
 * The reset's options for its new run: a one-time override that sends its first workflow task to `version`. The
 * worker there completes it PINNED (its default), so the plan runs to its end on that one build and no override is
 * left on it. Not a pinned override: that one stays on the run and is inherited by continue-as-new, so the plan could
 * never move to a later build when it continues as new. Not auto-upgrade: the run would move to the next build mid-way
 * and replay its history there.
 */
function firstTaskOn(version: PinnedVersion): temporal.api.workflow.v1.IPostResetOperation {
  return {
    updateWorkflowOptions: {
      workflowExecutionOptions: { versioningOverride: { oneTime: { targetDeploymentVersion: version } } },
      updateMask: { paths: ['versioning_override'] },
    },
  };
}

/** The final status of a closed plan (with `closed` when Temporal closed it), or undefined while it runs. */
export async function closedStatus(client: Client, planId: string): Promise<ChainStatus | undefined> {
  const description = await client.workflow.getHandle(planWorkflowId(planId)).describe();
  if (description.status.name === 'RUNNING') return undefined;
  return endedStatus(client, planId, description);
}
