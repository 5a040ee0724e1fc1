import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { WorkflowFailedError, WorkflowNotFoundError, WorkflowUpdateFailedError, type Client } from '@temporalio/client';
import { ApplicationFailure, type UpdateDefinition } from '@temporalio/common';
import { redisKeys } from '../contract/keys';
import {
  OPERATOR_OPERATION_WORKFLOW,
  operationWorkflowId,
  type OperatorRequest,
  type WorkerIdentity,
} from '../contract/operations';
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
import { deployBuild, deploymentReport, type DeploymentReport, type DeployReport } from './deployments';
import { reportRetries, type RetryReport } from './retry-report';
import { reDecide, type WhatIfReport } from './what-if';
import { readPlanRecord, type PlanRecord } from './what-if-history';
import type { UnrecordedOrder } from '../activities/unrecorded';

/** A refusal the person can act on (a plan that does not exist, one that cannot be retried): exit code 2. */
export class ClientError extends Error {
  override name = 'ClientError';
}

/** No such plan: the CLI's exit code 4, apart from a bad argument's 2. */
export class NotFoundError extends ClientError {
  override name = 'NotFoundError';
}

export type { PositionView } from './operations';

/** The workers did not answer (Temporal unreachable, or no worker polls the task queue): nothing was done. */
export class WorkersUnreachable extends Error {
  override name = 'WorkersUnreachable';
}

/** A worker refused an operator's operation (unsigned, a bad signature, a used nonce): exit code 3. */
export class OperationRefused extends Error {
  override name = 'OperationRefused';
}

/** How long an operation waits for a worker to take it before it says the workers are unreachable. */
export const WORKER_ANSWER_WAIT_MS = 5_000;
/** An operation no worker took is ended after this: it must not run long after the operator was told it did not. */
const OPERATION_EXECUTION_TIMEOUT = '3m';

/** A signing key for an operation: the operator's name in OPERATORS and their private key file. */
export interface OperationSigner {
  keyFile: string;
  lifeMs?: number;
}

/** An operation's answer: its result and which worker gave it, under which configuration. */
export interface Answered<T> {
  result: T;
  worker: WorkerIdentity;
  recorded_as?: string;
  operation_id: string;
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

  /**
   * Runs an operation in a worker of the chain's task queue (workflows/operator-operation.ts) and returns its answer.
   * When Temporal does not answer, or no worker takes the operation within {@link WORKER_ANSWER_WAIT_MS}, it is
   * ended unperformed and {@link WorkersUnreachable} says so. A refusal is a ClientError with the worker's reason.
   */
  private async operate<T>(request: OperatorRequest): Promise<Answered<T>> {
    const address = `Temporal at ${this.config.temporalAddress}`;
    // An operation's connection gives up with its wait: an unreachable server does not hold the command longer.
    this.temporal ??= connectTemporal(this.config, { connectTimeoutMs: WORKER_ANSWER_WAIT_MS });
    const client = await withinWait(this.client(), `${address} did not answer`);
    const workflowId = operationWorkflowId(randomUUID());
    const handle = await withinWait(
      client.workflow.start(OPERATOR_OPERATION_WORKFLOW, {
        workflowId,
        taskQueue: this.config.taskQueue,
        args: [request],
        workflowExecutionTimeout: OPERATION_EXECUTION_TIMEOUT,
      }),
      `${address} did not take the operation`,
    );
    const result = handle.result() as Promise<{ worker: WorkerIdentity; result: T; recorded_as?: string }>;
    // Read below once the wait is over; until then a failure must not go unhandled.
    result.catch(() => undefined);
    const early = await Promise.race([
      result.then(
        () => true,
        () => true,
      ),
      delay(WORKER_ANSWER_WAIT_MS),
    ]);
    if (!early) {
      const { historyLength } = await handle.describe();
      // Started and scheduled only: no worker has taken its first task.
      if (historyLength <= 2) {
        await handle.terminate('no worker answered in time').catch(() => undefined);
        throw new WorkersUnreachable(
          `no worker of task queue ${this.config.taskQueue} answered within ${WORKER_ANSWER_WAIT_MS / 1000}s ` +
            `(${address}): nothing was done`,
        );
      }
    }
    try {
      return { ...(await result), operation_id: workflowId };
    } catch (err) {
      if (err instanceof WorkflowFailedError) {
        // The activity's own message: the worker's refusal or failure, without the SDK's wrapping.
        let cause: Error | undefined = err.cause;
        while (cause?.cause instanceof Error) cause = cause.cause;
        const message = `${(cause ?? err).message} (operation ${workflowId})`;
        if (cause instanceof ApplicationFailure && cause.type === 'Refused') throw new OperationRefused(message);
        throw new ClientError(message);
      }
      throw err;
    }
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
    const identity = `permit-chain deploy by ${by} (${hostname()})`;
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

function delay(ms: number): Promise<false> {
  return new Promise((done) => setTimeout(() => done(false), ms).unref());
}

/** `promise`, or WorkersUnreachable when it has not settled within the operation's wait. */
async function withinWait<T>(promise: Promise<T>, what: string): Promise<T> {
  promise.catch(() => undefined);
  const settled = await Promise.race([
    promise.then(
      () => true,
      () => true,
    ),
    delay(WORKER_ANSWER_WAIT_MS),
  ]);
  if (!settled) throw new WorkersUnreachable(`${what} within ${WORKER_ANSWER_WAIT_MS / 1000}s: nothing was done`);
  try {
    return await promise;
  } catch (err) {
    throw new WorkersUnreachable(`${what}: ${(err as Error).message.split('\n')[0]?.slice(0, 300)}: nothing was done`);
  }
}
