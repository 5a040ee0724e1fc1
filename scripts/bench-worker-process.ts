import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { prebuiltWorkflowCode } from '../workers/workflow-code';
import type { Bench } from './bench-runner';
import { CLI } from './stack/cli-runner';
import { workerSpec } from './stack/chain';
import { ProcessGroup, type ManagedProcess } from './stack/processes';

/**
 * `--parked` measures a worker at rest: `permit-chain worker` in a process of its own, as deployed (with its position
 * watcher), on the bench's task queue and keys, so that its CPU and memory are the worker's alone, not the bench's
 * client's, which started the plans. Stopped (SIGTERM, as a supervisor would) when the mode is done.
 */
export async function withWorkerProcess<T>(b: Bench, mode: (worker: ManagedProcess) => Promise<T>): Promise<T> {
  const logDir = mkdtempSync(join(tmpdir(), 'permit-chain-bench-'));
  const group = new ProcessGroup(logDir);
  const { config } = b;
  const { cli, how } = workerCli();
  b.out.line(`bench: the worker process runs ${how}`);
  try {
    const env = {
      REDIS_URL: config.redisUrl,
      TEMPORAL_ADDRESS: config.temporalAddress,
      TEMPORAL_NAMESPACE: config.temporalNamespace,
      TASK_QUEUE: config.taskQueue,
      KEY_PREFIX: config.keyPrefix,
      TRADING_MODE: 'testnet',
      RECHECK_INTERVAL_S: String(config.recheckIntervalS),
      WORKFLOW_CACHE_SIZE: String(config.workflowCacheSize),
      METRICS_PORT: '0',
    };
    const worker = await group.start(workerSpec('bench-worker', env, cli));
    return await mode(worker);
  } finally {
    await group.stopAll();
    rmSync(logDir, { recursive: true, force: true });
  }
}

/**
 * The CLI the worker process runs: compiled (the JavaScript and the prebuilt workflow bundle, as deployed) when
 * `npm run build` made a dist/ from these sources; else the sources, whose worker also holds
 * tsx's and webpack's memory from its start (docs/benchmark.md, worker start).
 */
function workerCli(): { cli: string; how: string } {
  const root = resolve(__dirname, '..');
  const dist = join(root, 'dist');
  try {
    prebuiltWorkflowCode(dist, root);
    return { cli: join(dist, 'cli', 'cli.js'), how: 'compiled, from dist/ (npm run build)' };
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    return { cli: CLI, how: `from the sources, with webpack at its start (${why})` };
  }
}
