import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPlan } from '../../client/plans';
import { loadConfig } from '../../lib/config';
import { PROJECT_ROOT, freePort, startRedis, type RunningRedis } from '../../cli/servers';
import { startCli, type CliProcess } from '../../scripts/stack/cli-runner';
import {
  chainHarness,
  eventually,
  logLines,
  makePlan,
  setPositions,
  testEnv,
  waitForStage,
  type ChainHarness,
  type TestEnv,
} from '../helpers';
import { redisKeys } from '../../contract/keys';
import { INTAKE_GROUP } from '../../workers/intake';
import type { ChainStatus } from '../../contract/types';

/**
 * The worker and the intake as deployed: separate processes, METRICS_PORT=0 (a free port, printed), on real servers.
 * The worker's Redis has a password (made up per run), so that a test finding it in output cannot be fooled.
 */
const PASSWORD = `obs-${randomBytes(6).toString('hex')}`;
const ROTATED = `obs-new-${randomBytes(6).toString('hex')}`;

let redisServer: RunningRedis;
let admin: Redis;
let env: TestEnv;
let h: ChainHarness;
let worker: CliProcess;
let metricsUrl: string;
let collector: { server: Server; url: string; bodies: Buffer[] };

/** A stand-in OpenTelemetry collector: takes OTLP/HTTP posts and keeps their bodies. */
async function startCollector(): Promise<typeof collector> {
  const bodies: Buffer[] = [];
  const server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      if (request.url === '/v1/traces') bodies.push(Buffer.concat(chunks));
      response.writeHead(200, { 'content-type': 'application/x-protobuf' });
      response.end();
    });
  });
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, bodies };
}

/** The values of a series in Prometheus text whose labels include `labels`. */
function samples(text: string, name: string, labels: Record<string, string> = {}): number[] {
  const found: number[] = [];
  for (const line of text.split('\n')) {
    const match = /^([A-Za-z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const has = new Map([...(match[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]]));
    if (Object.entries(labels).every(([key, value]) => has.get(key) === value)) found.push(Number(match[3]));
  }
  return found;
}

function sum(text: string, name: string, labels: Record<string, string> = {}): number {
  return samples(text, name, labels).reduce((a, b) => a + b, 0);
}

async function get(path: string): Promise<{ status: number; body: string }> {
  const response = await fetch(new URL(path, metricsUrl));
  return { status: response.status, body: await response.text() };
}

async function scrape(): Promise<string> {
  const { status, body } = await get('/metrics');
  expect(status).toBe(200);
  return body;
}

/** Scrapes until `check` holds (gauges read from Temporal's visibility lag it a little, and are cached 5 s). */
async function scrapeUntil(check: (text: string) => boolean, what: string): Promise<string> {
  return eventually(
    async () => {
      const text = await scrape();
      return check(text) ? text : undefined;
    },
    30_000,
    what,
  );
}

beforeAll(async () => {
  redisServer = await startRedis({ port: await freePort() });
  admin = new Redis(redisServer.url);
  await admin.config('SET', 'requirepass', PASSWORD);
  collector = await startCollector();
  env = testEnv({
    REDIS_URL: `redis://:${PASSWORD}@127.0.0.1:${new URL(redisServer.url).port}/0`,
    METRICS_PORT: '0',
    METRICS_HOST: '127.0.0.1',
    LOG_LEVEL: 'debug',
    OTEL_EXPORTER_OTLP_ENDPOINT: collector.url,
  });
  h = await chainHarness(loadConfig(env));
  worker = startCli(['worker'], env);
  const [, url] = await worker.waitFor(/"metrics_url":"(http:\/\/127\.0\.0\.1:\d+\/metrics)"/);
  metricsUrl = url ?? '';
  await worker.waitFor(/"msg":"worker: testnet mode/);
}, 120_000);

afterAll(async () => {
  await worker?.stop('SIGKILL');
  await h?.close().catch(() => undefined);
  admin?.disconnect();
  await redisServer?.stop();
  collector?.server.close();
});

const planIds: string[] = [];
/** What the worker's and the intake's /metrics served: the alerts and the dashboard are checked against it. */
const scraped: string[] = [];

describe('the worker process with METRICS_PORT', () => {
  it("serves the chain's series on /metrics with the counts of a real run, and the SDK's beside them", async () => {
    await setPositions(h, 'ADAUSDT', '10', '10');
    await setPositions(h, 'DOGEUSDT', '5', '4');
    const executed = [1, 2, 3].map(() => makePlan({ symbol: 'ADAUSDT', qty: '1' }));
    const blocked = makePlan({ symbol: 'DOGEUSDT', qty: '1' });
    planIds.push(...executed.map((p) => p.plan_id), blocked.plan_id);
    const outcomes = await Promise.all(
      executed.map(async (plan) => (await (await startPlan(h.client, h.config, plan)).handle.result()).outcome),
    );
    expect(outcomes).toEqual(['executed', 'executed', 'executed']);
    const { workflowId } = await startPlan(h.client, h.config, blocked);
    await waitForStage(h, workflowId, 'blocked');

    const text = await scrapeUntil((t) => sum(t, 'permit_chain_plans_blocked') === 1, 'one blocked plan');
    expect(sum(text, 'permit_chain_plans_started_total')).toBe(4);
    expect(sum(text, 'permit_chain_plans_ended_total', { outcome: 'executed' })).toBe(3);
    expect(sum(text, 'permit_chain_plans_ended_total')).toBe(3);
    expect(sum(text, 'permit_chain_plan_duration_seconds_count', { outcome: 'executed' })).toBe(3);
    expect(sum(text, 'permit_chain_plans_awaiting_approval')).toBe(0);
    const governor = { layer: 'governor', decision: 'granted', reason: 'testnet_auto_approved' };
    expect(sum(text, 'permit_chain_permits_total', governor)).toBe(4);
    expect(sum(text, 'permit_chain_permits_total', { layer: 'p33', decision: 'allowed' })).toBe(3);
    const mismatch = { layer: 'p33', decision: 'denied', reason: 'reconcile_required_qty_mismatch' };
    expect(sum(text, 'permit_chain_permits_total', mismatch)).toBe(1);
    expect(sum(text, 'permit_chain_executions_total', { status: 'FILLED' })).toBe(3);
    const execute = { stage: 'execute', activity: 'executePlan', result: 'ok' };
    expect(sum(text, 'permit_chain_stage_duration_seconds_count', execute)).toBe(3);
    expect(sum(text, 'permit_chain_stage_duration_seconds_count', { stage: 'p33', activity: 'checkPosition' })).toBe(4);
    // The Temporal SDK's own series, from its runtime, at the same address.
    expect(sum(text, 'temporal_workflow_completed_total')).toBe(3);
    expect(samples(text, 'temporal_worker_task_slots_available').length).toBeGreaterThan(0);
    // And the process's.
    expect(samples(text, 'process_resident_memory_bytes')).toHaveLength(1);

    // The ledger fix: the blocked plan executes, and the gauge follows.
    await h.redis.hset(h.keys.position('DOGEUSDT'), 'ledger_amount', '5');
    const final = (await h.client.workflow.getHandle(workflowId).result()) as ChainStatus;
    expect(final.outcome).toBe('executed');
    const after = await scrapeUntil((t) => sum(t, 'permit_chain_plans_blocked') === 0, 'no blocked plan');
    expect(sum(after, 'permit_chain_plans_ended_total', { outcome: 'executed' })).toBe(4);
    expect(sum(after, 'permit_chain_plans_started_total')).toBe(4);
    scraped.push(after);
  }, 90_000);

  it('logs JSON lines: every line about a plan carries its plan_id and workflow_id, and no password', () => {
    const lines = logLines(worker.output());
    for (const planId of planIds) {
      const about = worker
        .output()
        .split('\n')
        .filter((line) => line.includes(planId))
        .map((line) => JSON.parse(line) as Record<string, unknown>);
      // The plan's own lines, the chain's and the SDK's (LOG_LEVEL=debug): at least its ending and its activities.
      expect(about.length).toBeGreaterThan(2);
      for (const line of about) expect(line).toMatchObject({ plan_id: planId, workflow_id: `plan-${planId}` });
      expect(about.map((line) => line.msg)).toContain('plan ended: executed');
      // The SDK's own lines about the plan's workflow and activities are among them.
      expect(about.some((line) => line.msg === 'Activity completed' && line.activityType === 'executePlan')).toBe(true);
      expect(about.some((line) => line.msg === 'Workflow completed')).toBe(true);
    }
    const denied = lines.find((line) => line.msg.startsWith('P3.3 denied: reconcile_required_qty_mismatch'));
    expect(denied).toMatchObject({ plan_id: planIds[3], workflow_id: `plan-${planIds[3]}`, level: 'info' });
    expect(worker.output()).toContain(`Redis redis://***@127.0.0.1:${new URL(redisServer.url).port}/0`);
    expect(worker.output()).not.toContain(PASSWORD);
  });

  it('sends its traces to OTEL_EXPORTER_OTLP_ENDPOINT: the workflow and its activities', async () => {
    const seen = () => Buffer.concat(collector.bodies).toString('latin1');
    await eventually(
      () => Promise.resolve(seen().includes('RunActivity:executePlan') || undefined),
      30_000,
      'spans at the collector',
    );
    expect(seen()).toContain('RunWorkflow:permitChain');
    expect(seen()).toContain('permit-chain-worker');
  }, 40_000);

  it('answers /healthz and /readyz; when Redis refuses its password, /readyz says so (503) and the worker stops', async () => {
    expect(await get('/healthz')).toEqual({ status: 200, body: 'ok\n' });
    const ready = await get('/readyz');
    expect(ready.status).toBe(200);
    expect(ready.body).toBe('ready\nredis: ok\ntemporal: ok\nworker: ok\n');

    // The password is changed on the server; the worker's connections are dropped and come back with the old one.
    await h.close();
    await admin.config('SET', 'requirepass', ROTATED);
    await admin.client('KILL', 'TYPE', 'normal');
    await admin.client('KILL', 'TYPE', 'pubsub');
    const refused = await eventually(
      async () => {
        const answer = await get('/readyz');
        return answer.status === 503 ? answer : undefined;
      },
      10_000,
      '/readyz 503',
    );
    expect(refused.body).toMatch(
      /^not ready: redis: authentication refused: WRONGPASS .*\(check the user and password in REDIS_URL\)\n/,
    );
    expect(refused.body).toContain('temporal: ok\n');
    expect((await get('/healthz')).status).toBe(200);

    // A worker Redis refuses cannot run a layer: it stops, for the others to take its plans, and says why.
    expect(await worker.exited).toBe(1);
    const port = new URL(redisServer.url).port;
    expect(worker.stderr()).toMatch(
      new RegExp(
        `^permit-chain: Redis at redis://\\*\\*\\*@127\\.0\\.0\\.1:${port}/0: authentication refused: WRONGPASS .*\\(check the user and password in REDIS_URL\\)\\n$`,
      ),
    );
    for (const text of [refused.body, worker.output()]) {
      expect(text).not.toContain(PASSWORD);
      expect(text).not.toContain(ROTATED);
    }

    // Started with a password Redis refuses, a worker stops at once, before serving anything.
    const again = startCli(['worker'], env);
    expect(await again.exited).toBe(1);
    expect(again.stderr()).toMatch(/^permit-chain: Redis at redis:\/\/\*\*\*@.*: WRONGPASS .*REDIS_URL\)\n$/);
    expect(again.output()).not.toContain('metrics_url');
    expect(again.output()).not.toContain(PASSWORD);
  }, 60_000);
});

describe('the intake process with METRICS_PORT', () => {
  it('counts the entries it starts and dead-letters, their lag, and what is pending; ready while it reads', async () => {
    const intakeEnv = testEnv({ METRICS_PORT: '0', METRICS_HOST: '127.0.0.1' });
    const keys = redisKeys(intakeEnv.KEY_PREFIX);
    const redis = new Redis(intakeEnv.REDIS_URL);
    const plan = (qty: string) => [
      'action',
      'EXECUTE',
      'symbol',
      'XLMUSDT',
      'side',
      'SELL',
      'qty',
      qty,
      'source',
      'test',
    ];
    // An entry a consumer read and never acknowledged (it died): pending until another takes it over (30 s idle).
    await redis.xgroup('CREATE', keys.exitPlanStream, INTAKE_GROUP, '0', 'MKSTREAM');
    await redis.xadd(keys.exitPlanStream, '*', ...plan('0.9'));
    await redis.xreadgroup('GROUP', INTAKE_GROUP, 'dead-consumer', 'COUNT', 1, 'STREAMS', keys.exitPlanStream, '>');
    const intake = startCli(['intake', '--consumer', 'obs'], intakeEnv);
    try {
      const [, url] = await intake.waitFor(/"metrics_url":"(http:\/\/127\.0\.0\.1:\d+\/metrics)"/);
      metricsUrl = url ?? '';
      for (const qty of ['0.1', '0.2', '0.3']) await redis.xadd(keys.exitPlanStream, '*', ...plan(qty));
      await redis.xadd(keys.exitPlanStream, '*', ...plan('-1'));
      const text = await scrapeUntil((t) => sum(t, 'permit_chain_intake_entries_total') === 4, 'four entries taken');
      expect(sum(text, 'permit_chain_intake_entries_total', { result: 'started' })).toBe(3);
      expect(sum(text, 'permit_chain_intake_entries_total', { result: 'dead_lettered' })).toBe(1);
      expect(sum(text, 'permit_chain_intake_lag_seconds_count')).toBe(3);
      // Read from Redis at scrape time (and kept 5 s): once the four are taken, the dead consumer's entry alone is
      // pending, nothing unread, one dead letter.
      await scrapeUntil(
        (t) =>
          sum(t, 'permit_chain_intake_dead_letters') === 1 &&
          sum(t, 'permit_chain_intake_pending_entries') === 1 &&
          sum(t, 'permit_chain_intake_unread_entries') === 0,
        'one dead letter, one entry pending, nothing unread',
      );
      scraped.push(await scrape());
      const ready = await get('/readyz');
      expect(ready).toEqual({ status: 200, body: 'ready\nredis: ok\ntemporal: ok\nintake: ok\n' });
      expect(await intake.stop('SIGTERM')).toBe(0);
    } finally {
      await intake.stop('SIGKILL');
      redis.disconnect();
    }
  }, 60_000);
});

describe('deploy/prometheus/alerts.yml and deploy/grafana/permit-chain.json', () => {
  it('ask only for series the worker and the intake serve', () => {
    expect(scraped).toHaveLength(2);
    const served = new Set(
      scraped
        .join('\n')
        .match(/^# TYPE \S+/gm)
        ?.map((line) => line.slice('# TYPE '.length)),
    );
    for (const file of ['deploy/prometheus/alerts.yml', 'deploy/grafana/permit-chain.json']) {
      const asked = new Set(
        readFileSync(join(PROJECT_ROOT, file), 'utf8').match(/\b(permit_chain|temporal|process)_\w+/g),
      );
      expect(asked.size, file).toBeGreaterThan(5);
      for (const name of asked) {
        // A family named in a comment (`permit_chain_intake_*`) is not a series.
        if (name.endsWith('_')) continue;
        const base = name.replace(/_(bucket|count|sum)$/, '');
        expect(served.has(name) || served.has(base), `${file}: ${name}`).toBe(true);
      }
    }
  });
});
