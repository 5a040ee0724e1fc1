import type { Client } from '@temporalio/client';
import type { NativeConnection, Worker } from '@temporalio/worker';
import type { Redis } from 'ioredis';
import { inject } from 'vitest';
import type { ChainConfig } from '../lib/config';
import { createChainWorker } from '../workers/worker';
import type { ExchangePort } from '../activities/exchange/port';

/** A versioned worker of one build, running until `stop`. */
export interface RunningBuild {
  buildId: string;
  worker: Worker;
  stop(): Promise<void>;
}

/**
 * Starts a worker polling as build `buildId` of the config's WORKER_DEPLOYMENT (the config must have
 * WORKER_VERSIONING=true): several builds in one process, on one Redis, as two deploys' workers would run.
 */
export async function startBuild(
  deps: { config: ChainConfig; redis: Redis; client: Client; connection: NativeConnection; exchange?: ExchangePort },
  buildId: string,
): Promise<RunningBuild> {
  if (!deps.config.workerVersioning) throw new Error('startBuild: the config needs WORKER_VERSIONING=true');
  const worker = await createChainWorker({
    config: deps.config,
    redis: deps.redis,
    client: deps.client,
    connection: deps.connection,
    workflowBundle: { codePath: inject('workflowBundlePath') },
    ...(deps.exchange ? { exchange: deps.exchange } : {}),
    buildId,
  });
  const running = worker.run();
  return {
    buildId,
    worker,
    async stop() {
      if (worker.getState() === 'RUNNING') worker.shutdown();
      await running;
    },
  };
}

/**
 * Makes `buildId` the deployment's current version, as `temporal worker deployment set-current-version` does: retried
 * until the server has registered the version (its worker's first polls register it).
 */
export async function setCurrentBuild(
  client: Client,
  deploymentName: string,
  buildId: string,
  timeoutMs = 20_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await client.workflowService.setWorkerDeploymentCurrentVersion({
        namespace: client.options.namespace,
        deploymentName,
        buildId,
        identity: 'test',
      });
      return;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
}
