import { createConnection } from 'node:net';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { Secret, type ChainConfig } from '../lib/config';
import { closeOnFailure, connectRedis } from '../lib/connections';
import { createLogger, lineLogger, sdkOwnInfo } from '../lib/log';
import { redactUrl } from '../lib/redact';
import { redisReadiness, serveTelemetry, temporalReadiness, type TelemetryServer } from '../workers/health';
import { watchIntake, watchPlans, watchRedisMemory } from '../workers/gauges';
import { ChainMetrics } from '../workers/metrics';
import { StreamTrimmer, evictionRisk } from '../workers/redis-store';
import { processRuntime } from '../workers/runtime';
import { tracingFor } from '../workers/tracing';
import { outagesOf } from '../workers/outages';
import {
  DATA_DIR,
  ensureServersInstalled,
  startBinanceDoubleProcess,
  startDevTemporalServer,
  startRedis,
  type RunningDouble,
  type RunningRedis,
  type RunningTemporal,
} from './servers';
import { connectTemporal } from '../client/plans';
import { DEFAULT_INTAKE_OPTIONS, INTAKE_GROUP, PlanIntake } from '../workers/intake';
import { PositionWatcher } from '../workers/position-watcher';
import { exchangeFor } from '../activities/exchange';
import { connectWorkerTemporal, createChainWorker } from '../workers/worker';
import { workflowCode } from '../workers/workflow-code';
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
 * Dev's stop requests. The first Ctrl-C (or SIGTERM) asks for an orderly stop: the intake and the worker first, then
 * the servers. A second one stops the servers now (SIGTERM: each still closes its files) and exits 130.
 */
function stopRequests(out: Output, stopServersNow: () => void) {
  let requested = false;
  let onRequest: () => void = () => undefined;
  const handler = () => {
    if (requested) {
      out.line('dev: stopping the servers now');
      stopServersNow();
      process.exit(130);
    }
    requested = true;
    out.line('dev: stopping: the intake and the worker first, then the servers (Ctrl-C again: at once)');
    onRequest();
  };
  const signals = ['SIGINT', 'SIGTERM'] as const;
  for (const signal of signals) process.on(signal, handler);
  return {
    get requested() {
      return requested;
    },
    /** What a stop request does from now on; at once if one came already. */
    onRequest(run: () => void) {
      onRequest = run;
      if (requested) run();
    },
    dispose() {
      for (const signal of signals) process.off(signal, handler);
    },
  };
}

/**
 * `permit-chain dev`: Redis (AOF under .data/redis) and the Temporal dev server (SQLite under .data/, Web UI on
 * the gRPC port + 1000) where none is reachable, then the worker and the intake. Ctrl-C stops what it started, the
 * servers last (they run in process groups of their own, so a terminal's Ctrl-C reaches only this process); state
 * survives.
 */
export async function runDev(
  baseConfig: ChainConfig,
  out: Output,
  options: { demo: boolean; exchange?: 'paper' | 'binance-double' },
): Promise<void> {
  // The stack's log lines are for a person here: readable, whatever stdout is. Signals are dev's to handle: the
  // SDK's own handler would stop the worker, but not in order with the rest.
  const logger = createLogger({ level: baseConfig.telemetry.logLevel, format: 'pretty', base: { component: 'dev' } });
  // As in the worker and the intake: an outage of Redis or Temporal is a line when it starts and one when it ends,
  // whichever part (worker, intake, watcher) meets it, not a line per failed command or poll.
  const outages = outagesOf(baseConfig, logger);
  // The ready line, the demo and the chain's lines: not the SDK's own banners and webpack report at INFO.
  const runtime = processRuntime(logger, {
    sdkMetrics: true,
    shutdownSignals: [],
    quiet: (level, message, meta) => sdkOwnInfo(level, message, meta) || outages.quietSdk(level, message, meta),
  });
  const quiet = (level: 'info' | 'warn') => (line: string) => {
    if (level === 'warn' && outages.quietLine(line)) return;
    logger[level](line);
  };
  const redisLog = { log: lineLogger(logger, 'warn'), state: outages.redis };
  const tracing = tracingFor(baseConfig.telemetry, 'permit-chain-dev');
  ensureServersInstalled({ forTests: false });
  const redisUrl = new URL(baseConfig.redisUrl);
  const redisPort = Number(redisUrl.port || 6379);
  const [temporalHost = '127.0.0.1', temporalPortText = '7233'] = baseConfig.temporalAddress.split(':');
  const temporalPort = Number(temporalPortText);
  const uiPort = temporalPort + 1000;
  const redisShown = redactUrl(baseConfig.redisUrl);

  let redisServer: RunningRedis | undefined;
  let temporalServer: RunningTemporal | undefined;
  let double: RunningDouble | undefined;
  let config = baseConfig; // pointed at the double, when there is one
  // Whatever ends this process, the servers it started do not outlive it.
  const stopServersNow = () => {
    temporalServer?.process.kill('SIGTERM');
    redisServer?.process.kill('SIGTERM');
    double?.process.kill('SIGTERM');
  };
  process.once('exit', stopServersNow);
  const stop = stopRequests(out, stopServersNow);
  try {
    if (options.exchange === 'binance-double') {
      double = await startDouble(out);
      config = doubleConfig(baseConfig, double);
    }
    if (!(await listening(redisUrl.hostname, redisPort))) {
      // The embedded servers are plain text: where TLS is configured, a server of that kind must already run.
      if (!LOOPBACK.has(redisUrl.hostname) || config.redisTls)
        throw new Error(`REDIS_URL: nothing answers at ${redisShown}`);
      out.line(`dev: starting redis-server on port ${redisPort} (append-only file in ${join(DATA_DIR, 'redis')})`);
      redisServer = await startRedis({ port: redisPort, dir: join(DATA_DIR, 'redis'), ownProcessGroup: true });
    } else {
      out.line(`dev: using the Redis at ${redisShown}`);
    }
    if (stop.requested) return;
    if (!(await listening(temporalHost, temporalPort))) {
      if (!LOOPBACK.has(temporalHost) || config.temporalTls)
        throw new Error(`TEMPORAL_ADDRESS: nothing answers at ${config.temporalAddress}`);
      out.line(
        `dev: starting the Temporal dev server on port ${temporalPort} (database ${join(DATA_DIR, 'temporal.db')})`,
      );
      await runtime.install();
      temporalServer = await startDevTemporalServer({
        port: temporalPort,
        uiPort,
        dbFilename: join(DATA_DIR, 'temporal.db'),
        namespace: config.temporalNamespace,
      });
    } else {
      out.line(`dev: using the Temporal server at ${config.temporalAddress}${config.temporalTls ? ' (TLS)' : ''}`);
    }
    if (stop.requested) return;

    const code = workflowCode();
    out.line(`dev: workflow code from ${code.description}`);
    const redis = await connectRedis(config, redisLog);
    // As the worker: no plan runs on a Redis that may evict the chain's records, unless REDIS_ALLOW_EVICTION.
    const risk = await evictionRisk(redis, config).catch(closeOnFailure(redis));
    if (risk !== undefined) logger.warn(`dev: ${risk}`);
    const intakeReader = await connectRedis(config, redisLog).catch(closeOnFailure(redis));
    const connection = await connectWorkerTemporal(config, runtime).catch(closeOnFailure(redis, intakeReader));
    const client = await connectTemporal(config).catch(closeOnFailure(redis, intakeReader, connection));
    let server: TelemetryServer | undefined;
    let trimmer: StreamTrimmer | undefined;
    outages.watch({ redis, temporal: connection });
    try {
      const metrics = new ChainMetrics();
      outages.register(metrics.registry);
      const worker = await createChainWorker({
        config,
        redis,
        connection,
        metrics,
        logger,
        ...(tracing ? { tracing } : {}),
        ...(code.option.workflowBundle ? { workflowBundle: code.option.workflowBundle } : {}),
      });
      const watcher = new PositionWatcher({
        subscriber: await connectRedis(config, redisLog),
        redis,
        client,
        config,
        exchange: exchangeFor(config, redis),
        log: quiet('warn'),
      });
      await watcher.start();
      const intake = new PlanIntake(
        {
          reader: intakeReader,
          writer: redis,
          client,
          config,
          log: (line, level = 'info') => quiet(level)(line),
          metrics,
        },
        { ...DEFAULT_INTAKE_OPTIONS, consumer: `dev-${hostname()}` },
      );
      watchPlans(metrics, client, config, logger);
      watchIntake(metrics, redis, config, INTAKE_GROUP, logger);
      watchRedisMemory(metrics, redis, logger);
      trimmer = new StreamTrimmer({
        redis,
        config,
        trimmed: (stream, entries) => metrics.streamTrimmed.inc({ stream }, entries),
        log: quiet('warn'),
      });
      trimmer.start();
      const checks = [
        redisReadiness(redis, 'redis', risk),
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
      const stopProcesses = () => {
        intake.stop();
        if (worker.getState() === 'RUNNING') worker.shutdown();
      };
      if (!stop.requested) {
        const running = Promise.all([worker.run(), intake.run()]);
        stop.onRequest(stopProcesses);
        const ui = temporalServer ? `http://127.0.0.1:${uiPort}` : `(the Web UI of ${config.temporalAddress})`;
        out.line(
          `ready  Web UI ${ui}  Temporal ${config.temporalAddress}  Redis ${redisShown}  ` +
            `Metrics ${server.url}/metrics  (Ctrl-C stops)`,
        );
        if (options.demo) {
          runDemo(config, out).catch((err: unknown) => {
            out.line(`demo failed: ${err instanceof Error ? err.message : String(err)}`);
            process.exitCode = 1;
            stopProcesses();
          });
        }
        await running;
        out.line('dev: worker and intake stopped');
      }
      watcher.stop();
    } finally {
      outages.close();
      trimmer?.stop();
      await server?.close();
      await tracing?.shutdown();
      await client.connection.close();
      await connection.close();
      intakeReader.disconnect();
      redis.disconnect();
    }
  } finally {
    stop.dispose();
    await double?.stop();
    await temporalServer?.stop();
    await redisServer?.stop();
    process.off('exit', stopServersNow);
    if (temporalServer || redisServer) out.line('dev: servers stopped');
  }
}

/**
 * The Binance double for `dev --exchange binance-double`: a tool of the checkout (scripts/binance-double), started
 * as a process of its own; its key and secret go to owner-only files under .data/, and the lines to point another
 * terminal's `permit-chain` at it are printed.
 */
async function startDouble(out: Output): Promise<RunningDouble> {
  const dir = join(DATA_DIR, 'binance-double');
  const double = await startBinanceDoubleProcess(dir);
  out.line(`dev: the Binance USD-M double on ${double.url} (BTCUSDT, ETHUSDT; the chain trades there, testnet rules)`);
  out.line(
    `dev: to use it from another terminal: export EXCHANGE=binance-usdm-testnet BINANCE_BASE_URL=${double.url} ` +
      `BINANCE_API_KEY_FILE=${join(dir, 'api-key')} BINANCE_API_SECRET_FILE=${join(dir, 'api-secret')}`,
  );
  return double;
}

/** The configuration that points the chain at the double. */
function doubleConfig(config: ChainConfig, double: RunningDouble): ChainConfig {
  return {
    ...config,
    exchange: 'binance-usdm-testnet',
    binance: {
      apiKey: new Secret(double.apiKey),
      apiSecret: new Secret(double.apiSecret),
      baseUrl: double.url,
      recvWindowMs: 5000,
      rulesRefreshS: 300,
    },
  };
}
