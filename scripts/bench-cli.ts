import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { redisKeys } from '../contract/keys';
import { PROJECT_ROOT, freePort, startDevTemporalServer, startRedis, temporalCliExecutable } from '../cli/servers';

/**
 * `npm run bench-cli [-- --runs N]`: how long an operator waits for `permit-chain`, run as the README says
 * (bin/permit-chain: the pinned Node on the compiled CLI), beside the Temporal CLI asking the same server the same
 * thing, in the same run. It starts a stack of its own on loopback (Redis, the Temporal dev server, a worker
 * process), executes one plan, then runs each command N times (10 by default) round-robin, after one unmeasured
 * warm-up each, and prints each median beside its target and the Temporal CLI's. Floors: Node doing nothing, Node
 * loading the Temporal client, and the client alone connecting and making the one call (query, list), with V8's
 * compile cache as the CLI has it. A tool, not a test: the machine's load moves the figures (docs/benchmark.md).
 */

const LAUNCHER = join(PROJECT_ROOT, 'bin', 'permit-chain');
const NODE = join(PROJECT_ROOT, '.tools', 'node', 'bin', 'node');
const PLAN_ID = 'c11be0c4c11be0c4';
/** A plan that stays running (blocked: its positions disagree): `status` asks it its `status` query. */
const RUNNING_PLAN_ID = 'b10c4edb10c4edb1';

interface Measured {
  name: string;
  command: string[];
  target?: number;
  /** The Temporal CLI's figure this one is compared with. */
  versus?: string;
  times: number[];
}

function runsArg(argv: string[]): number {
  const at = argv.indexOf('--runs');
  if (at === -1) return 10;
  const runs = Number(argv[at + 1]);
  if (!Number.isInteger(runs) || runs < 1 || runs > 1000)
    throw new Error('--runs must be a whole number from 1 to 1000');
  return runs;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

/** One run's wall time in ms; a failed run stops the bench, naming the command and what it printed. */
function timed(command: string[], env: NodeJS.ProcessEnv): number {
  const started = performance.now();
  const run = spawnSync(command[0] as string, command.slice(1), { env, cwd: PROJECT_ROOT, encoding: 'utf8' });
  const ms = performance.now() - started;
  if (run.status !== 0) {
    const said = `${run.stderr}${run.stdout}`.slice(0, 500);
    throw new Error(`${command.join(' ')} exited ${run.status ?? run.signal}: ${said}`);
  }
  return ms;
}

async function main(): Promise<void> {
  const runs = runsArg(process.argv.slice(2));
  const temporal = temporalCliExecutable();
  if (temporal.type !== 'existing-path') throw new Error('no Temporal CLI in .tools/: run bash scripts/setup.sh');
  const dataDir = mkdtempSync(join(tmpdir(), 'permit-chain-bench-cli-'));
  const redisServer = await startRedis({ port: await freePort() });
  const server = await startDevTemporalServer({
    port: await freePort(),
    uiPort: await freePort(),
    dbFilename: join(dataDir, 'temporal.db'),
    namespace: 'default',
  });
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    REDIS_URL: redisServer.url,
    TEMPORAL_ADDRESS: server.address,
    TRADING_MODE: 'testnet',
    KEY_PREFIX: 'quantum',
    TASK_QUEUE: 'permit-chain-bench-cli',
    LOG_LEVEL: 'warn',
  };
  const worker = spawn(LAUNCHER, ['worker'], { env, stdio: ['ignore', 'pipe', 'inherit'] });
  const redis = new Redis(redisServer.url);
  try {
    let started = '';
    worker.stdout.on('data', (chunk: Buffer) => (started += chunk.toString()));
    const keys = redisKeys('quantum');
    await redis.hset(keys.position('BTCUSDT'), 'ledger_amount', '0.062');
    await redis.hset(keys.paperPosition('BTCUSDT'), 'amount', '0.062');
    // The ended plan `status` reads: executed, its result read from its history (no worker asked).
    const submit = ['submit', '--symbol', 'BTCUSDT', '--side', 'SELL', '--qty', '0.062', '--plan-id', PLAN_ID];
    timed([LAUNCHER, ...submit, '--wait'], env);
    await redis.hset(keys.position('ETHUSDT'), 'ledger_amount', '1');
    await redis.hset(keys.paperPosition('ETHUSDT'), 'amount', '2');
    const blocked = ['submit', '--symbol', 'ETHUSDT', '--side', 'SELL', '--qty', '1', '--plan-id', RUNNING_PLAN_ID];
    timed([LAUNCHER, ...blocked], env);
    if (worker.exitCode !== null) throw new Error(`the worker exited (${worker.exitCode}): ${started.slice(0, 500)}`);

    const address = ['--address', server.address];
    // What any CLI on the Temporal TypeScript SDK pays: the client loaded, connected, and the one call made.
    const sdk = (call: string) =>
      "const { Connection, Client } = require('@temporalio/client'); (async () => { " +
      'const connection = await Connection.connect({ address: process.env.TEMPORAL_ADDRESS }); ' +
      `const client = new Client({ connection }); ${call}; await connection.close(); })();`;
    const floors: Measured[] = [
      { name: 'node -e 0 (floor: Node alone)', command: [NODE, '-e', '0'], times: [] },
      {
        name: 'node -e "require(\'@temporalio/client\')" (floor: the client loaded)',
        command: [NODE, '-e', "require('@temporalio/client')"],
        times: [],
      },
      {
        name: 'node -e "…" (floor: the SDK alone connects and queries status)',
        command: [NODE, '-e', sdk(`await client.workflow.getHandle('plan-${PLAN_ID}').query('status')`)],
        times: [],
      },
      {
        name: 'node -e "…" (floor: the SDK alone connects and lists)',
        command: [NODE, '-e', sdk('for await (const _ of client.workflow.list()) void _')],
        times: [],
      },
    ];
    const theirs: Measured[] = [
      { name: 'temporal --version', command: [temporal.path, '--version'], times: [] },
      {
        name: 'temporal workflow describe -w plan-ID',
        command: [temporal.path, 'workflow', 'describe', '-w', `plan-${PLAN_ID}`, ...address],
        times: [],
      },
      {
        name: 'temporal workflow query -w plan-ID --name status',
        command: [temporal.path, 'workflow', 'query', '-w', `plan-${PLAN_ID}`, '--name', 'status', ...address],
        times: [],
      },
      { name: 'temporal workflow list', command: [temporal.path, 'workflow', 'list', ...address], times: [] },
    ];
    const ours: Measured[] = [
      { name: 'permit-chain --version', command: [LAUNCHER, '--version'], target: 150, times: [] },
      {
        name: 'permit-chain status PLAN_ID (ended: its result)',
        command: [LAUNCHER, 'status', PLAN_ID],
        target: 400,
        versus: 'temporal workflow describe -w plan-ID',
        times: [],
      },
      {
        name: 'permit-chain status RUNNING_ID (running: its query)',
        command: [LAUNCHER, 'status', RUNNING_PLAN_ID],
        target: 400,
        versus: 'temporal workflow describe -w plan-ID',
        times: [],
      },
      {
        name: 'permit-chain list',
        command: [LAUNCHER, 'list'],
        target: 500,
        versus: 'temporal workflow list',
        times: [],
      },
    ];
    // The floors with V8's compile cache, as bin/permit-chain runs: the same cost of compiling the modules, none.
    const floorEnv = { ...env, NODE_COMPILE_CACHE: join(dataDir, 'compile-cache') };
    const envOf = (m: Measured) => (floors.includes(m) ? floorEnv : env);
    const all = [...ours, ...theirs, ...floors];
    for (const m of all) timed(m.command, envOf(m));
    for (let i = 0; i < runs; i += 1) for (const m of all) m.times.push(timed(m.command, envOf(m)));

    const describe = (m: Measured) => {
      const versus = theirs.find((t) => t.name === m.versus);
      const ratio = versus ? `, ${(median(m.times) / median(versus.times)).toFixed(1)}× ${versus.name}` : '';
      const target =
        m.target !== undefined ? ` (target ≤ ${m.target} ms: ${median(m.times) <= m.target ? 'PASS' : 'FAIL'})` : '';
      const spread = `min ${Math.round(Math.min(...m.times))}, max ${Math.round(Math.max(...m.times))}`;
      return `  ${m.name.padEnd(72)} ${String(Math.round(median(m.times))).padStart(5)} ms  (${spread})${target}${ratio}`;
    };
    const load = spawnSync('cat', ['/proc/loadavg'], { encoding: 'utf8' }).stdout.split(' ').slice(0, 3).join(' ');
    console.log(`bench-cli: median of ${runs} runs each, round-robin after a warm-up; load average ${load}`);
    console.log('permit-chain (bin/permit-chain: the pinned Node on dist/)');
    for (const m of ours) console.log(describe(m));
    console.log(`the Temporal CLI (${temporal.path.replace(`${PROJECT_ROOT}/`, '')}), on the same server`);
    for (const m of theirs) console.log(describe(m));
    console.log('floors');
    for (const m of floors) console.log(describe(m));
  } finally {
    redis.disconnect();
    worker.kill('SIGTERM');
    await new Promise((done) => (worker.exitCode !== null ? done(undefined) : worker.once('exit', done)));
    await server.stop();
    await redisServer.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(`bench-cli: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
