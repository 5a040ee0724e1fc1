import { randomUUID } from 'node:crypto';
import { WorkflowNotFoundError, WorkflowUpdateFailedError, type Client } from '@temporalio/client';
import type { UpdateDefinition } from '@temporalio/common';
import type { Redis } from 'ioredis';
import { exchangeFor } from '../activities/exchange';
import { ReconcileStale } from '../activities/ledger';
import { positionsAgree } from '../activities/p33';
import { readPositions } from '../activities/positions';
import { redisKeys } from '../contract/keys';
import {
  approvePlanUpdate,
  cancelPlanUpdate,
  planWorkflowId,
  rejectPlanUpdate,
  retrySignal,
} from '../contract/messages';
import type { ApproveRequest, ChainStatus, OperatorReply, Plan, RejectRequest } from '../contract/types';
import { readPrivateKey, signedRequest } from '../lib/approval';
import type { ChainConfig, DecisionSettings } from '../lib/config';
import { connectRedis } from '../lib/connections';
import { formatDec } from '../lib/decimal';
import {
  closedStatus,
  listPlans,
  previewReconcile,
  reconcileLedger,
  unrecordedOrders,
  resetFailedPlan,
  retryBlocked,
  setKillSwitch,
  type PlanFilter,
  type PlanRow,
  type ReconcilePreview,
} from './operations';
import { connectTemporal, planStatus, startPlan, type StartedPlan } from './plans';
import { fetchPlanRuns, type PlanRun, type RunSelection } from './histories';
import { registerSearchAttributes } from './search-attributes';
import { reportRetries, type RetryReport } from './retry-report';
import { readPlanRecord, reDecide, type PlanRecord, type WhatIfReport } from './what-if';
import type { UnrecordedOrder } from '../activities/unrecorded';

/** A refusal the person can act on (a plan that does not exist, one that cannot be retried): exit code 2. */
export class ClientError extends Error {
  override name = 'ClientError';
}

/** No such plan: the CLI's exit code 4, apart from a bad argument's 2. */
export class NotFoundError extends ClientError {
  override name = 'NotFoundError';
}

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

/**
 * The client room: the one place that talks to a running chain from outside — plans started and looked at,
 * operators' decisions, retries and resets, lists, the kill switch, reconcile, positions through the exchange port.
 * It connects to Temporal and Redis when first needed and closes both with `close`.
 */
export class ChainClient {
  private temporal?: Promise<Client>;
  private redisConnection?: Promise<Redis>;

  constructor(readonly config: ChainConfig) {}

  private client(): Promise<Client> {
    this.temporal ??= connectTemporal(this.config);
    return this.temporal;
  }

  private redis(): Promise<Redis> {
    // A one-shot command says what went wrong once, in its error line; reconnect chatter would only repeat it.
    this.redisConnection ??= connectRedis(this.config, { log: () => undefined });
    return this.redisConnection;
  }

  async close(): Promise<void> {
    const [client, redis] = await Promise.allSettled([this.temporal, this.redisConnection]);
    if (client.status === 'fulfilled') await client.value?.connection.close();
    if (redis.status === 'fulfilled') redis.value?.disconnect();
  }

  async submit(plan: Plan, explicitId: boolean): Promise<StartedPlan> {
    return startPlan(await this.client(), this.config, plan, { explicitId });
  }

  async status(planId: string): Promise<ChainStatus> {
    return planStatus(await this.client(), planId).catch((err: unknown) => notFound(err, planId));
  }

  /**
   * Wakes a blocked plan and reports, after its look, whether it moved; a plan that ended `failed` runs again from its
   * start (a Temporal reset).
   */
  async retry(
    planId: string,
    by: string,
  ): Promise<{ signalled: true; report: RetryReport } | { reset: true; runId: string }> {
    const client = await this.client();
    const ended = await closedStatus(client, planId).catch((err: unknown) => notFound(err, planId));
    if (!ended) {
      const retryId = randomUUID();
      await client.workflow.getHandle(planWorkflowId(planId)).signal(retrySignal, { by, retry_id: retryId });
      return { signalled: true, report: await reportRetries(client, [planId], retryId) };
    }
    if (ended.outcome !== 'failed') {
      throw new ClientError(
        `plan ${planId} ended ${ended.outcome ?? ended.closed?.status ?? 'without an outcome'}: only a failed plan runs again`,
      );
    }
    const { runId } = await resetFailedPlan(client, await this.redis(), redisKeys(this.config.keyPrefix), planId, by);
    return { reset: true, runId };
  }

  /** The exchange's (through the exchange port) and the ledger's amounts, their discrepancy and the tolerance. */
  async position(symbol: string): Promise<PositionView> {
    const redis = await this.redis();
    const keys = redisKeys(this.config.keyPrefix);
    const exchange = exchangeFor(this.config, redis);
    const [positions, { orders }] = await Promise.all([
      readPositions({ redis, exchange, config: this.config, keys }, symbol),
      unrecordedOrders({ redis, config: this.config, exchange, clock: Date.now }, symbol),
    ]);
    const { exchangeAmount, ledgerAmount, tolerance } = positions;
    const discrepancy = exchangeAmount.sub(ledgerAmount).abs();
    return {
      symbol,
      exchange_amount: formatDec(exchangeAmount),
      ledger_amount: formatDec(ledgerAmount),
      discrepancy: formatDec(discrepancy),
      tolerance: formatDec(tolerance),
      within_tolerance: positionsAgree(positions),
      unrecorded_orders: orders,
    };
  }

  /**
   * A person's signed decision: the plan's `status` gives the positions it shows, the approver's key signs the
   * decision over them, and an update carries it to the plan, whose Governor verifies it. With `print`, the signed
   * payload is returned instead (for `temporal workflow signal --input` or the Web UI's signal form).
   */
  async decide(
    planId: string,
    kind: 'approve' | 'reject',
    fields: { by: string; note?: string; reason?: string },
    signing: { keyFile: string; lifeMs: number; print?: boolean },
  ): Promise<OperatorReply | { printed: ApproveRequest | RejectRequest }> {
    const privateKey = readPrivateKey(signing.keyFile);
    const status = await this.status(planId);
    if (!status.awaiting) {
      return {
        accepted: false,
        detail: status.stage === 'done' ? 'plan has already ended' : 'plan is not awaiting approval',
      };
    }
    const request = signedRequest(planId, kind, fields, status.awaiting, privateKey, { lifeMs: signing.lifeMs });
    if (signing.print) return { printed: request };
    return kind === 'approve'
      ? this.update(planId, approvePlanUpdate, request)
      : this.update(planId, rejectPlanUpdate, request as RejectRequest);
  }

  async cancel(planId: string, by: string, reason: string): Promise<OperatorReply> {
    return this.update(planId, cancelPlanUpdate, { by, reason });
  }

  /** An operator's update: the plan answers at once, accepted or refused with the reason. */
  private async update<Request>(
    planId: string,
    update: UpdateDefinition<OperatorReply, [Request]>,
    request: Request,
  ): Promise<OperatorReply> {
    const handle = (await this.client()).workflow.getHandle(planWorkflowId(planId));
    try {
      return await handle.executeUpdate(update, { args: [request] });
    } catch (err) {
      // An update to a finished workflow is answered "not found": tell that apart from a plan that never was.
      if (err instanceof WorkflowNotFoundError) {
        await handle.describe().catch((missing: unknown) => notFound(missing, planId));
        return { accepted: false, detail: 'plan has already ended' };
      }
      if (err instanceof WorkflowUpdateFailedError)
        return { accepted: false, detail: err.cause?.message ?? err.message };
      throw err;
    }
  }

  async killSwitch(on: boolean, by: string): Promise<void> {
    await setKillSwitch(await this.redis(), redisKeys(this.config.keyPrefix), on, by);
  }

  async list(filter: PlanFilter, limit: number): Promise<PlanRow[]> {
    return listPlans(await this.client(), filter, limit);
  }

  /** Wakes the blocked plans the filter finds, and reports, after their looks, which moved and which are still blocked. */
  async retryStuck(
    filter: Pick<PlanFilter, 'symbol' | 'startedBefore'>,
    by: string,
  ): Promise<{ woken: string[]; report: RetryReport }> {
    const client = await this.client();
    const retryId = randomUUID();
    const woken = await retryBlocked(client, filter, by, retryId);
    return { woken, report: await reportRetries(client, woken, retryId) };
  }

  /** What `reconcile` would change now (the ledger before and after, the fills it accounts for); writes nothing. */
  async reconcilePreview(symbol: string): Promise<ReconcilePreview> {
    const redis = await this.redis();
    return previewReconcile(
      { redis, config: this.config, exchange: exchangeFor(this.config, redis), clock: Date.now },
      symbol,
    );
  }

  /**
   * Ledger := the exchange's amount, audited, the symbol taken like a plan; then the symbol's blocked plans woken.
   * With `expected`, only if the symbol is still as that preview showed it (a ClientError otherwise, nothing changed).
   */
  async reconcile(
    symbol: string,
    by: string,
    expected?: ReconcilePreview,
  ): Promise<{ before: string; after: string; fills: string[]; orders: UnrecordedOrder[]; woken: string[] }> {
    const [client, redis] = [await this.client(), await this.redis()];
    const exchange = exchangeFor(this.config, redis);
    const deps = { redis, config: this.config, exchange, clock: Date.now };
    const result = await reconcileLedger(deps, client, symbol, by, expected).catch((err: unknown) => {
      throw err instanceof ReconcileStale ? new ClientError(err.message) : err;
    });
    return { ...result, woken: await retryBlocked(client, { symbol }, by) };
  }

  /** The runs of the plans a selection finds, each with its history: a visibility list and history reads only. */
  async planRuns(selection: Omit<RunSelection, 'taskQueue'>): Promise<PlanRun[]> {
    return fetchPlanRuns(await this.client(), { ...selection, taskQueue: this.config.taskQueue });
  }

  /**
   * The decisions of the chain's plans (its task queue) started from `from` to `to`, re-decided under `settings` from their Temporal
   * histories (client/what-if.ts). With a rate limit, the plans started one window before `from` fill the symbols'
   * rate windows. Reads only: nothing is written to Temporal or Redis.
   */
  async whatIf(from: Date, to: Date, settings: DecisionSettings): Promise<WhatIfReport & { context_plans: number }> {
    const client = await this.client();
    const converter = client.options.loadedDataConverter.payloadConverter;
    const records = async (selection: Omit<RunSelection, 'taskQueue'>): Promise<PlanRecord[]> => {
      const byPlan = new Map<string, PlanRun[]>();
      for (const run of await fetchPlanRuns(client, { ...selection, taskQueue: this.config.taskQueue })) {
        byPlan.set(run.workflowId, [...(byPlan.get(run.workflowId) ?? []), run]);
      }
      return [...byPlan.values()].flatMap((runs) => readPlanRecord(runs, converter) ?? []);
    };
    const window = await records({ startedFrom: from, startedTo: to });
    const before = settings.rateLimit ? new Date(from.getTime() - settings.rateLimit.windowMs) : undefined;
    const context = before ? await records({ startedFrom: before, startedTo: new Date(from.getTime() - 1) }) : [];
    return { ...reDecide(window, context, settings), context_plans: context.length };
  }

  async registerSearchAttributes(): Promise<string[]> {
    return registerSearchAttributes((await this.client()).connection, this.config.temporalNamespace);
  }
}

function notFound(err: unknown, planId: string): never {
  if (err instanceof WorkflowNotFoundError) {
    throw new NotFoundError(`no plan ${planId} (workflow ${planWorkflowId(planId)} not found)`);
  }
  throw err;
}
