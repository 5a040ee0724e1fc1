import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import type { Redis } from 'ioredis';
import { auditFields } from '../activities/audit';
import { redisKeys } from '../contract/keys';
import { optionalTsToMs } from '@temporalio/common';
import { temporal } from '@temporalio/proto';
import { PERMIT_CHAIN_WORKFLOW, wakeSignal } from '../contract/messages';
import type { ChainConfig } from '../lib/config';
import { boundText } from '../lib/bound';

const { RoutingConfigUpdateState, WorkerDeploymentVersionStatus: Status } = temporal.api.enums.v1;

/** Where a build stands in its deployment, as an operator reads it. */
export type VersionStatus = 'current' | 'ramping' | 'draining' | 'drained' | 'inactive';

export interface VersionReport {
  build_id: string;
  status: VersionStatus;
  /** Plans (permitChain workflows) running on this build now, from visibility. */
  running_plans: number;
  /** When the server last checked whether pinned workflows still run on it (a draining or drained build). */
  drainage_checked_at?: string;
}

/** `permit-chain deploy status`: the deployment's builds and how far each has drained. */
export interface DeploymentReport {
  deployment: string;
  /** The build new plans start on; null before any build was made current. */
  current_build_id: string | null;
  ramping_build_id?: string;
  /** The share of new plans that start on the ramping build. */
  ramping_percentage?: number;
  versions: VersionReport[];
}

/** What `permit-chain deploy BUILD` did, then the report. */
export interface DeployReport extends DeploymentReport {
  deployed: { build_id: string; as: 'current' | 'ramping'; ramp_percentage?: number; previous_current: string | null };
  /** Waiting plans (blocked, awaiting approval) on other builds sent `wake`, so that they see the new build. */
  woken: number;
}

/** A deploy the server cannot do as asked (the build has no workers polling): nothing was changed. */
export class DeployRefused extends Error {
  override name = 'DeployRefused';
}

/**
 * How long a deploy waits for the server to carry the new routing to the task queues before it wakes the waiting
 * plans: a plan woken before that would not yet see that its build is no longer current.
 */
const ROUTING_PROPAGATION_WAIT_MS = 30_000;

/** How many plans are sent `wake` at once: enough to wake thousands in seconds, few enough not to flood the server. */
const WAKE_CONCURRENCY = 20;

const STATUS_NAMES: Partial<Record<temporal.api.enums.v1.WorkerDeploymentVersionStatus, VersionStatus>> = {
  [Status.WORKER_DEPLOYMENT_VERSION_STATUS_CURRENT]: 'current',
  [Status.WORKER_DEPLOYMENT_VERSION_STATUS_RAMPING]: 'ramping',
  [Status.WORKER_DEPLOYMENT_VERSION_STATUS_DRAINING]: 'draining',
  [Status.WORKER_DEPLOYMENT_VERSION_STATUS_DRAINED]: 'drained',
};

/** Whether a gRPC failure is the server's NOT_FOUND (code 5). */
function notFound(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === 5;
}

/**
 * The visibility value of the system search attribute `TemporalWorkerDeploymentVersion` for a build: the deployment
 * name and the build id joined by `:` (Temporal server 1.28+; the deployment name cannot hold one).
 */
export function versionAttribute(deployment: string, buildId: string): string {
  return `${deployment}:${buildId}`;
}

/** The visibility query of the plans running on a build; `waiting`: only those blocked or awaiting approval. */
export function plansOnBuildQuery(deployment: string, buildId: string, { waiting = false } = {}): string {
  return [
    `WorkflowType = "${PERMIT_CHAIN_WORKFLOW}"`,
    'ExecutionStatus = "Running"',
    `TemporalWorkerDeploymentVersion = "${versionAttribute(deployment, buildId)}"`,
    ...(waiting ? ['(ChainStage = "blocked" OR ChainStage = "awaiting_approval")'] : []),
  ].join(' AND ');
}

/**
 * The Worker Deployment of the chain's workers (WORKER_DEPLOYMENT): its builds, the current and ramping ones, and the
 * plans still running on each (a build is safe to stop once drained, or once none runs on it and it is not current).
 */
export async function deploymentReport(
  client: Client,
  config: Pick<ChainConfig, 'temporalNamespace' | 'workerDeployment'>,
): Promise<DeploymentReport> {
  const deployment = config.workerDeployment;
  let info: temporal.api.deployment.v1.IWorkerDeploymentInfo | null | undefined;
  try {
    ({ workerDeploymentInfo: info } = await client.workflowService.describeWorkerDeployment({
      namespace: config.temporalNamespace,
      deploymentName: deployment,
    }));
  } catch (err) {
    if (!notFound(err)) throw err;
    throw new DeployRefused(
      `deployment ${deployment} has no versions: no versioned worker (WORKER_VERSIONING=true) has polled ` +
        `namespace ${config.temporalNamespace} as WORKER_DEPLOYMENT=${deployment}`,
    );
  }
  const routing = info?.routingConfig;
  const current = routing?.currentDeploymentVersion?.buildId || null;
  const ramping = routing?.rampingDeploymentVersion?.buildId || undefined;
  const summaries = [...(info?.versionSummaries ?? [])].sort(
    (a, b) => (optionalTsToMs(b.createTime) ?? 0) - (optionalTsToMs(a.createTime) ?? 0),
  );
  const versions = await Promise.all(
    summaries.map(async (summary): Promise<VersionReport> => {
      const buildId = summary.deploymentVersion?.buildId ?? '';
      const { count } = await client.workflow.count(plansOnBuildQuery(deployment, buildId));
      const checked = optionalTsToMs(summary.drainageInfo?.lastCheckedTime);
      return {
        build_id: buildId,
        status: STATUS_NAMES[summary.status ?? Status.WORKER_DEPLOYMENT_VERSION_STATUS_UNSPECIFIED] ?? 'inactive',
        running_plans: count,
        ...(checked ? { drainage_checked_at: new Date(checked).toISOString() } : {}),
      };
    }),
  );
  return {
    deployment,
    current_build_id: current,
    ...(ramping ? { ramping_build_id: ramping, ramping_percentage: routing?.rampingVersionPercentage ?? 0 } : {}),
    versions,
  };
}

/**
 * Deploys a build: refused unless its workers poll the deployment (the version exists); then makes it current (or,
 * with `rampPercentage`, ramping: that share of new plans starts on it), and wakes every waiting plan pinned to
 * another build, so that, with UPGRADE_ON_CONTINUE_AS_NEW on the workers, it continues as new onto the current build
 * now rather than at its next look. Plans in flight finish on the build they started on. `identity` is recorded by
 * the server as who changed the routing.
 */
export async function deployBuild(
  client: Client,
  config: Pick<ChainConfig, 'temporalNamespace' | 'workerDeployment'>,
  buildId: string,
  { rampPercentage, identity }: { rampPercentage?: number; identity: string },
): Promise<DeployReport> {
  const deployment = config.workerDeployment;
  const namespace = config.temporalNamespace;
  try {
    await client.workflowService.describeWorkerDeploymentVersion({
      namespace,
      deploymentVersion: { deploymentName: deployment, buildId },
    });
  } catch (err) {
    if (!notFound(err)) throw err;
    throw new DeployRefused(
      `build ${boundText(buildId, 80)} is not a version of deployment ${deployment}: no worker of it has polled ` +
        `(start its workers with WORKER_VERSIONING=true and WORKER_DEPLOYMENT=${deployment}, then deploy it)`,
    );
  }
  const before = await deploymentReport(client, config);
  if (rampPercentage === undefined) {
    await client.workflowService.setWorkerDeploymentCurrentVersion({
      namespace,
      deploymentName: deployment,
      buildId,
      identity,
    });
  } else {
    await client.workflowService.setWorkerDeploymentRampingVersion({
      namespace,
      deploymentName: deployment,
      buildId,
      percentage: rampPercentage,
      identity,
    });
  }
  // A ramp moves no waiting plan: the target of a pinned plan changes only when another build becomes current.
  let woken = 0;
  if (rampPercentage === undefined) {
    await routingPropagated(client, namespace, deployment);
    woken = await wakeWaiters(client, deployment, buildId, before);
  }
  return {
    ...(await deploymentReport(client, config)),
    deployed: {
      build_id: buildId,
      as: rampPercentage === undefined ? 'current' : 'ramping',
      ...(rampPercentage !== undefined ? { ramp_percentage: rampPercentage } : {}),
      previous_current: before.current_build_id,
    },
    woken,
  };
}

/** Waits (at most ROUTING_PROPAGATION_WAIT_MS) until the server says the deployment's routing reached its queues. */
async function routingPropagated(client: Client, namespace: string, deployment: string): Promise<void> {
  const deadline = Date.now() + ROUTING_PROPAGATION_WAIT_MS;
  for (;;) {
    const { workerDeploymentInfo } = await client.workflowService.describeWorkerDeployment({
      namespace,
      deploymentName: deployment,
    });
    const state = workerDeploymentInfo?.routingConfigUpdateState;
    if (state !== RoutingConfigUpdateState.ROUTING_CONFIG_UPDATE_STATE_IN_PROGRESS || Date.now() > deadline) return;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

/** Sends `wake` to every plan blocked or awaiting approval on a build of the deployment other than `buildId`. */
async function wakeWaiters(
  client: Client,
  deployment: string,
  buildId: string,
  report: DeploymentReport,
): Promise<number> {
  const planIds: string[] = [];
  for (const version of report.versions) {
    if (version.build_id === buildId || version.running_plans === 0) continue;
    for await (const plan of client.workflow.list({
      query: plansOnBuildQuery(deployment, version.build_id, { waiting: true }),
    })) {
      planIds.push(plan.workflowId);
    }
  }
  let woken = 0;
  for (let i = 0; i < planIds.length; i += WAKE_CONCURRENCY) {
    const sent = await Promise.all(
      planIds.slice(i, i + WAKE_CONCURRENCY).map(async (workflowId): Promise<number> => {
        try {
          await client.workflow.getHandle(workflowId).signal(wakeSignal);
          return 1;
        } catch (err) {
          // Ended since it was listed: nothing to wake.
          if (err instanceof WorkflowNotFoundError) return 0;
          throw err;
        }
      }),
    );
    woken += sent.reduce((a, b) => a + b, 0);
  }
  return woken;
}

/** What a build id may be, as the CLI and the worker accept it: Temporal's, without spaces or the `:` it joins with. */
export const BUILD_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$/;

/** How `permit-chain deploy` names itself to the server when it changes the routing (its identity, then the host). */
export function deployIdentityOf(by: string): string {
  return `permit-chain deploy by ${by} `;
}

/**
 * The audit entry of a deploy, written by a worker (operators hold no Redis secrets): `operator deployed`, with the
 * routing as the worker reads it from the server, not as the request claims. Refused when `build_id` is neither
 * current nor ramping: an operation's input can come from anyone who reaches Temporal.
 */
export async function recordDeploy(
  client: Client,
  redis: Redis,
  config: Pick<ChainConfig, 'temporalNamespace' | 'workerDeployment' | 'keyPrefix'>,
  request: { build_id: string; by: string },
): Promise<{ audited: string }> {
  if (!BUILD_ID_PATTERN.test(request.build_id)) {
    throw new DeployRefused(
      `build_id must be a build id such as 3f9a1c0b7d2e4a61 (got ${boundText(request.build_id, 40)})`,
    );
  }
  const { workerDeploymentInfo: info } = await client.workflowService.describeWorkerDeployment({
    namespace: config.temporalNamespace,
    deploymentName: config.workerDeployment,
  });
  const routing = info?.routingConfig;
  const current = routing?.currentDeploymentVersion?.buildId ?? '';
  const ramping = routing?.rampingDeploymentVersion?.buildId ?? '';
  const setBy = boundText(info?.lastModifierIdentity ?? '', 120);
  let reason: string;
  if (current === request.build_id) reason = `build ${current} current`;
  else if (ramping === request.build_id) {
    reason = `build ${ramping} ramping at ${routing?.rampingVersionPercentage ?? 0}% (current ${current || 'none'})`;
  } else {
    throw new DeployRefused(
      `build ${request.build_id} is neither current nor ramping in deployment ${config.workerDeployment} ` +
        `(current ${current || 'none'})`,
    );
  }
  // The audit names who changed the routing as the server recorded it, not as the request claims.
  if (!(info?.lastModifierIdentity ?? '').startsWith(deployIdentityOf(request.by))) {
    throw new DeployRefused(
      `the deployment's routing was last changed by ${setBy || 'nobody recorded'}, not by permit-chain deploy by ${request.by}`,
    );
  }
  const audited = `by ${request.by}: ${reason} in deployment ${config.workerDeployment}${setBy ? ` (set by ${setBy})` : ''}`;
  const keys = redisKeys(config.keyPrefix);
  await redis.xadd(
    keys.auditStream,
    '*',
    ...auditFields({ plan_id: '-', layer: 'operator', decision: 'deployed', reason: audited, at: Date.now() }),
  );
  return { audited };
}
