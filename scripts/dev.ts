import { createConnection } from 'node:net';
import { hostname } from 'node:os';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { Secret, type ChainConfig } from '../lib/config';
import type * as DoubleModule from '../test/binance-double/server';
import type { BinanceDouble } from '../test/binance-double/server';
import { closeOnFailure, connectRedis } from '../lib/connections';
import { redactUrl } from '../lib/redact';
import { DATA_DIR, ensureServersInstalled, startRedis, startTemporalDevServer, type RunningRedis } from './servers';
import { connectTemporal } from '../client/plans';
import { DEFAULT_INTAKE_OPTIONS, PlanIntake } from '../workers/intake';
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
 * `permit-chain dev`: Redis (AOF under .data/redis) and the Temporal dev server (SQLite under .data/, Web UI on
 * the gRPC port + 1000) where none is reachable, then the worker and the intake. Ctrl-C stops what it started; state survives.
 */
export async function runDev(
  baseConfig: ChainConfig,
  out: Output,
  options: { demo: boolean; exchange?: 'paper' | 'binance-double' },
): Promise<void> {
  // The console is for the stack's own lines here; the SDK speaks up only for warnings.
  Runtime.install({ logger: new DefaultLogger('WARN') });
  ensureServersInstalled({ forTests: false });
  const redisUrl = new URL(baseConfig.redisUrl);
  const redisPort = Number(redisUrl.port || 6379);
  const [temporalHost = '127.0.0.1', temporalPortText = '7233'] = baseConfig.temporalAddress.split(':');
  const temporalPort = Number(temporalPortText);
  const uiPort = temporalPort + 1000;
  const redisShown = redactUrl(baseConfig.redisUrl);

  let redisServer: RunningRedis | undefined;
  let temporalServer: TestWorkflowEnvironment | undefined;
  let double: BinanceDouble | undefined;
  let config = baseConfig; // pointed at the double, when there is one
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
      temporalServer = await startTemporalDevServer({
        port: temporalPort,
        uiPort,
        dbFilename: join(DATA_DIR, 'temporal.db'),
        namespace: config.temporalNamespace,
      });
    } else {
      out.line(`dev: using the Temporal server at ${config.temporalAddress}${config.temporalTls ? ' (TLS)' : ''}`);
    }

    const code = workflowCode();
    out.line(`dev: workflow code from ${code.description}`);
    const redis = await connectRedis(config);
    const intakeReader = await connectRedis(config).catch(closeOnFailure(redis));
    const connection = await connectWorkerTemporal(config).catch(closeOnFailure(redis, intakeReader));
    const client = await connectTemporal(config).catch(closeOnFailure(redis, intakeReader, connection));
    try {
      const worker = await createChainWorker({ config, redis, connection, workflowBundle: code.option.workflowBundle });
      const watcher = new PositionWatcher({
        subscriber: await connectRedis(config),
        redis,
        client,
        config,
        exchange: exchangeFor(config, redis),
        log: (line) => out.line(line),
      });
      await watcher.start();
      const intake = new PlanIntake(
        { reader: intakeReader, writer: redis, client, config, log: (line) => out.line(line) },
        { ...DEFAULT_INTAKE_OPTIONS, consumer: `dev-${hostname()}` },
      );
      // The worker stops itself on SIGINT/SIGTERM (the SDK's runtime); the intake is told to.
      const stopIntake = () => intake.stop();
      process.once('SIGINT', stopIntake);
      process.once('SIGTERM', stopIntake);
      const running = Promise.all([worker.run(), intake.run()]);
      const ui = temporalServer ? `http://127.0.0.1:${uiPort}` : `(the Web UI of ${config.temporalAddress})`;
      out.line(`ready  Web UI ${ui}  Temporal ${config.temporalAddress}  Redis ${redisShown}  (Ctrl-C stops)`);
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
      await client.connection.close();
      await connection.close();
      intakeReader.disconnect();
      redis.disconnect();
    }
  } finally {
    await temporalServer?.teardown();
    await redisServer?.stop();
    await double?.stop();
  }
}

/**
 * The Binance double (test/binance-double), started for `dev --exchange binance-double`: its key and secret go to
 * owner-only files under .data/, and the lines to point another terminal's `permit-chain` at it are printed.
 */
async function startDouble(out: Output): Promise<BinanceDouble> {
  // Loaded only here: test code, which a production install does not have.
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- a lazy load, see above
  const { startBinanceDouble } = require('../test/binance-double/server') as typeof DoubleModule;
  const double = await startBinanceDouble();
  const dir = join(DATA_DIR, 'binance-double');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeFileSync(join(dir, 'api-key'), `${double.apiKey}\n`, { mode: 0o600 });
  writeFileSync(join(dir, 'api-secret'), `${double.apiSecret}\n`, { mode: 0o600 });
  out.line(`dev: the Binance USD-M double on ${double.url} (BTCUSDT, ETHUSDT; the chain trades there, testnet rules)`);
  out.line(
    `dev: to use it from another terminal: export EXCHANGE=binance-usdm-testnet BINANCE_BASE_URL=${double.url} ` +
      `BINANCE_API_KEY_FILE=${join(dir, 'api-key')} BINANCE_API_SECRET_FILE=${join(dir, 'api-secret')}`,
  );
  return double;
}

/** The configuration that points the chain at the double. */
function doubleConfig(config: ChainConfig, double: BinanceDouble): ChainConfig {
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
