import { randomBytes } from 'node:crypto';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import type { Redis } from 'ioredis';
import { connectTemporal, startPlan } from '../lib/chain-client';
import type { ChainConfig } from '../lib/config';
import { closeOnFailure, connectRedis } from '../lib/connections';
import { redisKeys } from '../lib/keys';
import { parsePlan } from '../lib/plan';
import { connectWorkerTemporal, createChainWorker } from '../workers/worker';
import type { Output } from './output';

export interface BenchOptions {
  plans: number;
  concurrency: number;
  symbols: number;
}

export interface BenchResult {
  plans: number;
  concurrency: number;
  symbols: number;
  executed: number;
  wall_ms: number;
  plans_per_s: number;
  latency_ms: { p50: number; p95: number; p99: number; max: number };
  peak_rss_mib: number;
}

/** The bench's own keys go when it is done: it leaves the shared Redis as it found it. */
async function removeKeys(redis: Redis, pattern: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, found] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    if (found.length > 0) await redis.del(...found);
    cursor = next;
  } while (cursor !== '0');
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? 0;
}

/**
 * The load benchmark: runs `plans` plans through the whole chain (Governor, Apply, P3.3, Execute) against the
 * reachable Redis and Temporal server, `concurrency` at a time, with its own worker on its own task queue and key
 * prefix so that it touches nothing else. Latency is from the workflow start to its result.
 */
export async function runBench(base: ChainConfig, out: Output, options: BenchOptions): Promise<BenchResult> {
  Runtime.install({ logger: new DefaultLogger('WARN') });
  const run = randomBytes(3).toString('hex');
  const config: ChainConfig = { ...base, taskQueue: `permit-chain-bench-${run}`, keyPrefix: `bench-${run}` };
  const keys = redisKeys(config.keyPrefix);
  const redis = await connectRedis(config);
  const client = await connectTemporal(config).catch(closeOnFailure(redis));
  const connection = await connectWorkerTemporal(config).catch(closeOnFailure(redis, client.connection));
  let peakRss = process.memoryUsage().rss;
  const sampler = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 100);
  try {
    const symbols = Array.from({ length: options.symbols }, (_, i) => `BENCH${i}USDT`);
    for (const symbol of symbols) {
      await redis.hset(keys.paperPosition(symbol), 'amount', '0');
      await redis.hset(keys.position(symbol), 'ledger_amount', '0');
    }
    const worker = await createChainWorker({ config, redis, connection });
    out.line(`bench: ${options.plans} plans, ${options.concurrency} at a time, ${options.symbols} symbols`);
    const latencies: number[] = [];
    let executed = 0;
    const started = Date.now();
    await worker.runUntil(async () => {
      let next = 0;
      const lane = async () => {
        while (next < options.plans) {
          const i = next++;
          const plan = parsePlan({
            action: 'EXECUTE',
            symbol: symbols[i % symbols.length],
            side: 'BUY',
            qty: '0.001',
            reduce_only: false,
            source: 'bench',
            created_at: Date.now(),
            bench: `${run}-${i}`,
          });
          const t0 = performance.now();
          const { handle } = await startPlan(client, config, plan);
          const status = await handle.result();
          latencies.push(performance.now() - t0);
          if (status.outcome === 'executed') executed += 1;
        }
      };
      await Promise.all(Array.from({ length: options.concurrency }, lane));
    });
    const wallMs = Date.now() - started;
    latencies.sort((a, b) => a - b);
    const round = (n: number) => Math.round(n * 10) / 10;
    const result: BenchResult = {
      plans: options.plans,
      concurrency: options.concurrency,
      symbols: options.symbols,
      executed,
      wall_ms: wallMs,
      plans_per_s: round((options.plans / wallMs) * 1000),
      latency_ms: {
        p50: round(percentile(latencies, 50)),
        p95: round(percentile(latencies, 95)),
        p99: round(percentile(latencies, 99)),
        max: round(latencies[latencies.length - 1] ?? 0),
      },
      peak_rss_mib: Math.round(peakRss / 1024 / 1024),
    };
    out.result(
      `bench: ${executed}/${options.plans} executed in ${wallMs} ms (${result.plans_per_s} plans/s); chain latency ` +
        `p50 ${result.latency_ms.p50} ms, p95 ${result.latency_ms.p95} ms, p99 ${result.latency_ms.p99} ms, ` +
        `max ${result.latency_ms.max} ms; peak RSS ${result.peak_rss_mib} MiB (client + worker)`,
      result,
    );
    return result;
  } finally {
    clearInterval(sampler);
    await removeKeys(redis, `${config.keyPrefix}:*`);
    await connection.close();
    await client.connection.close();
    redis.disconnect();
  }
}
