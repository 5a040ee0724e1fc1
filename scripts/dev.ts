import { createConnection } from 'node:net';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { ChainConfig } from '../lib/config';
import { closeOnFailure, connectRedis } from '../lib/connections';
import { createLogger, lineLogger } from '../lib/log';
import { redactUrl } from '../lib/redact';
import { redisReadiness, serveTelemetry, temporalReadiness, type TelemetryServer } from '../workers/health';
import { ChainMetrics, watchIntake, watchPlans } from '../workers/metrics';
import { processRuntime } from '../workers/runtime';
import { tracingFor } from '../workers/tracing';
import { DATA_DIR, ensureServersInstalled, startRedis, startTemporalDevServer, type RunningRedis } from './servers';
import { connectTemporal } from '../client/plans';
import { DEFAULT_INTAKE_OPTIONS, INTAKE_GROUP, PlanIntake } from '../workers/intake';
import { PositionWatcher } from '../workers/position-watcher';
import { exchangeFor } from '../activities/exchange';
import { connectWorkerTemporal, createChainWorker } from '../workers/worker';
import { runDemo } from './demo';
import type { Output } from './output';

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '::1', '[::1]']);

/** True when something accepts TCP connections at host:port. */
function listening(host: string, port: number, timeoutMs = 500): Promise<boolean> {
  return new Promise((done) => {
    const socket = createConnection({ host, port });
    const finish = (ok: boolean) => {
      socket.destroy();
      done(ok);
    };
    socket.setTimeout(timeoutMs, () => finish(false));
    socket.once('connect', () => finish(true));
    socket.once('error', () => finish(false));
  });
}

/**
 * `permit-chain dev`: Redis (AOF under .data/redis) and the Temporal dev server (SQLite under .data/, Web UI on
 * the gRPC port + 1000) where none is reachable, then the worker and the intake, with `/metrics`, `/healthz` and
 * `/readyz` on 127.0.0.1 (METRICS_PORT, else a free port). Ctrl-C stops what it started; state survives.
 */
export async function runDev(config: ChainConfig, out: Output, options: { demo: boolean }): Promise<void> {
  // The stack's log lines are for a person here: readable, whatever stdout is.
  const logger = createLogger({ level: config.telemetry.logLevel, format: 'pretty', base: { component: 'dev' } });
  const runtime = processRuntime(logger, { sdkMetrics: true });
  const tracing = tracingFor(config.telemetry, 'permit-chain-dev');
  ensureServersInstalled({ forTests: false });
  const redisUrl = new URL(config.redisUrl);
  const redisPort = Number(redisUrl.port || 6379);
  const [temporalHost = '127.0.0.1', temporalPortText = '7233'] = config.temporalAddress.split(':');
  const temporalPort = Number(temporalPortText);
  const uiPort = temporalPort + 1000;
  const redisShown = redactUrl(config.redisUrl);

  let redisServer: RunningRedis | undefined;
  let temporalServer: TestWorkflowEnvironment | undefined;
  try {
    if (!(await listening(redisUrl.hostname, redisPort))) {
      // The embedded servers are plain text: where TLS is configured, a server of that kind must already run.
      if (!LOOPBACK.has(redisUrl.hostname) || config.redisTls)
        throw new Error(`REDIS_URL: nothing answers at ${redisShown}`);
      out.line(`dev: starting redis-server on port ${redisPort} (append-only file in ${join(DATA_DIR, 'redis')})`);
      redisServer = await startRedis({ port: redisPort, dir: join(DATA_DIR, 'redis') });
    } else {
      out.line(`dev: using the Redis at ${redisShown}`);
    }
    if (!(await listening(temporalHost, temporalPort))) {
      if (!LOOPBACK.has(temporalHost) || config.temporalTls)
        throw new Error(`TEMPORAL_ADDRESS: nothing answers at ${config.temporalAddress}`);
      out.line(
        `dev: starting the Temporal dev server on port ${temporalPort} (database ${join(DATA_DIR, 'temporal.db')})`,
      );
      await runtime.install();
      temporalServer = await startTemporalDevServer({
        port: temporalPort,
        uiPort,
        dbFilename: join(DATA_DIR, 'temporal.db'),
        namespace: config.temporalNamespace,
      });
    } else {
      out.line(`dev: using the Temporal server at ${config.temporalAddress}${config.temporalTls ? ' (TLS)' : ''}`);
    }

    const redis = await connectRedis(config);
    const intakeReader = await connectRedis(config).catch(closeOnFailure(redis));
    const connection = await connectWorkerTemporal(config, runtime).catch(closeOnFailure(redis, intakeReader));
    const client = await connectTemporal(config).catch(closeOnFailure(redis, intakeReader, connection));
    let server: TelemetryServer | undefined;
    try {
      const metrics = new ChainMetrics();
      const worker = await createChainWorker({
        config,
        redis,
        connection,
        metrics,
        logger,
        ...(tracing ? { tracing } : {}),
      });
      const watcher = new PositionWatcher({
        subscriber: await connectRedis(config),
        redis,
        client,
        config,
        exchange: exchangeFor(config, redis),
        log: lineLogger(logger, 'warn'),
      });
      await watcher.start();
      const intake = new PlanIntake(
        {
          reader: intakeReader,
          writer: redis,
          client,
          config,
          log: (line, level = 'info') => logger[level](line),
          metrics,
        },
        { ...DEFAULT_INTAKE_OPTIONS, consumer: `dev-${hostname()}` },
      );
      watchPlans(metrics, client, config, logger);
      watchIntake(metrics, redis, config, INTAKE_GROUP, logger);
      const checks = [
        redisReadiness(redis),
        temporalReadiness(() => connection.workflowService.getSystemInfo({})),
        {
          name: 'worker',
          check: () => Promise.resolve(worker.getState() === 'RUNNING' ? undefined : worker.getState()),
        },
        { name: 'intake', check: () => Promise.resolve(intake.notReading()) },
      ];
      server = await serveTelemetry({
        port: config.telemetry.metricsPort ?? 0,
        host: '127.0.0.1',
        metrics,
        sdkMetrics: () => runtime.sdkMetrics(),
        checks: () => checks,
        logger,
      });
      // The worker stops itself on SIGINT/SIGTERM (the SDK's runtime); the intake is told to.
      const stopIntake = () => intake.stop();
      process.once('SIGINT', stopIntake);
      process.once('SIGTERM', stopIntake);
      const running = Promise.all([worker.run(), intake.run()]);
      const ui = temporalServer ? `http://127.0.0.1:${uiPort}` : `(the Web UI of ${config.temporalAddress})`;
      out.line(
        `ready  Web UI ${ui}  Temporal ${config.temporalAddress}  Redis ${redisShown}  ` +
          `Metrics ${server.url}/metrics  (Ctrl-C stops)`,
      );
      if (options.demo) {
        runDemo(config, out).catch((err: unknown) => {
          out.line(`demo failed: ${err instanceof Error ? err.message : String(err)}`);
          process.exitCode = 1;
          intake.stop();
          worker.shutdown();
        });
      }
      await running;
      watcher.stop();
      out.line('dev: worker and intake stopped');
    } finally {
      await server?.close();
      await tracing?.shutdown();
      await client.connection.close();
      await connection.close();
      intakeReader.disconnect();
      redis.disconnect();
    }
  } finally {
    await temporalServer?.teardown();
    await redisServer?.stop();
  }
}
