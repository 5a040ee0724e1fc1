import { TestWorkflowEnvironment } from '@temporalio/testing';
import type { WorkflowHandle } from '@temporalio/client';
import type { temporal } from '@temporalio/proto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it, inject } from 'vitest';
import { startPlan } from '../../client/plans';
import type { ChainConfig } from '../../lib/config';
import { redisKeys } from '../../contract/keys';
import { registerSearchAttributes } from '../../client/search-attributes';
import { testServerExecutable } from '../../cli/servers';
import { approveSignal, cancelSignal, planIdKey, retrySignal, statusQuery, symbolKey } from '../../contract/messages';
import { createChainWorker } from '../../workers/worker';
import { auditOf, makePlan, onceWritten, quietRuntime, setPositions, testApprovers, testConfig } from '../helpers';

/**
 * The chain's timers at their real lengths (TTL 60 s, margin 5 s, re-check 30 s; plan age 10 min), on the
 * time-skipping test server: ten minutes of a blocked plan pass in a few seconds. The activities still talk to the
 * real Redis.
 */
const config = testConfig({ PLAN_MAX_AGE_S: '600' });
const keys = redisKeys(config.keyPrefix);
let env: TestWorkflowEnvironment;
let redis: Redis;

beforeAll(async () => {
  quietRuntime();
  env = await TestWorkflowEnvironment.createTimeSkipping({ server: { executable: testServerExecutable() } });
  await registerSearchAttributes(env.connection, 'default');
  redis = new Redis(config.redisUrl);
});
afterAll(async () => {
  redis.disconnect();
  await env?.teardown();
});

/** The product's own worker factory, on the time-skipping server's connection. */
async function withWorker<T>(fn: () => Promise<T>, cfg: ChainConfig = config): Promise<T> {
  const worker = await createChainWorker({
    config: cfg,
    redis,
    connection: env.nativeConnection,
    workflowBundle: { codePath: inject('workflowBundlePath') },
  });
  return worker.runUntil(fn);
}

describe('permitChain with time skipping', () => {
  it('rests while blocked, asking the Governor once, and ends expired after PLAN_MAX_AGE_S', async () => {
    await setPositions({ redis, keys }, 'XRPUSDT', '100', '90');
    const plan = makePlan({ symbol: 'XRPUSDT', qty: '10' });
    const final = await withWorker(async () => {
      const { handle } = await startPlan(env.client, config, plan);
      return handle.result();
    });
    expect(final.outcome).toBe('expired');
    expect(final.p33?.reason).toBe('reconcile_required_qty_mismatch');
    // Ten minutes blocked: no permit kept, no Governor asked again, nothing published again.
    expect(final.attempts).toBe(1);
    expect((await auditOf({ redis, keys }, plan.plan_id)).map(([layer, decision]) => `${layer} ${decision}`)).toEqual([
      'governor granted',
      'apply published',
      'p33 denied',
    ]);
    // The fallback look comes every 10 re-check intervals (300 s): two in ten minutes, each one line at most.
    expect(final.timeline.length).toBeLessThan(15);
    expect(await redis.exists(keys.execution(plan.plan_id))).toBe(0);
  });

  it('asks the Governor again when retried after its permit expired, then executes', async () => {
    await setPositions({ redis, keys }, 'ADAUSDT', '50', '40');
    const plan = makePlan({ symbol: 'ADAUSDT', qty: '50' });
    const final = await withWorker(async () => {
      const { handle } = await startPlan(env.client, config, plan);
      await env.sleep('10s');
      const blocked = await handle.query(statusQuery);
      expect(blocked.stage).toBe('blocked');
      expect(blocked.attempts).toBe(1);
      await env.sleep('70s');
      await redis.hset(keys.position('ADAUSDT'), 'ledger_amount', '50');
      await handle.signal(retrySignal, { by: 'ops' });
      return handle.result();
    });
    expect(final.outcome).toBe('executed');
    expect(final.attempts).toBe(2);
    expect(await redis.hget(keys.position('ADAUSDT'), 'ledger_amount')).toBe('0');
  });
});

describe('manual approval with time skipping (production mode, real-length timers)', () => {
  const approvers = testApprovers('alice');
  const production = testConfig({ TRADING_MODE: 'production', APPROVERS: 'alice', APPROVER_KEYS_DIR: approvers.dir });
  /** alice's signed approval of what the plan shows now. */
  async function approval(handle: WorkflowHandle, note?: string) {
    const shown = (await handle.query(statusQuery)).awaiting;
    if (!shown) throw new Error('the plan is not awaiting approval');
    return approvers.sign(handle.workflowId.slice('plan-'.length), 'alice', shown, note ? { note } : {});
  }
  const pkeys = redisKeys(production.keyPrefix);

  it('ends expired when APPROVAL_TIMEOUT_S (600 s) passes without a decision', async () => {
    await setPositions({ redis, keys: pkeys }, 'BTCUSDT', '1', '1');
    const plan = makePlan({ symbol: 'BTCUSDT', qty: '1' });
    const startedAt = await env.currentTimeMs();
    const final = await withWorker(
      async () => (await startPlan(env.client, production, plan)).handle.result(),
      production,
    );
    expect(final.outcome).toBe('expired');
    expect(final.timeline.at(-1)?.detail).toBe('expired: no approval within 600s');
    expect((await env.currentTimeMs()) - startedAt).toBeGreaterThanOrEqual(600_000);
    expect(await redis.exists(pkeys.paperOrder(plan.plan_id))).toBe(0);
  });

  it('issues a fresh permit to a blocked, approved plan without asking while the positions match', async () => {
    await setPositions({ redis, keys: pkeys }, 'ETHUSDT', '0.062', '0.062');
    const plan = makePlan({ symbol: 'ETHUSDT', qty: '0.062' });
    // alice approves at 0.062/0.062; the ledger drifts the moment the Governor grants, so P3.3 blocks the plan.
    const drift = await onceWritten({ config: production }, pkeys.permit(plan.plan_id), () =>
      redis.hset(pkeys.position('ETHUSDT'), 'ledger_amount', '0.002'),
    );
    const final = await withWorker(async () => {
      try {
        const { handle } = await startPlan(env.client, production, plan);
        await env.sleep('1s');
        await handle.signal(approveSignal, await approval(handle));
        await env.sleep('10s');
        expect((await handle.query(statusQuery)).stage).toBe('blocked');
        await env.sleep('70s'); // the permit (55 s for the chain) ran out while blocked
        await redis.hset(pkeys.position('ETHUSDT'), 'ledger_amount', '0.062'); // back to what alice saw
        await handle.signal(retrySignal, {});
        return await handle.result();
      } finally {
        drift.stop();
      }
    }, production);
    expect(final.outcome).toBe('executed');
    expect(final.attempts).toBe(3); // asked, granted on the approval, granted again on the same approval
    expect(final.timeline.filter((t) => t.detail.startsWith('awaiting approval of'))).toHaveLength(1);
    expect(final.governor).toMatchObject({ granted: true, approved_by: 'alice' });
  });

  it('asks again when the positions moved since the approval', async () => {
    await setPositions({ redis, keys: pkeys }, 'SOLUSDT', '100', '90');
    const plan = makePlan({ symbol: 'SOLUSDT', qty: '10' });
    await withWorker(async () => {
      const { handle } = await startPlan(env.client, production, plan);
      await env.sleep('1s');
      await handle.signal(approveSignal, await approval(handle, 'exchange 100, ledger 90'));
      await env.sleep('10s');
      await redis.hset(pkeys.position('SOLUSDT'), 'ledger_amount', '100'); // reconciled: not what alice saw
      await handle.signal(retrySignal, {});
      await env.sleep('5s');
      const asked = await handle.query(statusQuery);
      expect(asked.stage).toBe('awaiting_approval');
      expect(asked.approval).toBeUndefined();
      expect(asked.awaiting).toMatchObject({ exchange_amount: '100', ledger_amount: '100' });
      expect(asked.timeline.at(-1)?.detail).toMatch(
        /^positions moved since the approval; awaiting approval of SELL 10/,
      );
      // End it before the worker stops: a workflow left with a pending task would hold the test server's clock.
      await handle.signal(cancelSignal, { by: 'test', reason: 'done' });
      expect((await handle.result()).outcome).toBe('cancelled');
    }, production);
    const governor = (await auditOf({ redis, keys: pkeys }, plan.plan_id)).filter(([layer]) => layer === 'governor');
    expect(governor.map(([, decision, reason]) => `${decision}:${reason}`)).toEqual([
      'approval_requested:approval_required',
      'granted:approved by alice',
      'approval_requested:approval_stale',
    ]);
  });
});

describe('rate limit with time skipping', () => {
  const limited = testConfig({ GOVERNOR_RATE_LIMIT: '1/60s' });
  const lkeys = redisKeys(limited.keyPrefix);

  it('makes plans over the limit wait for their slot instead of denying them', async () => {
    await setPositions({ redis, keys: lkeys }, 'DOGEUSDT', '3', '3');
    const plans = [1, 2, 3].map(() => makePlan({ symbol: 'DOGEUSDT', qty: '1' }));
    const startedAt = await env.currentTimeMs();
    const finals = await withWorker(async () => {
      const started = await Promise.all(plans.map((plan) => startPlan(env.client, limited, plan)));
      // One result at a time: each wait for a result lets the server skip time, and concurrent waits would lock it
      // again as soon as the first of them returns.
      const results = [];
      for (const { handle } of started) results.push(await handle.result());
      return results;
    }, limited);
    expect(finals.map((f) => f.outcome)).toEqual(['executed', 'executed', 'executed']);
    // 1 permit per 60 s: the third plan's permit came at least two windows after the first.
    expect((await env.currentTimeMs()) - startedAt).toBeGreaterThanOrEqual(120_000);
    const waited = finals.filter((f) =>
      f.timeline.some((t) => t.detail.startsWith('rate limit 1/60s on DOGEUSDT: waiting')),
    );
    expect(waited.length).toBe(2);
    expect(await redis.hget(lkeys.position('DOGEUSDT'), 'ledger_amount')).toBe('0');
  });
});

type HistoryEvent = temporal.api.history.v1.IHistoryEvent;

/**
 * Every run of a workflow, first to last, each with its own history fetched by run id: any run's start names the
 * first run, and each run that continued names the next.
 */
async function runsOf(workflowId: string) {
  const latest = await env.client.workflow.getHandle(workflowId).fetchHistory();
  const runs: { runId: string; events: number; continued: boolean }[] = [];
  let runId: string | undefined =
    latest.events?.[0]?.workflowExecutionStartedEventAttributes?.firstExecutionRunId ?? undefined;
  while (runId) {
    const history = await env.client.workflow.getHandle(workflowId, runId).fetchHistory();
    const events: HistoryEvent[] = history.events ?? [];
    const last: HistoryEvent | undefined = events.at(-1);
    runs.push({
      runId,
      events: events.length,
      continued: Boolean(last?.workflowExecutionContinuedAsNewEventAttributes),
    });
    runId = last?.workflowExecutionContinuedAsNewEventAttributes?.newExecutionRunId ?? undefined;
  }
  return runs;
}

describe('plans that wait long continue as new (time skipping)', () => {
  /** The default threshold: 2,000 events. */
  const THRESHOLD = 2000;
  const week = testConfig({ PLAN_MAX_AGE_S: String(8 * 24 * 3600), RECHECK_INTERVAL_S: '30' });
  const wkeys = redisKeys(week.keyPrefix);

  it('keeps every run of a plan blocked for 7 days under the threshold, then executes it once', async () => {
    await setPositions({ redis, keys: wkeys }, 'BTCUSDT', '0.062', '0.002');
    const plan = makePlan({ symbol: 'BTCUSDT', qty: '0.062' });
    const startedAt = await env.currentTimeMs();
    const { final, workflowId, carried } = await withWorker(async () => {
      const { handle } = await startPlan(env.client, week, plan);
      await env.sleep('7d');
      const carried = await handle.query(statusQuery);
      await redis.hset(wkeys.position('BTCUSDT'), 'ledger_amount', '0.062');
      await handle.signal(retrySignal, { by: 'ops' });
      const final = await handle.result();
      return { final, workflowId: handle.workflowId, carried };
    }, week);
    expect((await env.currentTimeMs()) - startedAt).toBeGreaterThanOrEqual(7 * 24 * 3600_000);

    const runs = await runsOf(workflowId);
    console.log(`7 days blocked: ${runs.length} runs of ${runs.map((run) => run.events).join(', ')} events`);
    // ~2,016 looks of ~6 events each: several runs, every one under the threshold.
    expect(runs.length).toBeGreaterThanOrEqual(5);
    for (const run of runs) expect(run.events, run.runId).toBeLessThan(THRESHOLD);
    expect(runs.slice(0, -1).every((run) => run.continued)).toBe(true);

    // After continuing: still blocked, with what the first run did (one permit, one publication) carried over.
    expect(carried.stage).toBe('blocked');
    expect(carried.attempts).toBe(1);
    expect(carried.apply?.stream_id).toBeTruthy();
    expect(carried.timeline[0]?.stage).toBe('governor');
    expect(carried.timeline.some((t) => /^continued as a new run after \d+ events$/.test(t.detail))).toBe(true);
    expect(carried.timeline.length).toBeLessThan(60);

    // Fixed and retried: executed once, one order, one Apply entry, exchange == ledger.
    expect(final.outcome).toBe('executed');
    expect(final.attempts).toBe(2);
    expect(await redis.exists(wkeys.paperOrder(plan.plan_id))).toBe(1);
    const entries = await redis.xrange(wkeys.applyStream, '-', '+');
    expect(entries.filter(([, fields]) => fields.includes(plan.plan_id))).toHaveLength(1);
    const exchange = await redis.hget(wkeys.paperPosition('BTCUSDT'), 'amount');
    expect(await redis.hget(wkeys.position('BTCUSDT'), 'ledger_amount')).toBe(exchange);
    expect(exchange).toBe('0');
    // Search attributes went along to the last run.
    const described = await env.client.workflow.getHandle(workflowId).describe();
    expect(described.typedSearchAttributes.get(planIdKey)).toBe(plan.plan_id);
    expect(described.typedSearchAttributes.get(symbolKey)).toBe('BTCUSDT');
  }, 240_000);

  it('ends a blocked plan expired PLAN_MAX_AGE_S after its first run started, across runs', async () => {
    const short = testConfig({ PLAN_MAX_AGE_S: String(24 * 3600), CONTINUE_AS_NEW_EVENTS: '200' });
    const skeys = redisKeys(short.keyPrefix);
    await setPositions({ redis, keys: skeys }, 'ETHUSDT', '1', '0');
    const plan = makePlan({ symbol: 'ETHUSDT', qty: '1' });
    const { final, runs } = await withWorker(async () => {
      const { handle } = await startPlan(env.client, short, plan);
      const final = await handle.result();
      return { final, runs: await runsOf(handle.workflowId) };
    }, short);
    expect(final.outcome).toBe('expired');
    expect(final.timeline.at(-1)?.detail).toBe('expired: still blocked after 86400s');
    expect(runs.length).toBeGreaterThan(3);
    // The first line is the first run's; the age counted across runs, not restarted by each.
    const age = (final.timeline.at(-1)?.at ?? 0) - (final.timeline[0]?.at ?? 0);
    expect(age).toBeGreaterThanOrEqual(24 * 3600_000 - 1000);
    expect(age).toBeLessThan(24 * 3600_000 + 600_000);
  }, 120_000);
});

describe('an awaiting-approval plan that continues as new (time skipping)', () => {
  const approvers = testApprovers('alice');
  const production = testConfig({
    TRADING_MODE: 'production',
    APPROVERS: 'alice',
    APPROVER_KEYS_DIR: approvers.dir,
    CONTINUE_AS_NEW_EVENTS: '200',
  });
  const pkeys = redisKeys(production.keyPrefix);

  it('keeps waiting with the same positions shown and still accepts a signed approval', async () => {
    await setPositions({ redis, keys: pkeys }, 'BNBUSDT', '2', '2');
    const plan = makePlan({ symbol: 'BNBUSDT', qty: '2' });
    const { final, runs, before, after } = await withWorker(async () => {
      const { handle } = await startPlan(env.client, production, plan);
      await env.sleep('1s');
      const before = await handle.query(statusQuery);
      if (!before.awaiting) throw new Error('the plan is not awaiting approval');
      // Signed now, over what the first run shows; sent after the plan has continued.
      const signed = approvers.sign(plan.plan_id, 'alice', before.awaiting, { note: 'signed before the continue' });
      // Messages grow the history of a waiting plan: 150 retries pass the threshold of 200 events.
      for (let i = 0; i < 150; i++) await handle.signal(retrySignal, { by: `nudge ${i}` });
      await env.sleep('1s');
      const after = await handle.query(statusQuery);
      const continued = (await runsOf(handle.workflowId)).length;
      if (continued < 2) throw new Error('the plan did not continue as new');
      await handle.signal(approveSignal, signed);
      const final = await handle.result();
      return { final, runs: await runsOf(handle.workflowId), before, after };
    }, production);
    expect(runs.length).toBeGreaterThanOrEqual(2);
    // Signals sent back to back, faster than a workflow task, make the server refuse the continue until the run has
    // seen them: a storm may overshoot the threshold by its own events (here ~10 %), never grow without bound.
    for (const run of runs) expect(run.events).toBeLessThan(300);
    expect(after.stage).toBe('awaiting_approval');
    expect(after.awaiting).toEqual(before.awaiting);
    expect(after.attempts).toBe(before.attempts);
    expect(final.outcome).toBe('executed');
    expect(final.governor).toMatchObject({ granted: true, approved_by: 'alice' });
    expect(final.timeline.some((t) => t.detail === 'approved by alice: signed before the continue')).toBe(true);
    expect(await redis.hget(pkeys.position('BNBUSDT'), 'ledger_amount')).toBe('0');
  }, 120_000);
});

describe('four eyes with time skipping (APPROVAL_QUORUM=2)', () => {
  const approvers = testApprovers('alice', 'bob');
  const quorum = testConfig({
    TRADING_MODE: 'production',
    APPROVERS: 'alice,bob',
    APPROVER_KEYS_DIR: approvers.dir,
    APPROVAL_QUORUM: '2',
    CONTINUE_AS_NEW_EVENTS: '200',
  });
  const qkeys = redisKeys(quorum.keyPrefix);

  it('keeps the first signature across continue-as-new and executes on the second approver', async () => {
    await setPositions({ redis, keys: qkeys }, 'XRPUSDT', '7', '7');
    const plan = makePlan({ symbol: 'XRPUSDT', qty: '7' });
    const { final, after, runs } = await withWorker(async () => {
      const { handle } = await startPlan(env.client, quorum, plan);
      await env.sleep('1s');
      const shown = (await handle.query(statusQuery)).awaiting;
      if (!shown) throw new Error('the plan is not awaiting approval');
      await handle.signal(approveSignal, approvers.sign(plan.plan_id, 'alice', shown));
      for (let i = 0; i < 150; i++) await handle.signal(retrySignal, { by: `nudge ${i}` });
      await env.sleep('1s');
      if ((await runsOf(handle.workflowId)).length < 2) throw new Error('the plan did not continue as new');
      const after = await handle.query(statusQuery);
      await handle.signal(approveSignal, approvers.sign(plan.plan_id, 'bob', shown));
      return { final: await handle.result(), after, runs: await runsOf(handle.workflowId) };
    }, quorum);
    expect(runs.length).toBeGreaterThanOrEqual(2);
    // The continued run still waits, with alice's signature held and one more needed.
    expect(after.stage).toBe('awaiting_approval');
    expect(after.approvals?.map((a) => a.by)).toEqual(['alice']);
    expect(after.quorum).toEqual({ required: 2, approvers: ['alice', 'bob'] });
    expect(final.outcome).toBe('executed');
    expect(final.governor).toMatchObject({ granted: true, approved_by: 'alice,bob' });
  }, 120_000);

  it('ends expired when only one of two signs within APPROVAL_TIMEOUT_S (600 s)', async () => {
    await setPositions({ redis, keys: qkeys }, 'LTCUSDT', '3', '3');
    const plan = makePlan({ symbol: 'LTCUSDT', qty: '3' });
    const final = await withWorker(async () => {
      const { handle } = await startPlan(env.client, quorum, plan);
      await env.sleep('1s');
      const shown = (await handle.query(statusQuery)).awaiting;
      if (!shown) throw new Error('the plan is not awaiting approval');
      await handle.signal(approveSignal, approvers.sign(plan.plan_id, 'bob', shown));
      return handle.result();
    }, quorum);
    expect(final.outcome).toBe('expired');
    expect(final.timeline.at(-1)?.detail).toBe('expired: no approval within 600s');
    expect(final.approvals?.map((a) => a.by)).toEqual(['bob']);
    expect(await redis.exists(qkeys.permit(plan.plan_id), qkeys.paperOrder(plan.plan_id))).toBe(0);
  });
});
