import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createActivities } from '../../activities';
import { APPLY_DEDUPE_TTL_S, APPLY_RECORD_MARGIN_S, applyRecordTtlS } from '../../activities/apply';
import { createPaperExchange } from '../../activities/exchange/paper';
import { startPlan } from '../../client/plans';
import { redisKeys } from '../../contract/keys';
import { ConfigError, loadConfig } from '../../lib/config';
import { freePort, startRedis, temporalCliExecutable, type RunningRedis } from '../../cli/servers';
import { ChainMetrics } from '../../workers/metrics';
import { StreamTrimmer, evictionRisk } from '../../workers/redis-store';
import { applyRecordLife } from '../../workers/retention';
import type { permitChain } from '../../workflows';
import { runCli, startCli } from '../../scripts/stack/cli-runner';
import {
  auditOf,
  chainHarness,
  eventually,
  makePlan,
  pairs,
  setPositions,
  testConfig,
  testEnv,
  waitForStage,
  type ChainHarness,
} from '../helpers';

let h: ChainHarness;

beforeAll(async () => {
  h = await chainHarness(testConfig());
});
afterAll(() => h?.close());

/** The Apply stream's entries of one plan. */
async function applyEntriesOf(planId: string): Promise<string[]> {
  const entries = await h.redis.xrange(h.keys.applyStream, '-', '+');
  return entries.filter(([, fields]) => Object.fromEntries(pairs(fields)).plan_id === planId).map(([id]) => id);
}

/** The retention of the tests' namespace, as Temporal reports it, in seconds. */
async function retentionS(namespace: string): Promise<number> {
  const described = await h.client.workflowService.describeNamespace({ namespace });
  return Number(described.config?.workflowExecutionRetentionTtl?.seconds?.toString() ?? 0);
}

/** The Temporal CLI, as an operator runs it against the tests' server. */
function temporalCli(...args: string[]) {
  const cli = temporalCliExecutable();
  if (cli.type !== 'existing-path') throw new Error('no Temporal CLI in .tools: bash scripts/setup.sh --tests');
  const run = spawnSync(cli.path, [...args, '--address', h.config.temporalAddress], { encoding: 'utf8' });
  return { code: run.status, output: `${run.stdout}${run.stderr}` };
}

describe("Apply's once-only record", () => {
  it('lives the retention + PLAN_MAX_AGE_S + a day; never expires without a bounded retention', () => {
    expect(applyRecordTtlS(86_400, 3600)).toBe(86_400 + 3600 + APPLY_RECORD_MARGIN_S);
    expect(applyRecordTtlS(3 * 86_400, 2_592_000)).toBe(3 * 86_400 + 2_592_000 + 86_400);
    expect(applyRecordTtlS(null, 3600)).toBeNull();
    expect(applyRecordTtlS(0, 3600)).toBeNull();
  });

  it("follows the namespace's retention as Temporal reports it, and says when it cannot read it", async () => {
    const namespace = `store-${randomBytes(4).toString('hex')}`;
    const created = temporalCli('operator', 'namespace', 'create', '--namespace', namespace, '--retention', '72h');
    expect(created.code, created.output).toBe(0);
    const life = await applyRecordLife(h.client.workflowService, { temporalNamespace: namespace, planMaxAgeS: 7200 });
    expect(life).toEqual({
      retentionS: 3 * 86_400,
      ttlS: 3 * 86_400 + 7200 + 86_400,
      line: `worker: Apply's once-only records live ${3 * 86_400 + 7200 + 86_400}s: namespace ${namespace}'s retention 259200s + PLAN_MAX_AGE_S 7200s + a day`,
    });
    const updated = temporalCli('operator', 'namespace', 'update', '--namespace', namespace, '--retention', '240h');
    expect(updated.code, updated.output).toBe(0);
    const longer = await applyRecordLife(h.client.workflowService, { temporalNamespace: namespace, planMaxAgeS: 7200 });
    expect(longer.ttlS).toBe(10 * 86_400 + 7200 + 86_400);

    const unknown = await applyRecordLife(h.client.workflowService, {
      temporalNamespace: `no-such-${namespace}`,
      planMaxAgeS: 7200,
    });
    expect(unknown.ttlS).toBeNull();
    expect(unknown.line).toMatch(
      new RegExp(
        `^worker: Apply's once-only records never expire: the retention of namespace no-such-${namespace} cannot be read \\(.*not found.*\\)$`,
        'i',
      ),
    );
  });

  it('is written with that TTL, made to last the full TTL again by a later call, and never shortened', async () => {
    const keys = redisKeys(h.config.keyPrefix);
    const exchange = createPaperExchange(h.redis, keys, Date.now);
    const deps = { redis: h.redis, config: h.config, exchange, clock: Date.now, approverKeys: new Map() };
    const apply = createActivities({ ...deps, applyRecordTtlS: 100_000 });
    const plan = makePlan({ symbol: 'TTLUSDT' });
    const record = keys.applyPublished(plan.plan_id);
    const first = await apply.publishPlan(plan, 'plan-x');
    expect(first.published).toBe(true);
    expect(await h.redis.ttl(record)).toBeGreaterThan(99_990);
    // Most of its life gone, a reset run publishes again: the same id, nothing added, the full life again.
    await h.redis.expire(record, 60);
    expect(await apply.publishPlan(plan, 'plan-x')).toEqual({ stream_id: first.stream_id, published: false });
    expect(await h.redis.ttl(record)).toBeGreaterThan(99_990);
    // A worker told a shorter retention does not shorten it; one that knows no bound makes it permanent.
    await createActivities({ ...deps, applyRecordTtlS: 5000 }).publishPlan(plan, 'plan-x');
    expect(await h.redis.ttl(record)).toBeGreaterThan(99_990);
    await createActivities({ ...deps, applyRecordTtlS: null }).publishPlan(plan, 'plan-x');
    expect(await h.redis.ttl(record)).toBe(-1);
    expect(await applyEntriesOf(plan.plan_id)).toEqual([first.stream_id]);
  });

  it('keeps a reset executed plan from publishing twice, long after the day the old record lived', async () => {
    await setPositions(h, 'RESETUSDT', '1', '1');
    const plan = makePlan({ symbol: 'RESETUSDT', qty: '0.01' });
    const record = h.keys.applyPublished(plan.plan_id);
    const retention = await retentionS(h.config.temporalNamespace);
    expect(retention).toBeGreaterThan(0);
    const { reset, again } = await h.withWorker(async () => {
      const { handle } = await startPlan(h.client, h.config, plan);
      const first = await handle.result();
      expect(first.outcome).toBe('executed');
      const { runId: firstRun } = await handle.describe();
      expect(await h.redis.ttl(record)).toBeGreaterThanOrEqual(retention + h.config.planMaxAgeS);
      // The existing system's one-day dedupe key is written too, and is not what guards the stream.
      const dedupeTtl = await h.redis.ttl(h.keys.applyDedupe(plan.plan_id));
      expect(dedupeTtl).toBeGreaterThan(APPLY_DEDUPE_TTL_S - 60);
      expect(dedupeTtl).toBeLessThanOrEqual(APPLY_DEDUPE_TTL_S);
      // Days later, the dedupe key gone and the record a moment from its end: `temporal workflow reset` to the first
      // workflow task.
      await h.redis.del(h.keys.applyDedupe(plan.plan_id));
      await h.redis.expire(record, 120);
      const reset = temporalCli(
        'workflow',
        'reset',
        '--namespace',
        h.config.temporalNamespace,
        '--workflow-id',
        handle.workflowId,
        '--type',
        'FirstWorkflowTask',
        '--reason',
        'store test: reset of an executed plan',
      );
      const current = h.client.workflow.getHandle<typeof permitChain>(handle.workflowId);
      const again = await current.result();
      expect((await current.describe()).runId).not.toBe(firstRun);
      return { reset, again };
    });
    expect(reset.code, reset.output).toBe(0);
    expect(again.outcome).toBe('executed');
    expect(await applyEntriesOf(plan.plan_id)).toHaveLength(1);
    const audit = await auditOf(h, plan.plan_id);
    // The reset run went through the chain again (a second permit), and Apply added nothing.
    expect(audit.filter(([layer, decision]) => layer === 'governor' && decision === 'granted')).toHaveLength(2);
    expect(audit.filter(([layer]) => layer === 'apply')).toEqual([['apply', 'published', 'ok']]);
    // The reset run's Apply made the record last the retention and the plan's life again from now.
    expect(await h.redis.ttl(record)).toBeGreaterThanOrEqual(retention + h.config.planMaxAgeS);
    // One order, one ledger move.
    expect(await h.redis.hget(h.keys.paperPosition('RESETUSDT'), 'amount')).toBe('0.99');
    expect(await h.redis.hget(h.keys.position('RESETUSDT'), 'ledger_amount')).toBe('0.99');
  }, 60_000);

  it('keeps a plan terminated after Apply from publishing again when reset', async () => {
    // P3.3 blocks the plan after Apply published it: the exchange and the ledger disagree.
    await setPositions(h, 'TERMUSDT', '1', '2');
    const plan = makePlan({ symbol: 'TERMUSDT', qty: '0.01' });
    await h.withWorker(async () => {
      const { handle } = await startPlan(h.client, h.config, plan);
      await waitForStage(h, handle.workflowId, 'blocked');
      await handle.terminate('store test: terminated while blocked');
      const reset = temporalCli(
        'workflow',
        'reset',
        '--namespace',
        h.config.temporalNamespace,
        '--workflow-id',
        handle.workflowId,
        '--type',
        'FirstWorkflowTask',
        '--reason',
        'store test: reset of a terminated plan',
      );
      expect(reset.code, reset.output).toBe(0);
      // The reset run goes through the Governor and Apply again, and rests blocked as the first did.
      await eventually(
        async () => {
          const granted = (await auditOf(h, plan.plan_id)).filter(([, decision]) => decision === 'granted');
          return granted.length === 2 ? true : undefined;
        },
        20_000,
        "the reset run's permit",
      );
      await waitForStage(h, handle.workflowId, 'blocked');
      await h.client.workflow.getHandle(handle.workflowId).terminate('store test: done');
    });
    expect(await applyEntriesOf(plan.plan_id)).toHaveLength(1);
    expect((await auditOf(h, plan.plan_id)).filter(([layer]) => layer === 'apply')).toEqual([
      ['apply', 'published', 'ok'],
    ]);
  }, 60_000);
});

describe('stream trims', () => {
  it('hold the audit and apply streams near their caps on real Redis, the newest entries kept, and count them', async () => {
    const config = testConfig({ AUDIT_STREAM_MAXLEN: '1000', APPLY_STREAM_MAXLEN: '2000' });
    const keys = redisKeys(config.keyPrefix);
    const fill = async (stream: string, n: number) => {
      for (let i = 0; i < n; i += 500) {
        const batch = h.redis.pipeline();
        for (let j = i; j < Math.min(n, i + 500); j++) batch.xadd(stream, '*', 'n', String(j));
        await batch.exec();
      }
    };
    await fill(keys.auditStream, 25_000);
    await fill(keys.applyStream, 3000);
    const metrics = new ChainMetrics({ processMetrics: false });
    const trimmer = new StreamTrimmer({
      redis: h.redis,
      config,
      trimmed: (stream, entries) => metrics.streamTrimmed.inc({ stream }, entries),
    });
    const removed = await trimmer.trimOnce();
    const auditLength = await h.redis.xlen(keys.auditStream);
    const applyLength = await h.redis.xlen(keys.applyStream);
    // `~` removes whole stream nodes (100 entries by default): at the cap or up to one node above it.
    expect(auditLength).toBeGreaterThanOrEqual(1000);
    expect(auditLength).toBeLessThanOrEqual(1100);
    expect(applyLength).toBeGreaterThanOrEqual(2000);
    expect(applyLength).toBeLessThanOrEqual(2100);
    expect(removed).toEqual({ audit: 25_000 - auditLength, apply: 3000 - applyLength });
    const [[, newest] = ['', []]] = await h.redis.xrevrange(keys.auditStream, '+', '-', 'COUNT', 1);
    expect(newest).toEqual(['n', '24999']);
    const counted = await metrics.streamTrimmed.get();
    expect(Object.fromEntries(counted.values.map((v) => [v.labels.stream, v.value]))).toEqual(removed);
    // At the cap, a trim removes nothing.
    expect(await trimmer.trimOnce()).toEqual({ audit: 0, apply: 0 });
  });
});

describe("the worker and Redis's maxmemory-policy", () => {
  let lru: RunningRedis;
  let admin: Redis;

  beforeAll(async () => {
    lru = await startRedis({ port: await freePort(), extraArgs: ['--maxmemory-policy', 'allkeys-lru'] });
    admin = new Redis(lru.url);
  });
  afterAll(async () => {
    admin?.disconnect();
    await lru?.stop();
  });

  it('refuses to start on allkeys-lru: exit 2, one line naming the policy and the fix', async () => {
    const run = await runCli(['worker'], testEnv({ REDIS_URL: lru.url }));
    expect(run.code).toBe(2);
    expect(run.stderr).toBe(
      'permit-chain: redis: maxmemory-policy is allkeys-lru: Redis may evict the keys that keep each plan once-only and the ledger; set maxmemory-policy noeviction on the Redis server, or REDIS_ALLOW_EVICTION=true to run with that risk\n',
    );
  }, 60_000);

  it('runs with REDIS_ALLOW_EVICTION=true, naming the risk in its log and /readyz; serves memory; trims', async () => {
    await admin.config('SET', 'maxmemory', String(256 * 1024 * 1024));
    const env = testEnv({
      REDIS_URL: lru.url,
      REDIS_ALLOW_EVICTION: 'true',
      AUDIT_STREAM_MAXLEN: '1000',
      METRICS_PORT: '0',
      METRICS_HOST: '127.0.0.1',
    });
    const keys = redisKeys(env.KEY_PREFIX);
    const batch = admin.pipeline();
    for (let i = 0; i < 5000; i++) batch.xadd(keys.auditStream, '*', 'n', String(i));
    await batch.exec();
    const worker = startCli(['worker'], env);
    try {
      const [, url = ''] = await worker.waitFor(/"metrics_url":"(http:\/\/127\.0\.0\.1:\d+)\/metrics"/);
      const risk =
        'maxmemory-policy is allkeys-lru, allowed by REDIS_ALLOW_EVICTION: Redis may evict the keys that keep each plan once-only and the ledger';
      expect(worker.output()).toContain(`"msg":"worker: ${risk}"`);
      const ready = await fetch(`${url}/readyz`);
      expect(ready.status).toBe(200);
      expect(await ready.text()).toBe(`ready\nredis: ok, at risk: ${risk}\ntemporal: ok\nworker: ok\n`);
      // Trimmed at start, to the cap or one stream node above it.
      const length = await eventually(
        async () => {
          const n = await admin.xlen(keys.auditStream);
          return n <= 1100 ? n : undefined;
        },
        20_000,
        'the audit stream trimmed',
      );
      expect(length).toBeGreaterThanOrEqual(1000);
      const text = await (await fetch(`${url}/metrics`)).text();
      expect(text).toContain(`permit_chain_stream_trimmed_entries_total{stream="audit"} ${5000 - length}\n`);
      expect(text).toContain(`permit_chain_redis_max_memory_bytes ${256 * 1024 * 1024}\n`);
      expect(text).toContain('permit_chain_redis_may_evict 1\n');
      const used = Number(/^permit_chain_redis_used_memory_bytes (\d+)$/m.exec(text)?.[1]);
      expect(used).toBeGreaterThan(100_000);
    } finally {
      expect(await worker.stop('SIGTERM')).toBe(0);
    }
  }, 90_000);

  it('refuses a Redis user that may not run INFO, naming the ACL to grant; runs with the risk when allowed', async () => {
    const config = testConfig();
    const password = randomBytes(8).toString('hex');
    const user = `noinfo-${randomBytes(3).toString('hex')}`;
    await h.redis.call('ACL', 'SETUSER', user, 'on', `>${password}`, '~*', '&*', '+@all', '-info');
    const url = new URL(config.redisUrl);
    const redis = new Redis({ host: url.hostname, port: Number(url.port), username: user, password });
    try {
      const refused = await evictionRisk(redis, config).then(
        () => undefined,
        (err: unknown) => err,
      );
      expect(refused).toBeInstanceOf(ConfigError);
      expect((refused as Error).message).toMatch(
        /^redis: maxmemory-policy cannot be read from INFO memory \(NOPERM .*info.*\): Redis may evict the keys that keep each plan once-only and the ledger; allow the INFO command to the worker's Redis user \(ACL \+info\) on a noeviction Redis, or REDIS_ALLOW_EVICTION=true to run with that risk$/,
      );
      expect(await evictionRisk(redis, { redisAllowEviction: true })).toMatch(
        /^maxmemory-policy cannot be read from INFO memory \(NOPERM .*\), allowed by REDIS_ALLOW_EVICTION: Redis may evict/,
      );
    } finally {
      redis.disconnect();
      await h.redis.call('ACL', 'DELUSER', user);
    }
  });

  it('starts on noeviction without a word about eviction', async () => {
    const config = loadConfig(testEnv());
    const redis = new Redis(config.redisUrl);
    try {
      expect(await evictionRisk(redis, config)).toBeUndefined();
    } finally {
      redis.disconnect();
    }
  });
});
