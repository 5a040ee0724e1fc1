/**
 * Worker start → RUNNING, the two ways a worker can start, side by side in one run on one pair of servers:
 *   sources   node cli/permit-chain.cjs worker   tsx compiles the TypeScript, webpack bundles workflows/ at start
 *   compiled  node dist/cli/cli.js worker       the JavaScript and the workflow bundle of `npm run build`
 * Each run is a new process, timed from its spawn to the SDK's `Worker state changed … RUNNING` line, with its CPU
 * time and resident memory at that moment; the two kinds alternate, so that whatever else the machine does falls on
 * both. Starts its own Redis and Temporal dev server; needs a fresh `npm run build` (the compiled worker refuses a
 * stale one).
 *
 *   npm run measure-start [-- --runs 7]
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { sampleProcess, type ProcessSample } from './bench-proc';
import { PROJECT_ROOT, ensureServersInstalled, freePort, startRedis, startTemporalDevServer } from '../cli/servers';

const KINDS = {
  sources: [join(PROJECT_ROOT, 'cli', 'permit-chain.cjs'), 'worker'],
  compiled: [join(PROJECT_ROOT, 'dist', 'cli', 'cli.js'), 'worker'],
} as const;
type Kind = keyof typeof KINDS;

interface Start {
  kind: Kind;
  ms: number;
  sample: ProcessSample | undefined;
}

/** One worker process from spawn to RUNNING; then SIGTERM, and its exit awaited. */
async function startOnce(kind: Kind, env: Record<string, string>): Promise<Start> {
  const started = performance.now();
  const child = spawn(process.execPath, [...KINDS[kind]], {
    env: { ...process.env, ...env, TASK_QUEUE: `measure-${randomBytes(4).toString('hex')}` },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const exited = new Promise<number | null>((done) => child.once('exit', (code) => done(code)));
  const running = await new Promise<Start>((done, fail) => {
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      if (/state: 'RUNNING'/.test(output)) {
        const ms = performance.now() - started;
        done({ kind, ms, sample: child.pid ? sampleProcess(child.pid) : undefined });
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    void exited.then((code) => fail(new Error(`the ${kind} worker exited (${code}) before RUNNING:\n${output}`)));
  });
  child.kill('SIGTERM');
  await exited;
  return running;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? (sorted[mid] ?? NaN) : ((sorted[mid - 1] ?? NaN) + (sorted[mid] ?? NaN)) / 2;
}

async function main(argv: string[]): Promise<void> {
  const at = argv.indexOf('--runs');
  const runs = at === -1 ? 5 : Number(argv[at + 1]);
  if (!Number.isInteger(runs) || runs < 1) throw new Error('--runs needs a whole number of at least 1');
  Runtime.install({ logger: new DefaultLogger('WARN') });
  ensureServersInstalled({ forTests: false });
  const redis = await startRedis({ port: await freePort() });
  const temporal = await startTemporalDevServer({});
  try {
    const env = { REDIS_URL: redis.url, TEMPORAL_ADDRESS: temporal.address, TRADING_MODE: 'testnet' };
    console.log(
      `measure-start: Node ${process.version}, ${runs} runs of each, alternating; the first of each warms up`,
    );
    // Not counted: the first start of each kind fills the OS's file cache.
    for (const kind of ['sources', 'compiled'] as const) await startOnce(kind, env);
    const starts: Start[] = [];
    for (let i = 0; i < runs; i++) {
      for (const kind of i % 2 ? (['compiled', 'sources'] as const) : (['sources', 'compiled'] as const)) {
        const start = await startOnce(kind, env);
        starts.push(start);
        const cpu = start.sample ? `${start.sample.cpuMs.toFixed(0)} ms CPU` : '';
        const rss = start.sample ? `${(start.sample.rssBytes / 2 ** 20).toFixed(0)} MiB RSS` : '';
        console.log(
          `  run ${i + 1} ${kind.padEnd(8)} ${start.ms.toFixed(0).padStart(5)} ms to RUNNING  ${cpu}  ${rss}`,
        );
      }
    }
    const summary = (kind: Kind) => {
      const mine = starts.filter((s) => s.kind === kind);
      const ms = mine.map((s) => s.ms);
      return {
        median: median(ms),
        min: Math.min(...ms),
        max: Math.max(...ms),
        cpu: median(mine.map((s) => s.sample?.cpuMs ?? NaN)),
        rss: median(mine.map((s) => (s.sample?.rssBytes ?? NaN) / 2 ** 20)),
      };
    };
    const before = summary('sources');
    const after = summary('compiled');
    for (const [kind, s] of [
      ['sources', before],
      ['compiled', after],
    ] as const) {
      console.log(
        `${kind.padEnd(8)} median ${s.median.toFixed(0)} ms (${s.min.toFixed(0)}–${s.max.toFixed(0)}), ` +
          `CPU ${s.cpu.toFixed(0)} ms, RSS ${s.rss.toFixed(0)} MiB at RUNNING`,
      );
    }
    console.log(
      `ratio sources/compiled: ${(before.median / after.median).toFixed(2)}× the time, ` +
        `${(before.cpu / after.cpu).toFixed(2)}× the CPU, ${(before.rss / after.rss).toFixed(2)}× the memory`,
    );
  } finally {
    await temporal.teardown();
    await redis.stop();
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  console.error(`measure-start: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
