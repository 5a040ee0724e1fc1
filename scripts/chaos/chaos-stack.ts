/**
 * The chaos run's stack, every process its own, on loopback ports: Redis (append-only, fsync always), the Temporal
 * dev server (a database file, so a restart keeps state), the Binance double (or the paper exchange), two workers
 * and one intake; and the positions every symbol starts with.
 */
import { join } from 'node:path';
import { Connection } from '@temporalio/client';
import type { Redis } from 'ioredis';
import { redisKeys, type RedisKeys } from '../../contract/keys';
import { PROJECT_ROOT, devTemporalServerCommand, freePort, redisReachable, redisServerPath } from '../../cli/servers';
import { intakeSpec, workerSpec } from '../stack/chain';
import type { ManagedProcess, ProcessGroup } from '../stack/processes';

/** The permit's life in the run: short, so that a SIGSTOP can outlast it. */
export const PERMIT_TTL_S = 20;
const PERMIT_MARGIN_S = 5;
/** Plans above this are designed to be denied by the Governor. */
const MAX_QTY = '5';
export const START_AMOUNT = '100';
export const SYMBOLS = ['CHAAUSDT', 'CHABUSDT', 'CHACUSDT', 'CHADUSDT', 'CHAEUSDT'];
/** Only the blocked plans trade here: its ledger is moved off the exchange's, and `reconcile` puts it back. */
export const BLOCKED_SYMBOL = 'CHBLKUSDT';
export const ALL_SYMBOLS = [...SYMBOLS, BLOCKED_SYMBOL];

/** A call to the Binance double's own control endpoints (`/double/v1/…`). */
export type DoubleCall = (method: 'GET' | 'POST', path: string, body?: unknown) => Promise<unknown>;

/** The servers of the run, and the environment its workers, intake and CLI calls share. */
export interface ChaosServers {
  redisUrl: string;
  temporalAddress: string;
  redisServer: ManagedProcess;
  temporalServer: ManagedProcess;
  env: Record<string, string>;
  keys: RedisKeys;
  /** The double's URL and control; undefined on the paper exchange. */
  double?: { url: string; call: DoubleCall };
}

/** Starts Redis, the Temporal dev server and, when the run trades on it, the Binance double. */
export async function startServers(
  group: ProcessGroup,
  runDir: string,
  exchange: 'binance-double' | 'paper',
): Promise<ChaosServers> {
  const [redisPort, temporalPort, doublePort] = await Promise.all([freePort(), freePort(), freePort()]);
  const redisUrl = `redis://127.0.0.1:${redisPort}/0`;
  const temporalAddress = `127.0.0.1:${temporalPort}`;

  const redisServer = await group.start({
    name: 'redis',
    command: redisServerPath(),
    args: [
      ...['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--dir', runDir],
      // Every acknowledged write is on disk before the answer: a SIGKILL loses nothing acknowledged.
      ...['--appendonly', 'yes', '--appendfsync', 'always', '--notify-keyspace-events', 'Kgh'],
    ],
    ready: () => redisReachable(redisUrl, 500),
    readyTimeoutMs: 20_000,
  });
  const devServer = devTemporalServerCommand({
    port: temporalPort,
    dbFilename: join(runDir, 'temporal.db'),
    namespace: 'default',
  });
  const temporalServer = await group.start({
    name: 'temporal',
    command: devServer.command,
    args: devServer.args,
    ready: async () => {
      const connection = await Connection.connect({ address: temporalAddress, connectTimeout: 1_000 });
      await connection.close();
      return true;
    },
    readyTimeoutMs: 60_000,
  });

  const keyPrefix = 'chaos';
  const keys = redisKeys(keyPrefix);
  const servers = { redisUrl, temporalAddress, redisServer, temporalServer, keys };
  const env: Record<string, string> = {
    REDIS_URL: redisUrl,
    TEMPORAL_ADDRESS: temporalAddress,
    TEMPORAL_NAMESPACE: 'default',
    TASK_QUEUE: 'permit-chain-chaos',
    KEY_PREFIX: keyPrefix,
    TRADING_MODE: 'testnet',
    PERMIT_TTL_S: String(PERMIT_TTL_S),
    PERMIT_MARGIN_S: String(PERMIT_MARGIN_S),
    GOVERNOR_MAX_QTY: MAX_QTY,
    RECHECK_INTERVAL_S: '5',
    LOG_LEVEL: 'info',
    EXCHANGE: 'paper',
  };
  if (exchange === 'binance-double') {
    const keyDir = join(runDir, 'binance-double');
    await group.start({
      name: 'binance-double',
      command: process.execPath,
      args: [
        ...['--import', 'tsx', join(PROJECT_ROOT, 'scripts', 'binance-double', 'main.ts')],
        ...['--port', String(doublePort), '--symbols', ALL_SYMBOLS.join(','), '--key-dir', keyDir],
      ],
      cwd: PROJECT_ROOT,
      ready: /^binance double on /,
    });
    const url = `http://127.0.0.1:${doublePort}`;
    Object.assign(env, {
      EXCHANGE: 'binance-usdm-testnet',
      BINANCE_BASE_URL: url,
      BINANCE_API_KEY_FILE: join(keyDir, 'api-key'),
      BINANCE_API_SECRET_FILE: join(keyDir, 'api-secret'),
    });
    return { ...servers, env, double: { url, call: doubleCall(url) } };
  }
  return { ...servers, env };
}

function doubleCall(url: string): DoubleCall {
  return async (method, path, body) => {
    const response = await fetch(`${url}/double/v1/${path}`, {
      method,
      ...(body !== undefined ? { body: JSON.stringify(body), headers: { 'Content-Type': 'application/json' } } : {}),
    });
    if (!response.ok) throw new Error(`double ${method} ${path}: HTTP ${response.status} ${await response.text()}`);
    return response.json();
  };
}

/** Every symbol START_AMOUNT long on the exchange and in the ledger. */
export async function seedPositions(servers: ChaosServers, db: Redis): Promise<void> {
  const { keys, double } = servers;
  for (const symbol of ALL_SYMBOLS) {
    if (double) await double.call('POST', `position?symbol=${symbol}&amount=${START_AMOUNT}`);
    else await db.hset(keys.paperPosition(symbol), 'amount', START_AMOUNT);
    await db.hset(keys.position(symbol), 'ledger_amount', START_AMOUNT);
  }
}

/** Two workers and one intake, on the servers' environment. */
export async function startChainProcesses(
  group: ProcessGroup,
  env: Record<string, string>,
): Promise<{ workers: ManagedProcess[]; intake: ManagedProcess }> {
  const workers = await Promise.all([
    group.start(workerSpec('worker-a', env)),
    group.start(workerSpec('worker-b', env)),
  ]);
  const intake = await group.start(intakeSpec('intake', env, { claimIdle: '10s' }));
  return { workers, intake };
}
