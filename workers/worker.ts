import type { KeyObject } from 'node:crypto';
import { NativeConnection, Worker, type WorkerOptions } from '@temporalio/worker';
import type { Redis } from 'ioredis';
import { createActivities } from '../activities';
import { exchangeFor } from '../activities/exchange';
import type { ExchangePort } from '../activities/exchange/port';
import type { Client } from '@temporalio/client';
import { approverKeysLine, loadApproverKeys, loadOperatorKeys, operatorKeysLine } from '../lib/approval';
import { venueHost } from '../lib/venue';
import { createOperatorActivities } from './operator-activities';
import { connectTemporal } from '../client/plans';
import type { ChainConfig } from '../lib/config';
import {
  ConnectionError,
  closeOnFailure,
  connectRedis,
  connectTemporalWith,
  explainRedisError,
} from '../lib/connections';
import { createLogger, lineLogger, type Logger } from '../lib/log';
import { quorumRuleText } from '../lib/quorum';
import { redactUrl } from '../lib/redact';
import {
  describeRedisFailure,
  redisReadiness,
  serveTelemetry,
  temporalReadiness,
  type ReadinessCheck,
  type TelemetryServer,
} from './health';
import { watchPlans, watchRedisMemory } from './gauges';
import { ChainMetrics, chainObserverSinks, observeActivities } from './metrics';
import { outagesOf } from './outages';
import { StreamTrimmer, evictionRisk } from './redis-store';
import { LineSweeper } from './line-sweep';
import { PositionWatcher } from './position-watcher';
import { applyRecordLife } from './retention';
import { processRuntime, type ProcessRuntime } from './runtime';
import { tracingFor, type Tracing } from './tracing';
import { WORKFLOW_INTERCEPTOR_MODULES, workflowCode } from './workflow-code';
import { currentBuildId } from './build-id';

export { WORKFLOWS_PATH, WORKFLOW_INTERCEPTOR_MODULES } from './workflow-code';

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
  /** The operators' public keys; default: read from APPROVER_KEYS_DIR for OPERATORS (lib/approval.ts). */
  operatorKeys?: ReadonlyMap<string, KeyObject>;
  /** The Temporal client operator operations use (a reconcile wakes plans); default: one connected when first needed. */
  client?: Client;
  /** The exchange the activities trade on; default: the paper exchange over the same Redis. */
  exchange?: ExchangePort;
  /** Where the chain's series are counted; default: a registry of this worker's own, not served. */
  metrics?: ChainMetrics;
  /** The process's logger; default: warnings and errors only, as JSON lines. */
  logger?: Logger;
  /** OpenTelemetry tracing (workers/tracing.ts); default: none. */
  tracing?: Tracing;
  /** Workflow code bundled at start from this module instead: the bench's (scripts/bench-workflows.ts). */
  workflowsPath?: string;
  /** Activities registered beside the chain's: the bench's no-op (scripts/bench-workflows.ts benchShape). */
  extraActivities?: Record<string, () => Promise<void>>;
  /** With WORKER_VERSIONING, the build id this worker polls as; default: currentBuildId() (workers/build-id.ts). */
  buildId?: string;
}

/**
 * With WORKER_VERSIONING, the worker is a version of WORKER_DEPLOYMENT named by its build id, and the workflows it
 * starts are PINNED to it: a new build never replays an old build's plans. The worker's default, not the workflow's
 * own `setWorkflowOptions`: a workflow that names a behaviour fails every task on an unversioned worker (the server:
 * "versioning behavior cannot be specified without deployment options"), and `dev` and the tests run unversioned.
 */
export function workerDeployment(
  config: Pick<ChainConfig, 'workerDeployment' | 'workerVersioning'>,
  buildId: string,
): Pick<WorkerOptions, 'workerDeploymentOptions'> {
  if (!config.workerVersioning) return {};
  return {
    workerDeploymentOptions: {
      version: { deploymentName: config.workerDeployment, buildId },
      useWorkerVersioning: true as const,
      defaultVersioningBehavior: 'PINNED' as const,
    },
  };
}

/** Builds the worker for the chain's task queue over one Redis connection and one Temporal connection. */
export async function createChainWorker(options: ChainWorkerOptions): Promise<Worker> {
  const { config, redis, connection } = options;
  const clock = options.clock ?? Date.now;
  const exchange = options.exchange ?? exchangeFor(config, redis, clock);
  // Read once at start: a production worker whose approvers cannot sign does not start.
  const approverKeys = options.approverKeys ?? loadApproverKeys(config);
  const operatorKeys = options.operatorKeys ?? loadOperatorKeys(config);
  const metrics = options.metrics ?? new ChainMetrics({ processMetrics: false });
  const logger = options.logger ?? createLogger({ level: 'warn', format: 'json' });
  const code = options.workflowBundle
    ? { workflowBundle: options.workflowBundle }
    : options.workflowsPath
      ? { workflowsPath: options.workflowsPath }
      : workflowCode().option;
  // Learnt at start: Apply's once-only record outlives every run Temporal could still reset.
  const recordLife = await applyRecordLife(connection.workflowService, config);
  if (recordLife.ttlS === null) logger.warn(recordLife.line);
  else logger.info(recordLife.line);
  const deps = { redis, config, exchange, clock, approverKeys, applyRecordTtlS: recordLife.ttlS };
  let client: Promise<Client> | undefined = options.client ? Promise.resolve(options.client) : undefined;
  const operator = createOperatorActivities({
    redis,
    config,
    exchange,
    clock,
    operatorKeys,
    logger,
    client: () => (client ??= connectTemporal(config)),
  });
  return Worker.create({
    connection,
    namespace: config.temporalNamespace,
    taskQueue: config.taskQueue,
    activities: { ...options.extraActivities, ...createActivities(deps), ...operator },
    // Bounded so that thousands of parked plans keep memory flat; a workflow out of the cache replays when it wakes.
    maxCachedWorkflows: config.workflowCacheSize,
    // A prebuilt bundle carries the workflow interceptors already (bundled with them); the SDK takes these only when
    // it bundles `workflows/` itself, and warns when given both.
    interceptors: {
      activity: [observeActivities(metrics, logger)],
      ...(code.workflowBundle ? {} : { workflowModules: WORKFLOW_INTERCEPTOR_MODULES }),
    },
    sinks: chainObserverSinks(metrics, logger),
    ...(options.tracing ? { plugins: [options.tracing.plugin] } : {}),
    ...workerDeployment(config, config.workerVersioning ? (options.buildId ?? currentBuildId()) : ''),
    ...code,
  });
}

/**
 * How long Redis may refuse a running worker's credentials (or certificate) before it stops. A worker that cannot
 * use Redis fails every layer it runs, and a workflow whose local activities run here stays stuck here: stopping
 * lets the other workers take its work, and its supervisor restart it with the secret fixed. The grace rides out a
 * password being changed on both sides.
 */
const REDIS_REFUSAL_GRACE_MS = 10_000;

/**
 * Watches the worker's Redis connections for a refusal that does not cure itself (a password or certificate
 * rejected on a reconnect: the secret was rotated, the ACL user disabled) and stops the worker when it lasts
 * {@link REDIS_REFUSAL_GRACE_MS}. Returns what was refused, once it has stopped the worker for it.
 */
function stopOnRedisRefusal(connections: Redis[], worker: Worker, logger: Logger): () => string | undefined {
  let timer: NodeJS.Timeout | undefined;
  let refused: string | undefined;
  for (const redis of connections) {
    redis.on('error', (err: unknown) => {
      if (timer || refused !== undefined || !explainRedisError(err).refused) return;
      const why = describeRedisFailure(err);
      logger.error(
        `worker: Redis refuses this worker (${why}); stopping in ${REDIS_REFUSAL_GRACE_MS / 1000}s unless it accepts`,
      );
      timer = setTimeout(() => {
        refused = why;
        logger.error(`worker: Redis still refuses (${why}): stopping, so that other workers take the work`);
        worker.shutdown();
      }, REDIS_REFUSAL_GRACE_MS);
    });
    redis.on('ready', () => {
      clearTimeout(timer);
      timer = undefined;
    });
  }
  return () => refused;
}

/**
 * The worker's connection to Temporal: the chain's options (TLS, API key), one clear line on failure. `runtime`
 * is installed just before it (workers/runtime.ts).
 */
export function connectWorkerTemporal(
  config: Pick<ChainConfig, 'temporalAddress' | 'temporalTls' | 'temporalApiKey'>,
  runtime?: ProcessRuntime,
): Promise<NativeConnection> {
  return connectTemporalWith(config, async (options) => {
    await runtime?.install();
    return NativeConnection.connect(options);
  });
}

/** The logger of a worker or intake process: JSON lines, readable on a terminal, at LOG_LEVEL. */
export function processLogger(config: Pick<ChainConfig, 'telemetry'>, component: string): Logger {
  return createLogger({ level: config.telemetry.logLevel, base: { component } });
}

/**
 * The worker process: runs until SIGINT or SIGTERM, then lets running activities finish (the SDK's graceful
 * shutdown) and closes its connections. With METRICS_PORT it serves `/metrics`, `/healthz` and `/readyz`; a Redis
 * that refuses its credentials while it runs stops it (exit 1), as it would have at start.
 */
export async function runWorker(config: ChainConfig, logger: Logger = processLogger(config, 'worker')): Promise<void> {
  const { telemetry } = config;
  const approverKeys = loadApproverKeys(config);
  const operatorKeys = loadOperatorKeys(config);
  // Checked before connecting: a compiled worker without its bundle, or with a stale one, does not start.
  const code = workflowCode();
  // While Redis or Temporal is away, the process says so once, and once when it is back: the failed polls,
  // activities and steps of the outage are its symptoms, not lines of their own.
  const outages = outagesOf(config, logger);
  const runtime = processRuntime(logger, { sdkMetrics: telemetry.metricsPort !== null, quiet: outages.quietSdk });
  const log = lineLogger(logger);
  log(`worker: workflow code from ${code.description}`);
  const buildId = currentBuildId();
  log(
    `worker: build ${buildId} of deployment ${config.workerDeployment}, ` +
      (config.workerVersioning
        ? 'versioned (plans pinned to it; it gets plans once it is current: docs/runbook.md, "Deploying a new build")'
        : 'unversioned (WORKER_VERSIONING=false)'),
  );
  // Which keys decide who may approve, so that a changed key shows in the log at the next start.
  if (approverKeys.size > 0) log(approverKeysLine(approverKeys, config));
  if (operatorKeys.size > 0) log(operatorKeysLine(operatorKeys, config));
  const redisLog = { log: lineLogger(logger, 'warn'), state: outages.redis };
  const redis = await connectRedis(config, redisLog);
  // Before anything runs: a Redis that may evict the chain's records does not get a worker, unless allowed.
  const risk = await evictionRisk(redis, config).catch(closeOnFailure(redis));
  if (risk !== undefined) logger.warn(`worker: ${risk}`);
  const connection = await connectWorkerTemporal(config, runtime).catch(closeOnFailure(redis));
  const client = await connectTemporal(config).catch(closeOnFailure(redis, connection));
  const subscriber = await connectRedis(config, redisLog).catch(closeOnFailure(redis, connection, client.connection));
  outages.watch({ redis, temporal: connection });
  const watcher = new PositionWatcher({
    subscriber,
    redis,
    client,
    config,
    exchange: exchangeFor(config, redis),
    // Its lines are all about what it cannot do.
    log: (line) => {
      if (!outages.quietLine(line)) logger.warn(line);
    },
  });
  const metrics = new ChainMetrics();
  outages.register(metrics.registry);
  const trimmer = new StreamTrimmer({
    redis,
    config,
    trimmed: (stream, entries) => metrics.streamTrimmed.inc({ stream }, entries),
    log: (line) => {
      if (!outages.quietLine(line)) logger.warn(line);
    },
  });
  const sweeper = new LineSweeper({
    redis,
    client,
    config,
    exchange: exchangeFor(config, redis),
    log: (line, level) => {
      if (level === 'info') logger.info(line);
      else if (!outages.quietLine(line)) logger.warn(line);
    },
    onEnded: (role) => metrics.lineEnded.inc({ role }),
  });
  const tracing = tracingFor(telemetry, 'permit-chain-worker');
  let server: TelemetryServer | undefined;
  try {
    const worker = await createChainWorker({
      config,
      redis,
      connection,
      approverKeys,
      operatorKeys,
      client,
      metrics,
      logger,
      buildId,
      ...(tracing ? { tracing } : {}),
      ...(code.option.workflowBundle ? { workflowBundle: code.option.workflowBundle } : {}),
    });
    const refused = stopOnRedisRefusal([redis, subscriber], worker, logger);
    await watcher.start();
    trimmer.start();
    sweeper.start();
    if (telemetry.metricsPort !== null) {
      watchPlans(metrics, client, config, logger);
      watchRedisMemory(metrics, redis, logger);
      const checks: ReadinessCheck[] = [
        redisReadiness(redis, 'redis', risk),
        temporalReadiness(() => connection.workflowService.getSystemInfo({})),
        {
          name: 'worker',
          check: () => Promise.resolve(worker.getState() === 'RUNNING' ? undefined : worker.getState()),
        },
      ];
      server = await serveTelemetry({
        port: telemetry.metricsPort,
        host: telemetry.metricsHost,
        metrics,
        sdkMetrics: () => runtime.sdkMetrics(),
        checks: () => checks,
        logger,
      });
      logger.info(
        { metrics_url: `${server.url}/metrics` },
        `worker: metrics ${server.url}/metrics, health /healthz, /readyz`,
      );
    }
    const temporal = `${config.temporalAddress}${config.temporalTls ? ' (TLS)' : ''}`;
    const mode =
      config.tradingMode === 'production'
        ? `production mode (approvers ${config.approvers.join(', ')}; ${quorumRuleText(config.approvalQuorum)})`
        : 'testnet mode (the Governor approves by itself)';
    const venue = `exchange ${config.exchange} at ${venueHost(config)}`;
    const operators = config.operators.length > 0 ? `operators ${config.operators.join(', ')}` : 'no operators';
    log(
      `worker: ${mode}, ${venue}, key prefix ${config.keyPrefix}, ${operators}, task queue ${config.taskQueue} on ` +
        `${temporal}, Redis ${redactUrl(config.redisUrl)}`,
    );
    await worker.run();
    const why = refused();
    if (why !== undefined) throw new ConnectionError(`Redis at ${redactUrl(config.redisUrl)}: ${why}`);
    log('worker: stopped');
  } finally {
    outages.close();
    trimmer.stop();
    await server?.close();
    await tracing?.shutdown();
    watcher.stop();
    sweeper.stop();
    await client.connection.close();
    await connection.close();
    redis.disconnect();
  }
}
