/**
 * A worker, an intake and `dev` (its worker and intake in one process), as processes, over a Redis of their own while
 * it is SIGKILLed and started again, then SIGSTOPped (hung: it refuses nothing, answers nothing) and SIGCONTed: each
 * says once that it lost Redis and once that it is back (with how long), within 5 s for the hung one, and prints no
 * stack trace and no line per failed attempt; their `/metrics` show `permit_chain_redis_up` 0 during the outage and 1
 * after, and the time Redis last answered moving on.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Connection } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PROJECT_ROOT, devTemporalServerCommand, freePort, redisReachable, redisServerPath } from '../../cli/servers';
import { CLI } from '../../scripts/stack/cli-runner';
import { testEnv } from '../helpers';
import { intakeSpec, workerSpec } from '../../scripts/stack/chain';
import { ProcessGroup, type ManagedProcess } from '../../scripts/stack/processes';

const group = new ProcessGroup(join(PROJECT_ROOT, 'test-results', 'connection-state'));
const dir = mkdtempSync(join(tmpdir(), 'permit-chain-connection-state-'));

const LOST = /Redis at redis:\/\/127\.0\.0\.1:\d+\/0: lost \(/;
const NOT_ANSWERING = /Redis at redis:\/\/127\.0\.0\.1:\d+\/0: lost \(not answering \(no reply to PING within 2 s\)\)/;
const BACK = /Redis at redis:\/\/127\.0\.0\.1:\d+\/0: back after \d+\.\d s/;
/** A failed attempt's line, as the processes printed them before: one per retry, per command, per poll. */
const PER_ATTEMPT = /could not|ECONNREFUSED|max retries per request|Connection is closed|Stream isn't writeable/i;
const STACK = /\\n\s+at |^\s+at /;

let redis: ManagedProcess;
/** Each process and the port its `/metrics` is on. */
let watched: { proc: ManagedProcess; metricsPort: number }[] = [];

afterAll(async () => {
  await group.stopAll();
  rmSync(dir, { recursive: true, force: true });
}, 60_000);

/** A process's Redis health series, as Prometheus reads them. */
async function redisHealth(metricsPort: number): Promise<{ up: number; lastSuccess: number }> {
  const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  const value = (name: string) => {
    const found = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
    if (!found) throw new Error(`no ${name} in /metrics:\n${text.slice(0, 2000)}`);
    return Number(found[1]);
  };
  return {
    up: value('permit_chain_redis_up'),
    lastSuccess: value('permit_chain_redis_last_success_timestamp_seconds'),
  };
}

/** Each process's output from now on (`lines()`), and where it starts (`from`, for `waitForLine`). */
function linesFromNow(): { from: number[]; lines: () => { name: string; lines: string[] }[] } {
  const from = watched.map(({ proc }) => proc.output().split('\n').length);
  return {
    from,
    lines: () =>
      watched.map(({ proc }, i) => ({
        name: proc.name,
        lines: proc
          .output()
          .split('\n')
          .slice(from[i] ?? 0),
      })),
  };
}

/** Waits for a line matching `pattern` in each process's output since `from`. */
async function eachSays(from: number[], pattern: RegExp, timeoutMs: () => number): Promise<void> {
  for (const [i, { proc }] of watched.entries()) await proc.waitForLine(pattern, timeoutMs(), from[i] ?? 0);
}

function expectOneOutage(outage: { name: string; lines: string[] }[], lost: RegExp): void {
  for (const { name, lines } of outage) {
    const shown = `${name}:\n${lines.join('\n')}`;
    expect(
      lines.filter((line) => LOST.test(line)),
      shown,
    ).toHaveLength(1);
    expect(
      lines.filter((line) => lost.test(line)),
      shown,
    ).toHaveLength(1);
    expect(
      lines.filter((line) => BACK.test(line)),
      shown,
    ).toHaveLength(1);
    expect(
      lines.filter((line) => STACK.test(line)),
      shown,
    ).toEqual([]);
    expect(
      lines.filter((line) => PER_ATTEMPT.test(line) && !LOST.test(line)),
      shown,
    ).toEqual([]);
  }
}

describe('processes that lose their Redis', () => {
  beforeAll(async () => {
    const port = await freePort();
    const url = `redis://127.0.0.1:${port}/0`;
    redis = await group.start({
      name: 'redis',
      command: redisServerPath(),
      args: ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--dir', dir, '--appendonly', 'yes'],
      ready: () => redisReachable(url, 500),
    });
    const [workerPort, intakePort, devPort] = [await freePort(), await freePort(), await freePort()];
    const env = testEnv({ REDIS_URL: url });
    const [worker, intake, dev] = await Promise.all([
      group.start(workerSpec('worker', { ...env, METRICS_PORT: String(workerPort) })),
      group.start(intakeSpec('intake', { ...env, METRICS_PORT: String(intakePort) })),
      // `dev` uses the Redis and the Temporal server it finds.
      group.start({
        name: 'dev',
        command: process.execPath,
        args: [CLI, 'dev'],
        env: { ...env, METRICS_PORT: String(devPort) },
        ready: /^ready {2}Web UI/,
        readyTimeoutMs: 120_000,
        stopTimeoutMs: 15_000,
      }),
    ]);
    watched = [
      { proc: worker, metricsPort: workerPort },
      { proc: intake, metricsPort: intakePort },
      { proc: dev, metricsPort: devPort },
    ];
  }, 240_000);

  it('say once that Redis is lost and once that it is back, with no line per retry; /metrics follows', async () => {
    const before = await Promise.all(watched.map(({ metricsPort }) => redisHealth(metricsPort)));
    for (const health of before) expect(health.up).toBe(1);
    const outage = linesFromNow();

    await redis.kill();
    await eachSays(outage.from, LOST, () => 10_000);
    const during = await Promise.all(watched.map(({ metricsPort }) => redisHealth(metricsPort)));
    for (const health of during) expect(health.up).toBe(0);
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    const restarted = Date.now() / 1000;
    await redis.start();
    await eachSays(outage.from, BACK, () => 30_000);
    // A moment for any late line of the outage, and for a PING or two.
    await new Promise((resolve) => setTimeout(resolve, 2_000));

    expectOneOutage(outage.lines(), LOST);
    const after = await Promise.all(watched.map(({ metricsPort }) => redisHealth(metricsPort)));
    after.forEach((health, i) => {
      expect(health.up).toBe(1);
      expect(health.lastSuccess).toBeGreaterThan(before[i]?.lastSuccess ?? Infinity);
      expect(health.lastSuccess).toBeGreaterThanOrEqual(Math.floor(restarted));
      expect(during[i]?.lastSuccess).toBeLessThan(restarted);
    });
  }, 120_000);

  it('say within 5 s that a hung Redis (SIGSTOP) is not answering, and once that it is back after SIGCONT', async () => {
    const outage = linesFromNow();
    const hungAt = Date.now();
    redis.pause();
    try {
      await eachSays(outage.from, NOT_ANSWERING, () => Math.max(1, hungAt + 5_000 - Date.now()));
      const during = await Promise.all(watched.map(({ metricsPort }) => redisHealth(metricsPort)));
      for (const health of during) {
        expect(health.up).toBe(0);
        expect(health.lastSuccess).toBeLessThanOrEqual(hungAt / 1000);
      }
      // Hung a while longer: still one line, however many PINGs go unanswered.
      await new Promise((resolve) => setTimeout(resolve, 3_000));
    } finally {
      redis.resume();
    }
    await eachSays(outage.from, BACK, () => 10_000);
    await new Promise((resolve) => setTimeout(resolve, 2_000));

    expectOneOutage(outage.lines(), NOT_ANSWERING);
    for (const { metricsPort } of watched) {
      const health = await redisHealth(metricsPort);
      expect(health.up).toBe(1);
      expect(health.lastSuccess).toBeGreaterThan(hungAt / 1000);
    }
  }, 60_000);
});

describe('processes that lose their Temporal server', () => {
  it('say once that Temporal is lost and once that it is back; /metrics follows', async () => {
    const port = await freePort();
    const address = `127.0.0.1:${port}`;
    const { command, args } = devTemporalServerCommand({
      port,
      dbFilename: join(dir, 'temporal.db'),
      namespace: 'default',
    });
    const temporal = await group.start({
      name: 'temporal',
      command,
      args,
      ready: async () => {
        const connection = await Connection.connect({ address, connectTimeout: 1_000 });
        await connection.close();
        return true;
      },
      readyTimeoutMs: 60_000,
    });
    const [workerPort, intakePort] = [await freePort(), await freePort()];
    const env = testEnv({ TEMPORAL_ADDRESS: address, TEMPORAL_NAMESPACE: 'default' });
    const procs = await Promise.all([
      group.start(workerSpec('worker-t', { ...env, METRICS_PORT: String(workerPort) })),
      group.start(intakeSpec('intake-t', { ...env, METRICS_PORT: String(intakePort) })),
    ]);
    const ports = [workerPort, intakePort];
    const up = async (metricsPort: number) => {
      const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      return Number(/^permit_chain_temporal_up (\S+)$/m.exec(text)?.[1]);
    };
    for (const metricsPort of ports) expect(await up(metricsPort)).toBe(1);
    const from = procs.map((proc) => proc.output().split('\n').length);
    const lost = /Temporal at 127\.0\.0\.1:\d+: lost \(/;
    const back = /Temporal at 127\.0\.0\.1:\d+: back after \d+\.\d s/;

    await temporal.kill();
    for (const [i, proc] of procs.entries()) await proc.waitForLine(lost, 20_000, from[i]);
    for (const metricsPort of ports) expect(await up(metricsPort)).toBe(0);
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    await temporal.start();
    for (const [i, proc] of procs.entries()) await proc.waitForLine(back, 30_000, from[i]);
    await new Promise((resolve) => setTimeout(resolve, 2_000));

    for (const [i, proc] of procs.entries()) {
      const lines = proc.output().split('\n').slice(from[i]);
      const shown = `${proc.name}:\n${lines.join('\n')}`;
      expect(
        lines.filter((line) => lost.test(line)),
        shown,
      ).toHaveLength(1);
      expect(
        lines.filter((line) => back.test(line)),
        shown,
      ).toHaveLength(1);
      expect(
        lines.filter((line) => STACK.test(line)),
        shown,
      ).toEqual([]);
      expect(
        lines.filter((line) => /could not|UNAVAILABLE|transport error/i.test(line) && !lost.test(line)),
        shown,
      ).toEqual([]);
    }
    for (const metricsPort of ports) expect(await up(metricsPort)).toBe(1);
  }, 240_000);
});
