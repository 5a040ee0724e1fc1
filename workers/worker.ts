import type { KeyObject } from 'node:crypto';
import { join } from 'node:path';
import { NativeConnection, Worker, type WorkerOptions } from '@temporalio/worker';
import type { Redis } from 'ioredis';
import { createActivities } from '../activities';
import { createPaperExchange } from '../activities/exchange/paper';
import type { ExchangePort } from '../activities/exchange/port';
import { loadApproverKeys } from '../lib/approval';
import type { ChainConfig } from '../lib/config';
import { closeOnFailure, connectRedis, connectTemporalWith } from '../lib/connections';
import { redisKeys } from '../lib/keys';
import { redactUrl } from '../lib/redact';

export const WORKFLOWS_PATH = join(__dirname, '..', 'workflows', 'index.ts');

export interface ChainWorkerOptions {
  config: ChainConfig;
  redis: Redis;
  connection: NativeConnection;
  /** A prebuilt workflow bundle (tests build it once); otherwise the worker bundles `workflows/` itself. */
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
  const exchange = options.exchange ?? createPaperExchange(redis, redisKeys(config.keyPrefix), clock);
  // Read once at start: a production worker whose approvers cannot sign does not start.
  const approverKeys = options.approverKeys ?? loadApproverKeys(config);
  return Worker.create({
    connection,
    namespace: config.temporalNamespace,
    taskQueue: config.taskQueue,
    activities: createActivities({ redis, config, exchange, clock, approverKeys }),
    ...(options.workflowBundle ? { workflowBundle: options.workflowBundle } : { workflowsPath: WORKFLOWS_PATH }),
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
  const redis = await connectRedis(config);
  const connection = await connectWorkerTemporal(config).catch(closeOnFailure(redis));
  try {
    const worker = await createChainWorker({ config, redis, connection, approverKeys });
    const temporal = `${config.temporalAddress}${config.temporalTls ? ' (TLS)' : ''}`;
    const mode =
      config.tradingMode === 'production'
        ? `production mode (approvers ${config.approvers.join(', ')})`
        : 'testnet mode (the Governor approves by itself)';
    log(`worker: ${mode}, task queue ${config.taskQueue} on ${temporal}, Redis ${redactUrl(config.redisUrl)}`);
    await worker.run();
    log('worker: stopped');
  } finally {
    await connection.close();
    redis.disconnect();
  }
}
