import type { KeyObject } from 'node:crypto';
import { NativeConnection, Worker, type WorkerOptions } from '@temporalio/worker';
import type { Redis } from 'ioredis';
import { createActivities } from '../activities';
import { exchangeFor } from '../activities/exchange';
import type { ExchangePort } from '../activities/exchange/port';
import { loadApproverKeys } from '../lib/approval';
import { connectTemporal } from '../client/plans';
import type { ChainConfig } from '../lib/config';
import { closeOnFailure, connectRedis, connectTemporalWith } from '../lib/connections';
import { redactUrl } from '../lib/redact';
import { PositionWatcher } from './position-watcher';
import { workflowCode } from './workflow-code';

export { WORKFLOWS_PATH } from './workflow-code';

export interface ChainWorkerOptions {
  config: ChainConfig;
  redis: Redis;
  connection: NativeConnection;
  /**
   * A prebuilt workflow bundle (tests build it once); otherwise workflowCode(): compiled, the bundle built beside it;
   * from the sources, `workflows/` bundled at start.
   */
  workflowBundle?: WorkerOptions['workflowBundle'];
  clock?: () => number;
  /** The approvers' public keys; default: read from APPROVER_KEYS_DIR (lib/approval.ts loadApproverKeys). */
  approverKeys?: ReadonlyMap<string, KeyObject>;
  /** The exchange the activities trade on; default: the paper exchange over the same Redis. */
  exchange?: ExchangePort;
}

/** Builds the worker for the chain's task queue over one Redis connection and one Temporal connection. */
export async function createChainWorker(options: ChainWorkerOptions): Promise<Worker> {
  const { config, redis, connection } = options;
  const clock = options.clock ?? Date.now;
  const exchange = options.exchange ?? exchangeFor(config, redis, clock);
  // Read once at start: a production worker whose approvers cannot sign does not start.
  const approverKeys = options.approverKeys ?? loadApproverKeys(config);
  return Worker.create({
    connection,
    namespace: config.temporalNamespace,
    taskQueue: config.taskQueue,
    activities: createActivities({ redis, config, exchange, clock, approverKeys }),
    // Bounded so that thousands of parked plans keep memory flat; a workflow out of the cache replays when it wakes.
    maxCachedWorkflows: config.workflowCacheSize,
    ...(options.workflowBundle ? { workflowBundle: options.workflowBundle } : workflowCode().option),
  });
}

/** The worker's connection to Temporal: the chain's options (TLS, API key), one clear line on failure. */
export function connectWorkerTemporal(
  config: Pick<ChainConfig, 'temporalAddress' | 'temporalTls' | 'temporalApiKey'>,
): Promise<NativeConnection> {
  return connectTemporalWith(config, (options) => NativeConnection.connect(options));
}

/**
 * The worker process: runs until SIGINT or SIGTERM, then lets running activities finish (the SDK's graceful
 * shutdown) and closes its connections.
 */
export async function runWorker(config: ChainConfig, log: (line: string) => void = console.log): Promise<void> {
  const approverKeys = loadApproverKeys(config);
  // Checked before connecting: a compiled worker without its bundle, or with a stale one, does not start.
  const code = workflowCode();
  log(`worker: workflow code from ${code.description}`);
  const redis = await connectRedis(config);
  const connection = await connectWorkerTemporal(config).catch(closeOnFailure(redis));
  const client = await connectTemporal(config).catch(closeOnFailure(redis, connection));
  const watcher = new PositionWatcher({
    subscriber: await connectRedis(config).catch(closeOnFailure(redis, connection, client.connection)),
    redis,
    client,
    config,
    exchange: exchangeFor(config, redis),
    log,
  });
  try {
    const worker = await createChainWorker({
      config,
      redis,
      connection,
      approverKeys,
      workflowBundle: code.option.workflowBundle,
    });
    await watcher.start();
    const temporal = `${config.temporalAddress}${config.temporalTls ? ' (TLS)' : ''}`;
    const mode =
      config.tradingMode === 'production'
        ? `production mode (approvers ${config.approvers.join(', ')})`
        : 'testnet mode (the Governor approves by itself)';
    log(`worker: ${mode}, task queue ${config.taskQueue} on ${temporal}, Redis ${redactUrl(config.redisUrl)}`);
    await worker.run();
    log('worker: stopped');
  } finally {
    watcher.stop();
    await client.connection.close();
    await connection.close();
    redis.disconnect();
  }
}
