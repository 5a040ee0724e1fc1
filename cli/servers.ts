import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Connection } from '@temporalio/client';
import { TypedSearchAttributes } from '@temporalio/common';
import { TestWorkflowEnvironment, type EphemeralServerExecutable } from '@temporalio/testing';
import { Redis } from 'ioredis';
import { CHAIN_SEARCH_ATTRIBUTES } from '../contract/messages';
import { BINANCE_DOUBLE_MAIN, PROJECT_ROOT } from './checkout';

export { PROJECT_ROOT } from './checkout';
export const TOOLS_DIR = join(PROJECT_ROOT, '.tools');
/** Where `dev` keeps its state; `PERMIT_CHAIN_DATA_DIR` moves it (tests use a temporary folder). */
export const DATA_DIR = process.env.PERMIT_CHAIN_DATA_DIR || join(PROJECT_ROOT, '.data');

const SETUP_HINT = 'run `bash scripts/setup.sh`';

/**
 * Runs `scripts/setup.sh` (the one setup that `.ci/run` uses too) when the servers it provides are missing, so that
 * `dev` and the tests work on a fresh clone. Quiet and quick when everything is there.
 */
export function ensureServersInstalled(options: { forTests: boolean }): void {
  const cli = process.env.TEMPORAL_CLI_PATH || join(TOOLS_DIR, 'temporal-cli', 'bin', 'temporal');
  const testServer =
    process.env.TEMPORAL_TEST_SERVER_PATH || join(TOOLS_DIR, 'temporal-test-server', 'bin', 'temporal-test-server');
  const redis = onPath('redis-server') !== undefined;
  const chromium = !options.forTests || existsSync(process.env.CHROMIUM_PATH || '/usr/bin/chromium');
  const openssl = !options.forTests || onPath('openssl') !== undefined;
  const promtool = !options.forTests || onPath('promtool') !== undefined;
  if (existsSync(cli) && existsSync(testServer) && redis && chromium && openssl && promtool) return;
  const args = [join(PROJECT_ROOT, 'scripts', 'setup.sh'), ...(options.forTests ? ['--tests'] : [])];
  const setup = spawnSync('bash', args, { stdio: ['ignore', 'inherit', 'inherit'] });
  if (setup.status !== 0) throw new Error(`scripts/setup.sh failed (exit ${setup.status ?? setup.signal})`);
}

/**
 * The Temporal CLI (dev server and Web UI): `TEMPORAL_CLI_PATH`, else the copy `scripts/setup.sh` installed in
 * `.tools/`, else the SDK's own download (needs the internet).
 */
export function temporalCliExecutable(): EphemeralServerExecutable {
  const path = process.env.TEMPORAL_CLI_PATH || join(TOOLS_DIR, 'temporal-cli', 'bin', 'temporal');
  if (existsSync(path)) return { type: 'existing-path', path };
  if (process.env.TEMPORAL_CLI_PATH) throw new Error(`TEMPORAL_CLI_PATH: no file at ${path}`);
  return { type: 'cached-download', downloadDir: join(TOOLS_DIR, 'sdk-download') };
}

/** The time-skipping test server: `TEMPORAL_TEST_SERVER_PATH`, `.tools/`, else the SDK's own download. */
export function testServerExecutable(): EphemeralServerExecutable {
  const path =
    process.env.TEMPORAL_TEST_SERVER_PATH || join(TOOLS_DIR, 'temporal-test-server', 'bin', 'temporal-test-server');
  if (existsSync(path)) return { type: 'existing-path', path };
  if (process.env.TEMPORAL_TEST_SERVER_PATH) throw new Error(`TEMPORAL_TEST_SERVER_PATH: no file at ${path}`);
  return { type: 'cached-download', downloadDir: join(TOOLS_DIR, 'sdk-download') };
}

export { freePort } from '../lib/ports';

export interface RunningRedis {
  url: string;
  process: ChildProcess;
  stop(): Promise<void>;
}

/** Where a command is on PATH, or undefined. */
function onPath(command: string): string | undefined {
  const found = spawnSync('sh', ['-c', `command -v ${command}`], { encoding: 'utf8' });
  const path = found.stdout.trim();
  return found.status === 0 && path !== '' ? path : undefined;
}

export function redisServerPath(): string {
  const path = onPath('redis-server');
  if (!path) throw new Error(`redis-server not found: ${SETUP_HINT} (it installs Debian's redis-server)`);
  return path;
}

/** True when a Redis answers PING at the URL within the timeout. */
export async function redisReachable(url: string, timeoutMs = 1000): Promise<boolean> {
  const redis = new Redis(url, {
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    connectTimeout: timeoutMs,
    retryStrategy: () => null,
  });
  redis.on('error', () => undefined); // a refused connection is the answer here, not an error to report
  try {
    await redis.connect();
    return (await redis.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    redis.disconnect();
  }
}

/**
 * Starts Debian's redis-server on loopback. With `dir`, it keeps an append-only file there (state survives a
 * restart); without, it keeps nothing on disk (tests).
 */
export async function startRedis(options: {
  port: number;
  dir?: string;
  /** Default `Kgh`: keyspace notifications on hash and generic commands, which the position watcher wakes on. */
  keyspaceEvents?: string;
  /** In a process group of its own, out of reach of a terminal's Ctrl-C: its starter stops it when it is done. */
  ownProcessGroup?: boolean;
  /** More of redis-server's options, e.g. `['--maxmemory-policy', 'allkeys-lru']`. */
  extraArgs?: string[];
}): Promise<RunningRedis> {
  const events = options.keyspaceEvents ?? 'Kgh';
  const args = [
    '--port',
    String(options.port),
    '--bind',
    '127.0.0.1',
    '--save',
    '',
    '--notify-keyspace-events',
    events,
  ];
  if (options.dir) {
    mkdirSync(options.dir, { recursive: true });
    args.push('--dir', options.dir, '--appendonly', 'yes', '--appendfsync', 'everysec');
  } else {
    args.push('--appendonly', 'no');
  }
  args.push(...(options.extraArgs ?? []));
  const child = spawn(redisServerPath(), args, {
    stdio: ['ignore', 'ignore', 'inherit'],
    detached: options.ownProcessGroup === true,
  });
  const url = `redis://127.0.0.1:${options.port}/0`;
  const deadline = Date.now() + 10_000;
  while (!(await redisReachable(url, 500))) {
    if (child.exitCode !== null) throw new Error(`redis-server exited with code ${child.exitCode}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`redis-server did not answer on port ${options.port} within 10 s`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { url, process: child, stop: () => stopChild(child) };
}

export interface RunningDouble {
  url: string;
  apiKey: string;
  apiSecret: string;
  process: ChildProcess;
  stop(): Promise<void>;
}

/**
 * The checkout's Binance double (scripts/binance-double/main.ts, run with tsx from node_modules) in a process of its
 * own group, on a free loopback port, its key and secret written to owner-only files in `keyDir`
 * (checkoutToolsHere says whether it can run here).
 */
export async function startBinanceDoubleProcess(keyDir: string): Promise<RunningDouble> {
  const child = spawn(process.execPath, ['--import', 'tsx', BINANCE_DOUBLE_MAIN, '--port', '0', '--key-dir', keyDir], {
    cwd: PROJECT_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let said = '';
  const url = await new Promise<string>((done, fail) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      fail(new Error(`the Binance double did not start in 30 s: ${said.slice(0, 500)}`));
    }, 30_000);
    const read = (chunk: Buffer) => {
      said += chunk.toString();
      const ready = /^binance double on (\S+) /m.exec(said);
      if (!ready) return;
      clearTimeout(timer);
      done(ready[1] as string);
    };
    child.stdout.on('data', read);
    child.stderr.on('data', read);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      fail(new Error(`the Binance double exited (${code ?? signal}): ${said.slice(0, 500)}`));
    });
  });
  const secret = (name: string) => readFileSync(join(keyDir, name), 'utf8').trim();
  return {
    url,
    apiKey: secret('api-key'),
    apiSecret: secret('api-secret'),
    process: child,
    stop: () => stopChild(child),
  };
}

/** SIGTERM, and the exit awaited; SIGKILL if it has not gone after `graceMs`. */
function stopChild(child: ChildProcess, graceMs = 10_000): Promise<void> {
  return new Promise<void>((done) => {
    if (child.exitCode !== null || child.signalCode !== null) return done();
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', () => {
      clearTimeout(timer);
      done();
    });
    child.kill('SIGTERM');
  });
}

/**
 * Starts the Temporal dev server (from the Temporal CLI) with the chain's search attributes registered. With
 * `dbFilename` its state survives a restart; with `uiPort` it serves the Web UI.
 */
export async function startTemporalDevServer(options: {
  port?: number;
  uiPort?: number;
  dbFilename?: string;
  namespace?: string;
  /** More `--dynamic-config-value NAME=JSON` settings (the tests' short drainage timings). */
  dynamicConfig?: Record<string, string>;
}): Promise<TestWorkflowEnvironment> {
  const dynamic = Object.entries(options.dynamicConfig ?? {}).flatMap(([name, value]) => [
    '--dynamic-config-value',
    `${name}=${value}`,
  ]);
  return TestWorkflowEnvironment.createLocal({
    server: {
      executable: temporalCliExecutable(),
      ip: '127.0.0.1',
      ...(options.port ? { port: options.port } : {}),
      ...(options.uiPort ? { ui: true, uiPort: options.uiPort } : { ui: false }),
      ...(options.dbFilename ? { dbFilename: options.dbFilename } : {}),
      ...(options.namespace ? { namespace: options.namespace } : {}),
      searchAttributes: CHAIN_SEARCH_ATTRIBUTES,
      extraArgs: [...devServerArgs({ file: Boolean(options.dbFilename) }), ...dynamic],
    },
  });
}

/**
 * The dev server's settings for full speed: `--dynamic-config-value` values always, SQLite pragmas for a file
 * database. `PERMIT_CHAIN_DEV_SERVER_THROTTLED=1` leaves the server at its defaults, to measure against.
 */
export function devServerArgs({ file }: { file: boolean }): string[] {
  if (process.env.PERMIT_CHAIN_DEV_SERVER_THROTTLED === '1') return [];
  // Its one history shard loads each new task at 20/s by default: a task waited ~33 ms to start, 2.4 ms with these.
  const rps = ['transferProcessorMaxPollRPS', 'timerProcessorMaxPollRPS', 'visibilityProcessorMaxPollRPS'];
  const args = rps.flatMap((name) => ['--dynamic-config-value', `history.${name}=10000`]);
  // A commit need not wait for fsync (WAL, synchronous=NORMAL): a power cut may lose the last moments, not the file.
  if (file) args.push('--sqlite-pragma', 'journal_mode=WAL', '--sqlite-pragma', 'synchronous=NORMAL');
  return args;
}

/**
 * The command line of the Temporal dev server as `dev` runs it (a database file, the chain's search attributes, full
 * speed, errors only), for whoever starts it as a process of its own: `dev`, and the chaos run, which kills it.
 * Without `uiPort` it serves no Web UI.
 */
export function devTemporalServerCommand(options: {
  port: number;
  uiPort?: number;
  dbFilename: string;
  namespace: string;
}): { command: string; args: string[] } {
  const cli = temporalCliExecutable();
  if (cli.type !== 'existing-path') throw new Error(`no Temporal CLI in ${TOOLS_DIR}: ${SETUP_HINT}`);
  const args = [
    'server',
    'start-dev',
    '--ip',
    '127.0.0.1',
    '--port',
    String(options.port),
    ...(options.uiPort !== undefined ? ['--ui-port', String(options.uiPort)] : ['--headless']),
    '--db-filename',
    options.dbFilename,
    '--namespace',
    options.namespace,
    '--log-format',
    'pretty',
    '--log-level',
    'error',
    // As the SDK's starter sets them (updates carry the operators' decisions).
    ...[
      'enableServerVersionCheck=false',
      'enableUpdateWorkflowExecution=true',
      'enableUpdateWorkflowExecutionAsyncAccepted=true',
    ].flatMap((value) => ['--dynamic-config-value', `frontend.${value}`]),
    ...CHAIN_SEARCH_ATTRIBUTES.flatMap(({ name, type }) => [
      '--search-attribute',
      `${name}=${TypedSearchAttributes.toMetadataType(type)}`,
    ]),
    ...devServerArgs({ file: true }),
  ];
  return { command: cli.path, args };
}

export interface RunningTemporal {
  address: string;
  process: ChildProcess;
  /** SIGTERM and wait: the server finishes what it writes. */
  stop(): Promise<void>;
}

/**
 * The Temporal dev server for `permit-chain dev`, in a process group of its own (the SDK's starter keeps it in ours):
 * a terminal's Ctrl-C then reaches `dev` alone, which stops its worker and intake first and the servers last, so
 * that neither sees its server vanish under it. The same settings as `startTemporalDevServer`; it logs errors only,
 * since a stopping server's own pollers warn about the connections it closes.
 */
export async function startDevTemporalServer(options: {
  port: number;
  uiPort: number;
  dbFilename: string;
  namespace: string;
}): Promise<RunningTemporal> {
  const { command, args } = devTemporalServerCommand(options);
  const address = `127.0.0.1:${options.port}`;
  // Its stdout is a banner only (version, addresses: the ready line says what counts); its log, errors, is stderr.
  const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'inherit'], detached: true });
  const exited = new Promise<never>((_, fail) =>
    child.once('exit', (code) => fail(new Error(`the Temporal dev server exited with code ${code}`))),
  );
  exited.catch(() => undefined);
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      const connection = await Promise.race([Connection.connect({ address, connectTimeout: 1_000 }), exited]);
      await connection.close();
      return { address, process: child, stop: () => stopChild(child) };
    } catch (err) {
      if (child.exitCode !== null || Date.now() > deadline) {
        child.kill('SIGKILL');
        throw child.exitCode !== null
          ? err
          : new Error(`the Temporal dev server did not answer at ${address} within 30 s`);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}
