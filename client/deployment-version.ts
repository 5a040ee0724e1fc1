import { status } from '@grpc/grpc-js';
import type { Client } from '@temporalio/client';
import { temporal } from '@temporalio/proto';

const PINNED = temporal.api.enums.v1.VersioningBehavior.VERSIONING_BEHAVIOR_PINNED;

/**
 * The build id of the Worker Deployment's current version (DescribeWorkerDeployment's routing config): where new
 * plans start and where a reset is carried. Undefined when the deployment has no current version (its new workflows
 * go to unversioned workers) or does not exist yet.
 */
export async function currentBuildId(client: Client, deploymentName: string): Promise<string | undefined> {
  try {
    const { workerDeploymentInfo } = await client.workflowService.describeWorkerDeployment({
      namespace: client.options.namespace,
      deploymentName,
    });
    return workerDeploymentInfo?.routingConfig?.currentDeploymentVersion?.buildId || undefined;
  } catch (err) {
    // No worker of this deployment has polled yet.
    if ((err as { code?: number }).code === status.NOT_FOUND) return undefined;
    throw err;
  }
}

/** The Worker Deployment version a run is pinned to (by an override or by its worker), if it is pinned. */
export interface PinnedVersion {
  deploymentName: string;
  buildId: string;
}

/**
 * The version a run is pinned to, from its describe's versioning info: a pinned override's version first (it takes
 * precedence over what the worker sent), else the worker's version when the run's behaviour is PINNED. Undefined for
 * an unversioned or AUTO_UPGRADE run.
 */
export function pinnedVersionOf(
  info: temporal.api.workflow.v1.WorkflowExecutionVersioningInfo.$Properties | null | undefined,
): PinnedVersion | undefined {
  const override = info?.versioningOverride?.pinned?.version;
  if (override?.deploymentName && override.buildId) {
    return { deploymentName: override.deploymentName, buildId: override.buildId };
  }
  const version = info?.deploymentVersion;
  if (info?.behavior === PINNED && version?.deploymentName && version.buildId) {
    return { deploymentName: version.deploymentName, buildId: version.buildId };
  }
  return undefined;
}
