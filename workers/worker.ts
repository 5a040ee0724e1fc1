import { join } from 'node:path';
import { NativeConnection, Worker, type WorkerOptions } from '@temporalio/worker';
import { Redis } from 'ioredis';
import { createActivities } from '../activities';
import { createPaperExchange } from '../activities/exchange/paper';
import type { ExchangePort } from '../activities/exchange/port';
import type { ChainConfig } from '../lib/config';
import { redisKeys } from '../lib/keys';

export const WORKFLOWS_PATH = join(__dirname, '..', 'workflows', 'index.ts');

export interface ChainWorkerOptions {
  config: ChainConfig;
  redis: Redis;
  connection: NativeConnection;
  /** A prebuilt workflow bundle (tests build it once); otherwise the worker bundles `workflows/` itself. */
  workflowBundle?: WorkerOptions['workflowBundle'];
  clock?: () => number;
  /** The exchange the activities trade on; the paper exchange when absent. */
  exchange?: ExchangePort;
}

/** Builds the worker for the chain's task queue over one Redis connection and one Temporal connection. */
export async function createChainWorker(options: ChainWorkerOptions): Promise<Worker> {
  const { config, redis, connection } = options;
  const clock = options.clock ?? Date.now;
  const exchange = options.exchange ?? createPaperExchange(redis, redisKeys(config.keyPrefix), clock);
  return Worker.create({
    connection,
    namespace: config.temporalNamespace,
    taskQueue: config.taskQueue,
    activities: createActivities({ redis, config, exchange, clock }),
    ...(options.workflowBundle ? { workflowBundle: options.workflowBundle } : { workflowsPath: WORKFLOWS_PATH }),
  });
}

/**
 * A Redis client for the chain: it reconnects on its own, and a command fails (and its caller retries) meanwhile.
 * Connection errors are reported once per kind, not once per reconnect attempt.
 */
export function connectRedis(url: string): Redis {
  const redis = new Redis(url, { maxRetriesPerRequest: 3, enableOfflineQueue: true });
  let last = '';
  redis.on('error', (err: Error) => {
    if (err.message !== last) console.warn(`redis: ${err.message}`);
    last = err.message;
  });
  redis.on('ready', () => (last = ''));
  return redis;
}

/**
 * The worker process: runs until SIGINT or SIGTERM, then lets running activities finish (the SDK's graceful
 * shutdown) and closes its connections.
 */
export async function runWorker(config: ChainConfig, log: (line: string) => void = console.log): Promise<void> {
  const redis = connectRedis(config.redisUrl);
  const connection = await NativeConnection.connect({ address: config.temporalAddress });
  try {
    const worker = await createChainWorker({ config, redis, connection });
    log(`worker: task queue ${config.taskQueue} on ${config.temporalAddress}, Redis ${config.redisUrl}`);
    await worker.run();
    log('worker: stopped');
  } finally {
    await connection.close();
    redis.disconnect();
  }
}
