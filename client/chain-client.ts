import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { WorkflowNotFoundError, WorkflowUpdateFailedError, type Client } from '@temporalio/client';
import type { UpdateDefinition } from '@temporalio/common';
import { redisKeys } from '../contract/keys';
import type { OperatorRequest } from '../contract/operations';
import {
  approvePlanUpdate,
  cancelPlanUpdate,
  planWorkflowId,
  rejectPlanUpdate,
  retrySignal,
} from '../contract/messages';
import type { ApproveRequest, ChainStatus, OperatorReply, Plan, RejectRequest } from '../contract/types';
import {
  DEFAULT_DECISION_LIFE_MS,
  readPrivateKey,
  signOperation,
  signedRequest,
  type SignedOperation,
} from '../lib/approval';
import type { ChainConfig, DecisionSettings } from '../lib/config';
import { connectRedis } from '../lib/connections';
import { redactUrl } from '../lib/redact';
import {
  closedStatus,
  listPlans,
  retryBlocked,
  setKillSwitch,
  type PlanFilter,
  type PlanRow,
  type PositionView,
  type ReconcilePreview,
  type ResetPlan,
} from './operations';
import { connectTemporal, planStatus, startPlan, type StartedPlan } from './plans';
import { fetchPlanRuns, type PlanRun, type RunSelection } from './histories';
import { registerSearchAttributes } from './search-attributes';
import {
  deployBuild,
  deployIdentityOf,
  deploymentReport,
  type DeploymentReport,
  type DeployReport,
} from './deployments';
import { reportRetries, type RetryReport } from './retry-report';
import { reDecide, type WhatIfReport } from './what-if';
import { readPlanRecord, type PlanRecord } from './what-if-history';
import type { UnrecordedOrder } from '../activities/unrecorded';
import { ClientError, NotFoundError, WORKER_ANSWER_WAIT_MS, runOperation, type Answered } from './operation-run';

export type { PositionView } from './operations';
export {
  ClientError,
  NotFoundError,
  OperationRefused,
  WORKER_ANSWER_WAIT_MS,
  WorkersUnreachable,
  type Answered,
} from './operation-run';

/** A signing key for an operation: the operator's name in OPERATORS and their private key file. */
export interface OperationSigner {
  keyFile: string;
  lifeMs?: number;
}

/**
 * The client room: the one place that talks to a running chain from outside — plans started and looked at,
 * operators' decisions, retries and resets, lists, the kill switch, reconcile, positions through the exchange port.
 * It connects to Temporal and Redis when first needed and closes both with `close`.
 */
export class ChainClient {
  private temporal?: Promise<Client>;

  constructor(readonly config: ChainConfig) {}

  private client(): Promise<Client> {
    this.temporal ??= connectTemporal(this.config);
    return this.temporal;
  }

  async close(): Promise<void> {
    const [client] = await Promise.allSettled([this.temporal]);
    if (client.status === 'fulfilled') await client.value?.connection.close();
  }

  /** Runs an operation in a worker of the chain's task queue (runOperation). */
  private operate<T>(request: OperatorRequest): Promise<Answered<T>> {
    // An operation's connection gives up with its wait: an unreachable server does not hold the command longer.
    this.temporal ??= connectTemporal(this.config, { connectTimeoutMs: WORKER_ANSWER_WAIT_MS });
    return runOperation<T>(this.client(), this.config, request);
  }

  async submit(plan: Plan, explicitId: boolean): Promise<StartedPlan> {
    return startPlan(await this.client(), this.config, plan, { explicitId });
  }

  async status(planId: string): Promise<ChainStatus> {
    return planStatus(await this.client(), planId).catch((err: unknown) => notFound(err, planId));
  }

  /**
   * Wakes a blocked plan and reports, after its look, whether it moved; a plan that ended `failed` runs again from its
   * start (a Temporal reset, in a worker: onto the deployment's current build when the plan's build is not).
   */
  async retry(
    planId: string,
    by: string,
  ): Promise<{ signalled: true; report: RetryReport } | ({ reset: true } & ResetPlan)> {
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
    const answer = await this.operate<ResetPlan>({ operation: 'reset', plan_id: planId, by });
    return { reset: true, ...answer.result };
  }

  /** The exchange's and the ledger's amounts, their discrepancy and the tolerance, as the worker reads them. */
  async position(symbol: string): Promise<Answered<PositionView>> {
    return this.operate<PositionView>({ operation: 'position', symbol });
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

  /** Sets or clears the kill switch in a worker; clearing it is signed where the worker asks for it. */
  async killSwitch(on: boolean, by: string, signer?: OperationSigner): Promise<Answered<{ kill_switch: string }>> {
    const signed = signer ? this.signed({ operation: 'kill_switch_off', by }, signer) : undefined;
    return this.operate({ operation: 'kill_switch', on, by, ...(signed ? { signed } : {}) });
  }

  /**
   * The brake when no worker answers: sets the kill switch in Redis directly, with the CLI's own REDIS_URL and
   * KEY_PREFIX, audited as set directly. Returns where it set it.
   */
  async killSwitchDirect(by: string, why: string): Promise<{ key: string; redis: string }> {
    const redis = await connectRedis(this.config, { log: () => undefined });
    try {
      const keys = redisKeys(this.config.keyPrefix);
      await setKillSwitch(redis, keys, true, `${by} (set directly: ${why.slice(0, 200)})`);
      return { key: keys.killSwitch, redis: redactUrl(this.config.redisUrl) };
    } finally {
      redis.disconnect();
    }
  }

  /** An operation signed with the operator's key: an expiry and a nonce of its own. */
  private signed(
    operation: Omit<SignedOperation, 'expires_at' | 'nonce'>,
    signer: OperationSigner,
  ): { expires_at: number; nonce: string; signature: string } {
    const key = readPrivateKey(signer.keyFile);
    const full: SignedOperation = {
      ...operation,
      expires_at: Date.now() + (signer.lifeMs ?? DEFAULT_DECISION_LIFE_MS),
      nonce: randomUUID(),
    };
    return { expires_at: full.expires_at, nonce: full.nonce, signature: signOperation(full, key) };
  }

  /** The Worker Deployment's builds: current, ramping, draining or drained, and the plans running on each. */
  async deploymentReport(): Promise<DeploymentReport> {
    return deploymentReport(await this.client(), this.config);
  }

  /**
   * Deploys a build (client/deployments.ts deployBuild): current, or ramping at `rampPercentage`; the waiting plans of
   * other builds woken. Then a worker audits it (`operator deployed`); `audit` is its line, or why it was not written.
   */
  async deploy(
    buildId: string,
    { rampPercentage, by }: { rampPercentage?: number; by: string },
  ): Promise<DeployReport & { audit: { audited: string } | { not_audited: string } }> {
    const identity = `${deployIdentityOf(by)}(${hostname()})`;
    const report = await deployBuild(await this.client(), this.config, buildId, {
      identity,
      ...(rampPercentage !== undefined ? { rampPercentage } : {}),
    });
    const audit = await this.operate<{ audited: string }>({ operation: 'deployed', build_id: buildId, by }).then(
      (answer) => answer.result,
      (err: unknown) => ({ not_audited: err instanceof Error ? err.message : String(err) }),
    );
    return { ...report, audit };
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
  async reconcilePreview(symbol: string): Promise<Answered<ReconcilePreview>> {
    return this.operate<ReconcilePreview>({ operation: 'reconcile_preview', symbol });
  }

  /**
   * Ledger := the exchange's amount, in a worker, audited, the symbol taken like a plan; then the symbol's blocked
   * plans woken. With `expected`, only if the symbol is still as that preview showed it (a ClientError otherwise,
   * nothing changed). With a signer, the operation is signed over the positions shown (a preview is read first when
   * none is given).
   */
  async reconcile(
    symbol: string,
    by: string,
    expected?: ReconcilePreview,
    signer?: OperationSigner,
  ): Promise<Answered<{ before: string; after: string; fills: string[]; orders: UnrecordedOrder[]; woken: string[] }>> {
    const shown = signer && !expected ? (await this.reconcilePreview(symbol)).result : expected;
    const signed = signer && shown ? this.signed({ operation: 'reconcile', by, symbol, shown }, signer) : undefined;
    return this.operate({
      operation: 'reconcile',
      symbol,
      by,
      ...(shown ? { expected: shown } : {}),
      ...(signed ? { signed } : {}),
    });
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
