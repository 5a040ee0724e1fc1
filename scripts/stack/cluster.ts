/**
 * A real Temporal cluster (the server binary on PostgreSQL) for one test run, through the project's own
 * `scripts/cluster.sh`: its own data directory and free ports, so it keeps clear of a cluster a person runs on the
 * default ports. `setup` and `start` on the way in, `stop` on the way out; the binaries come from
 * `scripts/cluster.sh build` (run by `npm run test:cluster` before vitest).
 */
import { spawn } from 'node:child_process';
import { chmodSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createServer } from 'node:net';
import { PROJECT_ROOT, freePort } from '../../cli/servers';

export const CLUSTER_SCRIPT = join(PROJECT_ROOT, 'scripts', 'cluster.sh');

export interface RunningCluster {
  /** host:port of the frontend, for TEMPORAL_ADDRESS. */
  address: string;
  /** The environment `scripts/cluster.sh` was run with (its ports and data directory). */
  env: Record<string, string>;
  dir: string;
  /** The Temporal server's pid (from the script's pid file), for a test that means to kill it. */
  serverPid(): number;
  /** How long `setup` (PostgreSQL, databases, schemas) and `start` (to SERVING, namespace) took. */
  timings: { setupMs: number; startMs: number };
  /** `scripts/cluster.sh ui`: starts the Web UI server for this cluster; resolves to its base URL. */
  startUi(): Promise<string>;
  /** `scripts/cluster.sh stop`: the Web UI server, the Temporal server and PostgreSQL. Never throws. */
  stop(): Promise<void>;
}

/** Runs `scripts/cluster.sh <command>` with `env`; its output goes to `log` as it comes. Fails on a non-zero exit. */
export function clusterScript(command: string, env: Record<string, string>, log: (text: string) => void) {
  return new Promise<void>((resolve, reject) => {
    const child = spawn('bash', [CLUSTER_SCRIPT, command], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    const keep = (chunk: Buffer) => {
      output += chunk.toString();
      log(chunk.toString());
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    child.once('error', reject);
    child.once('exit', (code) =>
      code === 0 ? resolve() : reject(new Error(`scripts/cluster.sh ${command} exited ${code}:\n${output}`)),
    );
  });
}

/**
 * Sets up and starts a cluster in `dir` (created by the caller; PostgreSQL's data goes to `dir/pg`, so the
 * directory is opened to the `postgres` user, who runs PostgreSQL when the tests run as root). `dynamicConfigExtra`:
 * a YAML file of dynamic config keys the server gets beside deploy/temporal/dynamicconfig.yaml's.
 */
export async function startCluster(
  dir: string,
  log: (text: string) => void,
  options: { dynamicConfigExtra?: string } = {},
): Promise<RunningCluster> {
  chmodSync(dir, 0o755);
  // Every port the script would derive from the frontend's is chosen free here, so nothing can collide. The
  // membership ports must be at most 32767 (PostgreSQL keeps them as a smallint), below Linux's ephemeral range.
  const [frontend, history, matching, worker, http, pg, metrics, ui] = await Promise.all(
    Array.from({ length: 8 }, () => freePort().then(String)),
  );
  const [fm, hm, mm, wm] = await freeLowPorts(4);
  const env: Record<string, string> = {
    PERMIT_CHAIN_CLUSTER_DIR: dir,
    CLUSTER_PG_PORT: pg ?? '',
    CLUSTER_FRONTEND_PORT: frontend ?? '',
    CLUSTER_HISTORY_PORT: history ?? '',
    CLUSTER_MATCHING_PORT: matching ?? '',
    CLUSTER_WORKER_PORT: worker ?? '',
    CLUSTER_FRONTEND_HTTP_PORT: http ?? '',
    CLUSTER_FRONTEND_MEMBERSHIP_PORT: fm ?? '',
    CLUSTER_HISTORY_MEMBERSHIP_PORT: hm ?? '',
    CLUSTER_MATCHING_MEMBERSHIP_PORT: mm ?? '',
    CLUSTER_WORKER_MEMBERSHIP_PORT: wm ?? '',
    CLUSTER_METRICS_PORT: metrics ?? '',
    CLUSTER_UI_PORT: ui ?? '',
    ...(options.dynamicConfigExtra ? { CLUSTER_DYNAMIC_CONFIG_EXTRA: options.dynamicConfigExtra } : {}),
  };
  let t0 = Date.now();
  const stop = () =>
    clusterScript('stop', env, log).catch((err: unknown) => log(`cluster stop failed: ${String(err)}`));
  try {
    await clusterScript('setup', env, log);
    const setupMs = Date.now() - t0;
    t0 = Date.now();
    await clusterScript('start', env, log);
    const startMs = Date.now() - t0;
    return {
      address: `127.0.0.1:${frontend}`,
      env,
      dir,
      serverPid: () => Number(readFileSync(join(dir, 'temporal.pid'), 'utf8').trim()),
      timings: { setupMs, startMs },
      startUi: async () => {
        await clusterScript('ui', env, log);
        return `http://127.0.0.1:${ui}`;
      },
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** True when a TCP port can be bound on loopback right now. */
function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/** `n` distinct free ports between 20000 and 32767, tried at random. */
async function freeLowPorts(n: number): Promise<string[]> {
  const found = new Set<number>();
  for (let tries = 0; found.size < n && tries < 1000; tries++) {
    const port = 20_000 + Math.floor(Math.random() * 12_768);
    if (!found.has(port) && (await portFree(port))) found.add(port);
  }
  if (found.size < n) throw new Error('no free ports between 20000 and 32767');
  return [...found].map(String);
}
