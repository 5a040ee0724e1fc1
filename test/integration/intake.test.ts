import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { Client, Connection, WorkflowNotFoundError } from '@temporalio/client';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { planWorkflowId } from '../../contract/messages';
import { redisKeys } from '../../contract/keys';
import { canonicalJson, parsePlan } from '../../lib/plan';
import { freePort, startRedis } from '../../cli/servers';
import { INTAKE_GROUP } from '../../workers/intake';
import { CLI } from '../../scripts/stack/cli-runner';
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

/**
 * `consumer` null: the command's default, as a deployment that scales replicas runs it. `claimIdle`: short, so that
 * a takeover is quick to test; long where two live intakes must not take each other's entries on a slow machine.
 */
function startIntake(
  env: Record<string, string>,
  consumer: string | null = 'intake-a',
  claimIdle = '1s',
): IntakeProcess {
  const named = consumer === null ? [] : ['--consumer', consumer];
  const child = spawn(process.execPath, [CLI, 'intake', ...named, '--claim-idle', claimIdle], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let out = '';
  child.stdout?.on('data', (chunk: Buffer) => (out += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (out += chunk.toString()));
  return { child, output: () => out, exited: new Promise((done) => child.once('exit', done)) };
}

/** A valid plan as an upstream producer writes it to the stream: every field a string, no plan id; `run` in its reason. */
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
    'reason',
    `run ${run}`,
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
      entries.push({ fields: [...fields, 'reason', `malformed ${i}`], bad: field });
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
      expect(JSON.parse(entry.entry ?? '{}')).toHaveProperty('reason');
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
    // Neither is dead: an entry the other holds is its own, however slowly it starts the plan.
    const a = startIntake(env, 'intake-a', '60s');
    const b = startIntake(env, 'intake-b', '60s');
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
    // One line says so, whichever part of the intake met the outage first.
    const lost = /Temporal at 127\.0\.0\.1:\d+: lost \(/;
    await eventually(async () => Promise.resolve(lost.test(down.output()) || undefined), 30_000);
    // Read, and held unacknowledged while no workflow can start.
    await eventually(async () => ((await groupState(keys.exitPlanStream)).pending === 1 ? true : undefined), 30_000);
    await new Promise((resolve) => setTimeout(resolve, 1_000));
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

/** A plan as a record of stream fields: one trade, every field a string. */
function trade(symbol: string): Record<string, string> {
  return {
    action: 'EXECUTE',
    symbol,
    side: 'SELL',
    qty: '0.5',
    reduce_only: 'true',
    source: 'exit-monitor',
    created_at: '1790000000000',
  };
}

/** The plan id a lenient intake would have given these fields: the hash of all of them as received. */
function idOfAllFields(fields: Record<string, string>): string {
  return createHash('sha256').update(canonicalJson(fields)).digest('hex').slice(0, 16);
}

/** Runs an intake until every entry on the stream is read and acknowledged, then stops it; its output. */
async function drain(env: Record<string, string>, stream: string, timeoutMs = 60_000): Promise<string> {
  const intake = startIntake(env);
  await eventually(
    async () => {
      const state = await groupState(stream).catch(() => undefined);
      return state?.pending === 0 && state.lag === 0 ? true : undefined;
    },
    timeoutMs,
    'every entry read and acknowledged',
  );
  intake.child.kill('SIGTERM');
  expect(await intake.exited).toBe(0);
  return intake.output();
}

async function deadLetters(stream: string): Promise<Map<string, Record<string, string>>> {
  const entries = await redis.xrange(stream, '-', '+');
  return new Map(
    entries.map(([, fields]) => {
      const entry = Object.fromEntries(pairs(fields));
      return [entry.original_id ?? '', entry];
    }),
  );
}

const MB = 1024 * 1024;

describe('the intake takes the stream as given, as strict as submit', () => {
  it('dead-letters padded values, unknown fields and a field given twice, naming them, and starts none of them', async () => {
    const env = testEnv();
    const keys = redisKeys(env.KEY_PREFIX);
    const plain = trade('PADUSDT');
    const refused: [Record<string, string> | string[], RegExp][] = [
      [{ ...plain, qty: ' 1' }, /^plan: qty must not begin or end with white space .*\(got " 1"\)$/],
      [{ ...plain, qty: '0.01\n' }, /^plan: qty must not begin or end with white space .*\(got "0\.01\\n"\)$/],
      [{ ...plain, qty: '\t1' }, /^plan: qty must not begin or end with white space .*\(got "\\t1"\)$/],
      [{ ...plain, qty: '1\u00a0' }, /^plan: qty must not begin or end with white space .*\(got "1\\u00a0"\)$/],
      [{ ...plain, symbol: 'PADUSDT ' }, /^plan: symbol must not begin or end with white space/],
      [{ ...plain, side: ' SELL' }, /^plan: side must not begin or end with white space/],
      [{ ...plain, reduce_only: 'true\n' }, /^plan: reduce_only must not begin or end with white space/],
      [{ ...plain, created_at: ' 1790000000000' }, /^plan: created_at must not begin or end with white space/],
      [{ ...plain, trace: 'abc' }, /^plan: unknown field\(s\) trace \(a plan has only /],
      [{ ...plain, foo: '1', bar: '2' }, /^plan: unknown field\(s\) bar, foo \(a plan has only /],
      [[...Object.entries(plain).flat(), 'qty', '100'], /^plan: qty is given more than once/],
    ];
    const expected = new Map<string, RegExp>();
    for (const [fields, error] of refused) {
      const list = Array.isArray(fields) ? fields : Object.entries(fields).flat();
      expected.set((await redis.xadd(keys.exitPlanStream, '*', ...list)) ?? '', error);
    }
    // The same trade as the one with `trace` above, without it: one plan.
    await redis.xadd(keys.exitPlanStream, '*', ...Object.entries(plain).flat());

    await drain(env, keys.exitPlanStream);
    const dead = await deadLetters(keys.exitPlanDeadStream);
    expect(dead.size).toBe(refused.length);
    for (const [id, error] of expected) expect(dead.get(id)?.error).toMatch(error);
    const planId = parsePlan(plain).plan_id;
    await eventually(async () => ((await workflowsOn(env.TASK_QUEUE)) === 1 ? true : undefined), 30_000);
    expect((await client.workflow.getHandle(planWorkflowId(planId)).describe()).status.name).toBeDefined();
    // None of the refused entries started a plan of its own under the id a lenient intake gave it.
    for (const [fields] of refused) {
      if (Array.isArray(fields)) continue;
      const id = idOfAllFields(fields);
      expect(id).not.toBe(planId);
      await expect(client.workflow.getHandle(planWorkflowId(id)).describe()).rejects.toBeInstanceOf(
        WorkflowNotFoundError,
      );
    }
    expect(await workflowsOn(env.TASK_QUEUE)).toBe(1);
    await client.workflow.getHandle(planWorkflowId(planId)).terminate('test done');
  }, 90_000);

  it('keeps the dead letter and the log line of an entry with a 1 MB field each under 4 KiB', async () => {
    const env = testEnv();
    const keys = redisKeys(env.KEY_PREFIX);
    const plain = trade('BIGUSDT');
    const huge = 'x'.repeat(MB);
    const entries = [
      { ...plain, qty: huge },
      { ...plain, reason: huge },
      { ...plain, blob: huge },
      { [`n${huge}`]: '1', ...plain },
    ];
    const ids: string[] = [];
    for (const fields of entries)
      ids.push((await redis.xadd(keys.exitPlanStream, '*', ...Object.entries(fields).flat())) ?? '');

    const output = await drain(env, keys.exitPlanStream);
    const dead = await deadLetters(keys.exitPlanDeadStream);
    expect(dead.size).toBe(entries.length);
    for (const id of ids) {
      const fields = Object.entries(dead.get(id) ?? {}).flat();
      const bytes = fields.reduce((sum, item) => sum + Buffer.byteLength(item), 0);
      expect(bytes).toBeGreaterThan(0);
      expect(bytes).toBeLessThan(4096);
      // Cut, not lost: the entry says how long the value was, and its sha256.
      expect(dead.get(id)?.entry).toMatch(/ …\[cut: 104857\d bytes, sha256 [0-9a-f]{64}\]/);
      const lines = output.split('\n').filter((line) => line.includes(`${id} dead-lettered`));
      expect(lines).toHaveLength(1);
      expect(Buffer.byteLength(lines[0] ?? '')).toBeLessThan(4096);
    }
    expect(dead.get(ids[0] ?? '')?.error).toMatch(/^plan: qty must be a decimal number \(got "x{511} …\[cut: /);
    expect(dead.get(ids[1] ?? '')?.error).toMatch(/^plan: reason must be at most 2000 characters \(got "x+ …\[cut: /);
    expect(dead.get(ids[2] ?? '')?.error).toMatch(/^plan: unknown field\(s\) blob /);
    expect(dead.get(ids[3] ?? '')?.error).toMatch(/^plan: unknown field\(s\) "nx+ …\[cut: 1048579 bytes, sha256 /);
    // Four 1 MB values read; none of them reached the log.
    expect(Buffer.byteLength(output)).toBeLessThan(64 * 1024);
  }, 90_000);

  it('caps the dead-letter stream (DEAD_LETTER_MAXLEN) and counts what the cap dropped', async () => {
    const env = testEnv({ DEAD_LETTER_MAXLEN: '10', METRICS_PORT: '0', METRICS_HOST: '127.0.0.1' });
    const keys = redisKeys(env.KEY_PREFIX);
    const sent = 150;
    let last = '';
    for (let i = 0; i < sent; i++) {
      last =
        (await redis.xadd(keys.exitPlanStream, '*', ...Object.entries({ ...trade('CAPUSDT'), qty: ` ${i}` }).flat())) ??
        '';
    }
    const intake = startIntake(env);
    const url = await eventually(async () =>
      Promise.resolve(/"metrics_url":"(http:\/\/127\.0\.0\.1:\d+\/metrics)"/.exec(intake.output())?.[1]),
    );
    await eventually(
      async () => {
        const state = await groupState(keys.exitPlanStream).catch(() => undefined);
        return state?.pending === 0 && state.lag === 0 ? true : undefined;
      },
      60_000,
      'every entry read and acknowledged',
    );
    const metrics = await (await fetch(url)).text();
    intake.child.kill('SIGTERM');
    expect(await intake.exited).toBe(0);

    const kept = await redis.xlen(keys.exitPlanDeadStream);
    // MAXLEN ~: at least the cap, at most one of Redis's stream nodes (100 entries by default) more.
    expect(kept).toBeGreaterThanOrEqual(10);
    expect(kept).toBeLessThanOrEqual(10 + 100);
    expect(kept).toBeLessThan(sent);
    const trimmed = Number(/^permit_chain_dead_letter_trimmed_total (\d+)$/m.exec(metrics)?.[1]);
    expect(trimmed).toBe(sent - kept);
    expect(metrics).toMatch(new RegExp(`^permit_chain_intake_entries_total\\{result="dead_lettered"\\} ${sent}$`, 'm'));
    // The newest are the ones kept.
    const [newest] = await redis.xrevrange(keys.exitPlanDeadStream, '+', '-', 'COUNT', 1);
    expect(Object.fromEntries(pairs(newest?.[1] ?? [])).original_id).toBe(last);
  }, 90_000);
});
