import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { DefaultLogger, Runtime, type NativeConnection } from '@temporalio/worker';
import { exchangeFor } from '../activities/exchange';
import { connectTemporal } from '../client/plans';
import type { Output } from '../cli/output';
import { redisKeys } from '../contract/keys';
import type { ChainConfig } from '../lib/config';
import { connectRedis } from '../lib/connections';
import { PositionWatcher } from '../workers/position-watcher';
import { connectWorkerTemporal, createChainWorker } from '../workers/worker';
import { bursts } from './bench-burst';
import { parked } from './bench-parked';
import { mib, type BenchReport, type Measured } from './bench-report';
import { endOpen, removeKeys, type Bench, type BenchOptions } from './bench-runner';
import { sideBySide } from './bench-side-by-side';
import { sustained } from './bench-sustained';
import { withWorkerProcess } from './bench-worker-process';

/** The bench's workflows (the chain's and its floors), which its in-process worker bundles at start. */
const BENCH_WORKFLOWS_PATH = join(__dirname, 'bench-workflows.ts');

const isLoopback = (host: string) => /^(127\.\d+\.\d+\.\d+|localhost|::1|\[::1\])$/.test(host);

/**
 * The servers of the configuration that are not on this machine's loopback. The bench runs only where they all
 * are: it starts thousands of plans and measures the server's process, which is not for a shared cluster.
 */
export function remoteServers(config: Pick<ChainConfig, 'redisUrl' | 'temporalAddress'>): string[] {
  const remote: string[] = [];
  if (!isLoopback(new URL(config.redisUrl).hostname)) remote.push(`REDIS_URL ${config.redisUrl}`);
  if (!isLoopback(config.temporalAddress.split(':')[0] ?? ''))
    remote.push(`TEMPORAL_ADDRESS ${config.temporalAddress}`);
  return remote;
}

/**
 * The benchmark, against the reachable Redis and Temporal server, with a worker of its own (testnet: the Governor
 * approves by itself) on its own task queue and key prefix so that it touches nothing else; its plans are ended and
 * its keys removed when it is done. Modes: side by side (default), `duration`, `burst`, `parked`.
 */
export async function runBench(base: ChainConfig, out: Output, options: BenchOptions): Promise<BenchReport> {
  const remote = remoteServers(base);
  if (remote.length > 0) throw new Error(`bench: runs on loopback servers only, not ${remote.join(' or ')}`);
  Runtime.install({ logger: new DefaultLogger('WARN') });
  const run = randomBytes(3).toString('hex');
  const config: ChainConfig = {
    ...base,
    tradingMode: 'testnet',
    taskQueue: `permit-chain-bench-${run}`,
    keyPrefix: `bench-${run}`,
  };
  const redis = await connectRedis(config);
  try {
    const client = await connectTemporal(config);
    try {
      const connection = await connectWorkerTemporal(config);
      try {
        const keys = redisKeys(config.keyPrefix);
        const b: Bench = { run, config, keys, redis, client, out, open: new Map(), plans: [], baseline: new Map() };
        return await measure(b, connection, options);
      } finally {
        await connection.close();
      }
    } finally {
      await client.connection.close();
    }
  } finally {
    redis.disconnect();
  }
}

/** Runs the mode with the bench's worker, prints its figures, and leaves nothing behind: plans ended, keys gone. */
async function measure(b: Bench, connection: NativeConnection, options: BenchOptions): Promise<BenchReport> {
  const { config, out } = b;
  let peakRss = process.memoryUsage().rss;
  // Not while plans are parked: there the bench's own CPU is the figure.
  const sampler =
    options.parked === undefined
      ? setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 100)
      : undefined;
  try {
    out.line(
      `bench: run ${b.run} on Temporal ${config.temporalAddress} and Redis ${config.redisUrl}; its own worker ` +
        `(testnet${options.parked !== undefined ? ', a process of its own' : ''}) on task queue ${config.taskQueue}, ` +
        `keys ${config.keyPrefix}:* (removed when done)`,
    );
    if (options.parked !== undefined) {
      const { parked: count } = options;
      const { text, report } = await withWorkerProcess(b, (worker) =>
        parked(b, options, count, options.symbols ?? 20, worker),
      );
      out.result(text.join('\n'), report);
      return report;
    }
    const worker = await createChainWorker({
      config,
      redis: b.redis,
      connection,
      approverKeys: new Map(),
      workflowsPath: BENCH_WORKFLOWS_PATH,
      extraActivities: { benchNoop: () => Promise.resolve() },
    });
    // As in every worker process: blocked plans rest until their positions change.
    const watcher = new PositionWatcher({
      subscriber: await connectRedis(config),
      redis: b.redis,
      client: b.client,
      config,
      exchange: exchangeFor(config, b.redis),
      log: (line) => out.line(line),
    });
    await watcher.start();
    const { text, report } = await worker
      .runUntil(async (): Promise<Measured> => {
        if (options.duration !== undefined) return sustained(b, options, options.duration, options.symbols ?? 10);
        if (options.burst !== undefined) return bursts(b, options.burst);
        return sideBySide(b, options, options.symbols ?? 10);
      })
      .finally(() => watcher.stop());
    if (sampler) {
      report.peak_rss_mib = mib(peakRss);
      const at = text.indexOf('targets');
      text.splice(at < 0 ? text.length : at, 0, `peak RSS        ${mib(peakRss)} MiB (the bench's client and worker)`);
    }
    out.result(text.join('\n'), report);
    return report;
  } finally {
    clearInterval(sampler);
    await endOpen(b, { cancelFirst: false, waitMs: 0 }).catch(() => undefined);
    await removeKeys(b.redis, `${config.keyPrefix}:*`).catch((err: unknown) => {
      process.stderr.write(`bench: keys ${config.keyPrefix}:* not removed: ${String(err)}\n`);
    });
  }
}
