import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { Client, Connection } from '@temporalio/client';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { redisKeys } from '../../contract/keys';
import { freePort, startRedis } from '../../scripts/servers';
import { INTAKE_GROUP } from '../../workers/intake';
import { CLI } from '../cli-runner';
import { eventually, pairs, testEnv } from '../helpers';

let redis: Redis;
let client: Client;
const children: ChildProcess[] = [];

beforeAll(async () => {
  const env = testEnv();
  redis = new Redis(env.REDIS_URL);
  client = new Client({ connection: await Connection.connect({ address: env.TEMPORAL_ADDRESS }) });
});
afterEach(() => {
  for (const child of children.splice(0)) if (child.exitCode === null) child.kill('SIGKILL');
});
afterAll(async () => {
  redis.disconnect();
  await client.connection.close();
});

interface IntakeProcess {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

/** `consumer` null: the command's default, as a deployment that scales replicas runs it. */
function startIntake(env: Record<string, string>, consumer: string | null = 'intake-a'): IntakeProcess {
  const named = consumer === null ? [] : ['--consumer', consumer];
  const child = spawn(process.execPath, [CLI, 'intake', ...named, '--claim-idle', '1s'], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let out = '';
  child.stdout?.on('data', (chunk: Buffer) => (out += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (out += chunk.toString()));
  return { child, output: () => out, exited: new Promise((done) => child.once('exit', done)) };
}

/** A valid plan as an upstream producer writes it to the stream: every field a string, no plan id. */
function planFields(i: number, run: string): string[] {
  return [
    'action',
    'EXECUTE',
    'symbol',
    `S${i % 7}USDT`,
    'side',
    i % 2 === 0 ? 'SELL' : 'BUY',
    'qty',
    `0.${String(1000 + i)}`,
    'reduce_only',
    'true',
    'source',
    'exit-monitor',
    'created_at',
    String(1_790_000_000_000 + i),
    'run',
    run,
  ];
}

const MALFORMED: [string, string[]][] = [
  ['action', ['action', 'HOLD', 'symbol', 'BTCUSDT', 'side', 'SELL', 'qty', '1', 'source', 'x']],
  ['symbol', ['action', 'EXECUTE', 'symbol', 'btcusdt', 'side', 'SELL', 'qty', '1', 'source', 'x']],
  ['side', ['action', 'EXECUTE', 'symbol', 'BTCUSDT', 'side', 'sell', 'qty', '1', 'source', 'x']],
  ['qty', ['action', 'EXECUTE', 'symbol', 'BTCUSDT', 'side', 'SELL', 'qty', '-1', 'source', 'x']],
  ['qty', ['action', 'EXECUTE', 'symbol', 'BTCUSDT', 'side', 'SELL', 'qty', '0.000000001', 'source', 'x']],
  [
    'reduce_only',
    ['action', 'EXECUTE', 'symbol', 'BTCUSDT', 'side', 'SELL', 'qty', '1', 'reduce_only', 'maybe', 'source', 'x'],
  ],
  ['source', ['action', 'EXECUTE', 'symbol', 'BTCUSDT', 'side', 'SELL', 'qty', '1']],
  [
    'created_at',
    ['action', 'EXECUTE', 'symbol', 'BTCUSDT', 'side', 'SELL', 'qty', '1', 'source', 'x', 'created_at', 'yesterday'],
  ],
  ['plan_id', ['plan_id', 'XYZ', 'action', 'EXECUTE', 'symbol', 'BTCUSDT', 'side', 'SELL', 'qty', '1', 'source', 'x']],
  ['action', ['symbol', 'BTCUSDT', 'side', 'SELL', 'qty', '1', 'source', 'x']],
];

async function workflowsOn(taskQueue: string): Promise<number> {
  return (await client.workflow.count(`TaskQueue = "${taskQueue}"`)).count;
}

async function groupState(stream: string): Promise<{ pending: number; lag: number | null }> {
  const groups = (await redis.xinfo('GROUPS', stream)) as unknown[][];
  const group = groups.map((g) => Object.fromEntries(pairs(g.map(String)))).find((g) => g.name === INTAKE_GROUP);
  return { pending: Number(group?.pending ?? -1), lag: group?.lag === '' ? null : Number(group?.lag ?? -1) };
}

describe('permit-chain intake', () => {
  it('starts 450 plans exactly once from 520 entries, dead-letters 20, and survives a kill mid-batch', async () => {
    const env = testEnv();
    const keys = redisKeys(env.KEY_PREFIX);
    const run = randomBytes(4).toString('hex');
    const entries: { fields: string[]; bad?: string }[] = [];
    for (let i = 0; i < 450; i++) entries.push({ fields: planFields(i, run) });
    for (let i = 0; i < 50; i++) entries.push({ fields: planFields(i * 9, run) }); // the same plan again
    for (let i = 0; i < 20; i++) {
      const [field, fields] = MALFORMED[i % MALFORMED.length] ?? ['', []];
      entries.push({ fields: [...fields, 'n', String(i)], bad: field });
    }
    entries.sort(() => Math.random() - 0.5);
    const badIds = new Map<string, string>();
    for (const entry of entries) {
      const id = await redis.xadd(keys.exitPlanStream, '*', ...entry.fields);
      if (entry.bad && id) badIds.set(id, entry.bad);
    }

    const first = startIntake(env);
    await eventually(
      async () => ((await workflowsOn(env.TASK_QUEUE)) >= 100 ? true : undefined),
      60_000,
      '100 workflows',
    );
    first.child.kill('SIGKILL');
    await first.exited;
    const afterKill = await workflowsOn(env.TASK_QUEUE);
    expect(afterKill).toBeLessThan(450);

    const second = startIntake(env);
    await eventually(
      async () => {
        const state = await groupState(keys.exitPlanStream);
        return state.pending === 0 && state.lag === 0 ? state : undefined;
      },
      120_000,
      'every entry read and acknowledged',
    );
    await eventually(
      async () => ((await workflowsOn(env.TASK_QUEUE)) === 450 ? true : undefined),
      30_000,
      '450 workflows',
    );
    second.child.kill('SIGTERM');
    expect(await second.exited).toBe(0);
    expect(second.output()).toMatch(/intake: stopped/);

    const dead = await redis.xrange(keys.exitPlanDeadStream, '-', '+');
    expect(dead).toHaveLength(20);
    for (const [, fields] of dead) {
      const entry = Object.fromEntries(pairs(fields));
      const field = badIds.get(entry.original_id ?? '');
      expect(field).toBeDefined();
      expect(entry.error).toMatch(new RegExp(`^plan: ${field} `));
      expect(JSON.parse(entry.entry ?? '{}')).toHaveProperty('n');
    }
    expect(await workflowsOn(env.TASK_QUEUE)).toBe(450);
    expect((await groupState(keys.exitPlanStream)).pending).toBe(0);
  }, 240_000);

  it('reads as intake-<host name> by default, so each replica of a scaled deployment is a consumer of its own', async () => {
    const env = testEnv();
    const keys = redisKeys(env.KEY_PREFIX);
    const intake = startIntake(env, null);
    const consumer = `intake-${hostname()}`;
    // The consumer name ends the start line (a JSON log line: then a quote).
    const started = new RegExp(`as ${INTAKE_GROUP}/${consumer}(\n|")`);
    await eventually(() => Promise.resolve(started.test(intake.output()) || undefined));
    // A refused entry: read, dead-lettered and acknowledged by this consumer, with no worker needed.
    await redis.xadd(keys.exitPlanStream, '*', 'action', 'HOLD', 'symbol', 'BTCUSDT');
    await eventually(async () => ((await redis.xlen(keys.exitPlanDeadStream)) === 1 ? true : undefined));
    const consumers = (await redis.xinfo('CONSUMERS', keys.exitPlanStream, INTAKE_GROUP)) as unknown[][];
    expect(consumers.map((fields) => fields[1])).toEqual([consumer]);
    intake.child.kill('SIGTERM');
    expect(await intake.exited).toBe(0);
  });

  it('runs two intake processes side by side without double starts', async () => {
    const env = testEnv();
    const keys = redisKeys(env.KEY_PREFIX);
    const run = randomBytes(4).toString('hex');
    const a = startIntake(env, 'intake-a');
    const b = startIntake(env, 'intake-b');
    for (let i = 0; i < 100; i++) await redis.xadd(keys.exitPlanStream, '*', ...planFields(i, run));
    for (let i = 0; i < 100; i += 4) await redis.xadd(keys.exitPlanStream, '*', ...planFields(i, run));
    await eventually(async () => {
      const state = await groupState(keys.exitPlanStream);
      return state.pending === 0 && state.lag === 0 ? true : undefined;
    }, 60_000);
    await eventually(async () => ((await workflowsOn(env.TASK_QUEUE)) === 100 ? true : undefined), 30_000);
    a.child.kill('SIGTERM');
    b.child.kill('SIGTERM');
    expect([await a.exited, await b.exited]).toEqual([0, 0]);
    const started = (out: string) => Number(/\((\d+) started/.exec(out)?.[1] ?? NaN);
    expect(started(a.output()) + started(b.output())).toBe(125);
    expect(await workflowsOn(env.TASK_QUEUE)).toBe(100);
  }, 120_000);

  it('takes over entries another consumer read and never acknowledged, more than a batch of them', async () => {
    const env = testEnv();
    const keys = redisKeys(env.KEY_PREFIX);
    await redis.xgroup('CREATE', keys.exitPlanStream, INTAKE_GROUP, '0', 'MKSTREAM');
    for (let i = 0; i < 150; i++) await redis.xadd(keys.exitPlanStream, '*', ...planFields(i, 'orphan'));
    // A consumer that read them and died.
    await redis.xreadgroup('GROUP', INTAKE_GROUP, 'dead-consumer', 'COUNT', 150, 'STREAMS', keys.exitPlanStream, '>');
    expect((await groupState(keys.exitPlanStream)).pending).toBe(150);
    const intake = startIntake(env, 'intake-rescuer');
    await eventually(async () => ((await workflowsOn(env.TASK_QUEUE)) === 150 ? true : undefined), 30_000);
    await eventually(async () => ((await groupState(keys.exitPlanStream)).pending === 0 ? true : undefined));
    intake.child.kill('SIGTERM');
    expect(await intake.exited).toBe(0);
    const taken = [...intake.output().matchAll(/took over (\d+) entries/g)].map((m) => Number(m[1]));
    expect(taken.reduce((a, b) => a + b, 0)).toBe(150);
  }, 60_000);

  it('waits for Redis when it is not there, says so, and loses nothing', async () => {
    const port = await freePort();
    const env = testEnv({ REDIS_URL: `redis://127.0.0.1:${port}/0` });
    const keys = redisKeys(env.KEY_PREFIX);
    const intake = startIntake(env);
    // One line when it finds Redis away, one when it is back (lib/connection-state.ts), none per failed try.
    await eventually(async () => Promise.resolve(/Redis at .*: lost \(/.test(intake.output()) || undefined), 20_000);
    const late = await startRedis({ port });
    try {
      const lateRedis = new Redis(late.url);
      await lateRedis.xadd(keys.exitPlanStream, '*', ...planFields(1, 'late'));
      await eventually(async () => ((await workflowsOn(env.TASK_QUEUE)) === 1 ? true : undefined), 30_000);
      expect(intake.output()).toMatch(/Redis at .*: back after \d+\.\d s/);
      expect(intake.output().match(/Redis at .*: lost \(/g)).toHaveLength(1);
      expect(intake.output()).not.toMatch(/could not/);
      intake.child.kill('SIGTERM');
      expect(await intake.exited).toBe(0);
      lateRedis.disconnect();
    } finally {
      await late.stop();
    }
  }, 90_000);

  it('leaves entries pending while Temporal is unavailable, and starts them once it is back', async () => {
    const port = await freePort();
    const env = testEnv();
    const keys = redisKeys(env.KEY_PREFIX);
    await redis.xadd(keys.exitPlanStream, '*', ...planFields(7, 'down'));
    const down = startIntake({ ...env, TEMPORAL_ADDRESS: `127.0.0.1:${port}` });
    await eventually(async () => Promise.resolve(/Temporal unavailable/.test(down.output()) || undefined), 30_000);
    expect((await groupState(keys.exitPlanStream)).pending).toBe(1);
    expect(await redis.xlen(keys.exitPlanDeadStream)).toBe(0);
    down.child.kill('SIGTERM');
    expect(await down.exited).toBe(0);
    expect((await groupState(keys.exitPlanStream)).pending).toBe(1);

    const up = startIntake(env);
    await eventually(async () => ((await workflowsOn(env.TASK_QUEUE)) === 1 ? true : undefined), 30_000);
    await eventually(async () => ((await groupState(keys.exitPlanStream)).pending === 0 ? true : undefined));
    up.child.kill('SIGTERM');
    expect(await up.exited).toBe(0);
  }, 90_000);
});
