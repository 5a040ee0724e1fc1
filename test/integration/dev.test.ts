import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort, redisReachable, temporalCliExecutable } from '../../cli/servers';
import type { ChainStatus } from '../../contract/types';
import { CLI, runCli } from '../../scripts/stack/cli-runner';
import { eventually } from '../helpers';

const run = promisify(execFile);

/**
 * Lines `dev` must not print: the SDK's banners at INFO (worker states, Nexus, the bundle), webpack's report of the
 * workflow bundle, and the Temporal CLI's banner.
 */
const NOT_FOR_A_PERSON =
  /webpack|asset workflow-bundle|modules by path|Workflow bundle created|Worker state changed|No Nexus services|"sdkComponent":"(worker|core)"|Temporal CLI \d|Temporal Server:/;

/** A Temporal port whose Web UI port (+1000) is free too. */
async function temporalPorts(): Promise<{ port: number; uiPort: number }> {
  for (;;) {
    const port = await freePort();
    if (port + 1000 > 65535) continue;
    const probe = await import('node:net').then(
      (net) =>
        new Promise<boolean>((done) => {
          const server = net.createServer();
          server.once('error', () => done(false));
          server.listen(port + 1000, '127.0.0.1', () => server.close(() => done(true)));
        }),
    );
    if (probe) return { port, uiPort: port + 1000 };
  }
}

interface DevProcess {
  child: ChildProcess;
  output: () => string;
  waitFor: (pattern: RegExp, timeoutMs?: number) => Promise<RegExpMatchArray>;
  stop: () => Promise<number | null>;
}

/**
 * Starts `permit-chain dev` as from a terminal: in a process group of its own, which `stop` sends SIGINT to as a
 * whole, the way a terminal's Ctrl-C reaches every process of the foreground job (dev and anything it started there).
 */
function startDev(args: string[], env: Record<string, string>): DevProcess {
  const child = spawn(process.execPath, [CLI, 'dev', ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let out = '';
  child.stdout?.on('data', (chunk: Buffer) => (out += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (out += chunk.toString()));
  const exited = new Promise<number | null>((done) => child.once('exit', (code) => done(code)));
  return {
    child,
    output: () => out,
    waitFor: (pattern, timeoutMs = 90_000) =>
      eventually(
        () => Promise.resolve(out.match(pattern) ?? (child.exitCode !== null ? fail(out) : undefined)),
        timeoutMs,
        `${pattern}\n${out}`,
      ),
    stop: async () => {
      if (child.exitCode === null && child.pid !== undefined) process.kill(-child.pid, 'SIGINT');
      return exited;
    },
  };
}

/**
 * Ctrl-C: exit code 0, the intake and the worker stopped before the servers, and not one line of an error or a stack
 * on the way (a server stopped under a running worker or intake makes them report lost connections).
 */
async function expectCleanStop(dev: DevProcess): Promise<void> {
  const before = dev.output().length;
  expect(await dev.stop()).toBe(0);
  const stopping = dev.output().slice(before);
  const bad = stopping
    .split('\n')
    .filter((line) => /error|refused|unavailable|nothing answers|could not|warn|^\s+at /i.test(line))
    // The Temporal dev server's own line when a call is in flight as it stops: about its metrics, not the chain.
    .filter((line) => !line.includes('msg="unable to add metrics baggage to gRPC trailer"'));
  expect(bad).toEqual([]);
  expect(stopping).toContain('dev: worker and intake stopped\n');
  expect(stopping.indexOf('dev: worker and intake stopped')).toBeLessThan(stopping.indexOf('dev: servers stopped'));
}

async function tcpOpen(port: number): Promise<boolean> {
  const net = await import('node:net');
  return new Promise((done) => {
    const socket = net.createConnection({ host: '127.0.0.1', port });
    socket.once('connect', () => (socket.destroy(), done(true)));
    socket.once('error', () => done(false));
  });
}

function fail(out: string): never {
  throw new Error(`permit-chain dev exited early:\n${out}`);
}

const running: DevProcess[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((dev) => dev.stop()));
});

describe('permit-chain dev', () => {
  it('starts the stack, plays the demo, stops cleanly on Ctrl-C (processes before servers), and keeps its state across a restart', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'permit-chain-dev-'));
    const redisPort = await freePort();
    const { port, uiPort } = await temporalPorts();
    const env = {
      REDIS_URL: `redis://127.0.0.1:${redisPort}/0`,
      TEMPORAL_ADDRESS: `127.0.0.1:${port}`,
      PERMIT_CHAIN_DATA_DIR: dataDir,
      TRADING_MODE: '',
    };

    const first = startDev(['--demo'], env);
    running.push(first);
    await first.waitFor(new RegExp(`ready  Web UI http://127\\.0\\.0\\.1:${uiPort}`));
    const [, metricsUrl = ''] = await first.waitFor(/^ready .* Metrics (http:\/\/127\.0\.0\.1:\d+\/metrics) /m);
    const [, planId] = await first.waitFor(/submitted: plan ([0-9a-f]{16})/);
    await first.waitFor(/7\. exchange 0, ledger 0: demo done/);
    // The stack's /metrics, /healthz and /readyz, at the address the ready line printed: the demo's plan counted.
    expect(await (await fetch(metricsUrl)).text()).toContain('permit_chain_plans_ended_total{outcome="executed"} 1');
    const ready = await fetch(new URL('/readyz', metricsUrl));
    expect(`${ready.status} ${await ready.text()}`).toMatch(/^200 ready\n/);
    expect(first.output()).toContain('P3.3 denied: reconcile_required_qty_mismatch (exchange 0.062 vs ledger 0.002');
    expect(first.output()).toContain('5. the position watcher wakes the plan: no retry needed');
    expect(first.output()).toContain('6. executed: order paper-');
    expect(first.output()).toContain('dev: testnet mode (TRADING_MODE unset; dev runs testnet');
    const ui = await fetch(`http://127.0.0.1:${uiPort}/`);
    expect(ui.status).toBe(200);
    await expectCleanStop(first);
    running.pop();
    // What a person needs, from the start to the stop: the ready line, the demo, dev's and the chain's own lines.
    expect(first.output()).toMatch(/^ready {2}Web UI /m);
    expect(
      first
        .output()
        .split('\n')
        .filter((line) => NOT_FOR_A_PERSON.test(line)),
    ).toEqual([]);
    // Both servers are gone with it, though they ran in process groups of their own.
    expect(await redisReachable(env.REDIS_URL)).toBe(false);
    expect(await tcpOpen(port)).toBe(false);
    expect(existsSync(join(dataDir, 'temporal.db'))).toBe(true);
    expect(existsSync(join(dataDir, 'redis', 'appendonlydir'))).toBe(true);

    const second = startDev([], env);
    running.push(second);
    await second.waitFor(/ready {2}Web UI/);
    const status = await runCli(['status', planId ?? '', '--json'], env);
    expect((JSON.parse(status.stdout) as ChainStatus).outcome).toBe('executed');
    const position = await runCli(['position', 'BTCUSDT', '--json'], env);
    expect(JSON.parse(position.stdout)).toMatchObject({ exchange_amount: '0', ledger_amount: '0' });

    // The operators' way, with redis-cli and the official temporal CLI only.
    const redisCli = (...args: string[]) => run('redis-cli', ['-p', String(redisPort), ...args]);
    const temporalExecutable = temporalCliExecutable();
    if (temporalExecutable.type !== 'existing-path') throw new Error('no Temporal CLI in .tools: run scripts/setup.sh');
    const temporal = (...args: string[]) => run(temporalExecutable.path, [...args, '--address', env.TEMPORAL_ADDRESS]);
    await redisCli('HSET', 'quantum:exchange:paper:position:BTCUSDT', 'amount', '0.062');
    await redisCli('HSET', 'quantum:position:BTCUSDT', 'ledger_amount', '0.002');
    const submitted = await runCli(['submit', '--symbol', 'BTCUSDT', '--side', 'SELL', '--qty', '0.062'], env);
    const [, opsPlan] = /plan_id ([0-9a-f]{16})/.exec(submitted.stdout) ?? [];
    const workflowId = `plan-${opsPlan}`;
    await eventually(async () => {
      const { stdout } = await temporal('workflow', 'query', '-w', workflowId, '--name', 'status', '-o', 'json');
      return stdout.includes('"stage": "blocked"') ? stdout : undefined;
    });
    await redisCli('HSET', 'quantum:position:BTCUSDT', 'ledger_amount', '0.062');
    // The position watcher wakes the plan on that HSET too, and may have finished it before the signal arrives.
    await temporal('workflow', 'signal', '-w', workflowId, '--name', 'retry', '--input', '{"by":"ops"}').catch(
      (err: unknown) => {
        if (!String(err).includes('workflow execution already completed')) throw err;
      },
    );
    const { stdout: result } = await temporal('workflow', 'result', '-w', workflowId, '-o', 'json');
    expect(result).toContain('"outcome": "executed"');
    expect((await redisCli('GET', `quantum:permit:${opsPlan}`)).stdout).toContain('"granted":true');
    expect((await redisCli('XREVRANGE', 'quantum:stream:apply.plan', '+', '-', 'COUNT', '1')).stdout).toContain(
      opsPlan,
    );

    // And a plan written to the exit.plan stream by any producer: the intake that dev runs starts it.
    await redisCli(
      'XADD',
      'quantum:stream:exit.plan',
      '*',
      'plan_id',
      'feedc0defeedc0de',
      'action',
      'EXECUTE',
      'symbol',
      'BTCUSDT',
      'side',
      'BUY',
      'qty',
      '0.01',
      'reduce_only',
      'false',
      'source',
      'exit-monitor',
    );
    const streamed = await eventually(async () => {
      const run = await runCli(['status', 'feedc0defeedc0de', '--json'], env);
      const parsed = run.code === 0 ? (JSON.parse(run.stdout) as ChainStatus) : undefined;
      return parsed?.outcome ? parsed : undefined;
    }, 30_000);
    expect(streamed.outcome).toBe('executed');
    await expectCleanStop(second);
    running.pop();
    expect(await redisReachable(env.REDIS_URL)).toBe(false);
    expect(await tcpOpen(port)).toBe(false);
  }, 180_000);
});
