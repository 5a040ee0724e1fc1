import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPlan } from '../../client/plans';
import { planWorkflowId, retrySignal, statusQuery } from '../../contract/messages';
import {
  auditOf,
  chainHarness,
  eventually,
  makePlan,
  pairs,
  setPositions,
  testConfig,
  type ChainHarness,
  waitForStage,
} from '../helpers';

let h: ChainHarness;
beforeAll(async () => {
  h = await chainHarness(testConfig());
});
afterAll(() => h.close());

describe('permitChain on the real dev server', () => {
  it('plays the incident: denied, reconciled, retried, executed, with the keys the operators read', async () => {
    await setPositions(h, 'BTCUSDT', '0.062', '0.002');
    const plan = makePlan({ symbol: 'BTCUSDT', side: 'SELL', qty: '0.062', reduce_only: true });
    await h.withWorker(async () => {
      const { workflowId, handle } = await startPlan(h.client, h.config, plan);
      expect(workflowId).toBe(`plan-${plan.plan_id}`);

      const blocked = await waitForStage(h, workflowId, 'blocked');
      expect(blocked.p33).toMatchObject({
        allow: false,
        reason: 'reconcile_required_qty_mismatch',
        exchange_amount: '0.062',
        ledger_amount: '0.002',
      });
      const p33Denied = JSON.parse((await h.redis.get(h.keys.p33Permit(plan.plan_id))) ?? '{}') as { reason?: string };
      expect(p33Denied.reason).toBe('reconcile_required_qty_mismatch');
      expect(await h.redis.exists(h.keys.execution(plan.plan_id))).toBe(0);

      // The operator's fix, exactly as in the existing runbook.
      await h.redis.hset(h.keys.position('BTCUSDT'), 'ledger_amount', '0.062');
      await handle.signal(retrySignal, { by: 'ops' });
      const final = await handle.result();

      expect(final.outcome).toBe('executed');
      expect(final.stage).toBe('done');
      // A blocked plan keeps no permit: once the positions agree it asks the Governor for a fresh one.
      expect(final.attempts).toBe(2);
      expect(final.timeline.map((t) => t.stage)).toEqual(
        expect.arrayContaining(['governor', 'apply', 'p33', 'blocked', 'execute', 'done']),
      );
      expect(final.timeline.some((t) => t.detail === 'retry requested by ops')).toBe(true);
    });

    // What `redis-cli` shows the operators afterwards.
    const permit = JSON.parse((await h.redis.get(h.keys.permit(plan.plan_id))) ?? '{}') as Record<string, unknown>;
    expect(permit).toMatchObject({ plan_id: plan.plan_id, granted: true, symbol: 'BTCUSDT' });
    const p33 = JSON.parse((await h.redis.get(h.keys.p33Permit(plan.plan_id))) ?? '{}') as Record<string, unknown>;
    expect(p33).toMatchObject({ allow: true, exchange_amount: '0.062', ledger_amount: '0.062' });
    const [latest] = await h.redis.xrevrange(h.keys.applyStream, '+', '-', 'COUNT', 3);
    expect(Object.fromEntries(pairs(latest?.[1] ?? []))).toMatchObject({
      plan_id: plan.plan_id,
      side: 'SELL',
      qty: '0.062',
      workflow_id: `plan-${plan.plan_id}`,
    });
    expect(await h.redis.hgetall(h.keys.execution(plan.plan_id))).toMatchObject({
      client_order_id: plan.plan_id,
      status: 'FILLED',
      filled_qty: '0.062',
    });
    expect(await h.redis.hget(h.keys.paperPosition('BTCUSDT'), 'amount')).toBe('0');
    expect(await h.redis.hget(h.keys.position('BTCUSDT'), 'ledger_amount')).toBe('0');
    expect(await auditOf(h, plan.plan_id)).toEqual([
      ['governor', 'granted', 'testnet_auto_approved'],
      ['apply', 'published', 'ok'],
      ['p33', 'denied', 'reconcile_required_qty_mismatch'],
      ['governor', 'granted', 'testnet_auto_approved'],
      ['p33', 'allowed', 'positions_reconciled'],
      ['execute', 'executed', 'filled 0.062 @ 1'],
    ]);
  });

  it('runs the same plan submitted 10 times at once as one workflow, one stream entry, one order', async () => {
    await setPositions(h, 'ETHUSDT', '2', '2');
    const plan = makePlan({ symbol: 'ETHUSDT', qty: '0.5' });
    await h.withWorker(async () => {
      const starts = await Promise.all(Array.from({ length: 10 }, () => startPlan(h.client, h.config, plan)));
      const runIds = new Set(await Promise.all(starts.map(async (s) => (await s.handle.describe()).runId)));
      expect(runIds.size).toBe(1);
      const results = await Promise.all(starts.map((s) => s.handle.result()));
      expect(results.every((r) => r.outcome === 'executed')).toBe(true);
      // Once finished, another start of the same plan reaches the finished execution instead of running it again.
      const late = await startPlan(h.client, h.config, plan);
      expect((await late.handle.describe()).status.name).toBe('COMPLETED');
    });
    const executions = [];
    for await (const wf of h.client.workflow.list({ query: `WorkflowId = "${planWorkflowId(plan.plan_id)}"` })) {
      executions.push(wf);
    }
    expect(executions).toHaveLength(1);
    const entries = await h.redis.xrange(h.keys.applyStream, '-', '+');
    expect(entries.filter(([, f]) => f[1] === plan.plan_id)).toHaveLength(1);
    expect(await h.redis.exists(h.keys.paperOrder(plan.plan_id))).toBe(1);
    expect(await h.redis.hget(h.keys.position('ETHUSDT'), 'ledger_amount')).toBe('1.5');
    expect(await h.redis.hget(h.keys.paperPosition('ETHUSDT'), 'amount')).toBe('1.5');
  });

  it('keeps its search attributes current: blocked plans are found by ChainStage and Symbol', async () => {
    await setPositions(h, 'SOLUSDT', '3', '1');
    const plan = makePlan({ symbol: 'SOLUSDT', qty: '1' });
    await h.withWorker(async () => {
      const { workflowId, handle } = await startPlan(h.client, h.config, plan);
      await waitForStage(h, workflowId, 'blocked');
      const found = await eventually(
        async () => {
          const ids: string[] = [];
          const query = `ChainStage = "blocked" AND Symbol = "SOLUSDT" AND PlanId = "${plan.plan_id}"`;
          for await (const wf of h.client.workflow.list({ query })) ids.push(wf.workflowId);
          return ids.length > 0 ? ids : undefined;
        },
        15_000,
        'visibility of the blocked plan',
      );
      expect(found).toEqual([workflowId]);
      const description = await handle.describe();
      expect(await description.staticSummary()).toBe(`SELL 1 SOLUSDT reduce-only · plan ${plan.plan_id}`);
      await h.redis.hset(h.keys.position('SOLUSDT'), 'ledger_amount', '3');
      await handle.signal(retrySignal, {});
      expect((await handle.result()).outcome).toBe('executed');
      await eventually(
        async () => {
          const query = `ChainOutcome = "executed" AND ChainStage = "done" AND PlanId = "${plan.plan_id}"`;
          for await (const wf of h.client.workflow.list({ query })) return wf.workflowId;
          return undefined;
        },
        15_000,
        'visibility of the executed plan',
      );
    });
  });
});

describe('permit life on the real dev server (short TTLs)', () => {
  let short: ChainHarness;
  beforeAll(async () => {
    short = await chainHarness(testConfig({ PERMIT_TTL_S: '2', PERMIT_MARGIN_S: '1', RECHECK_INTERVAL_S: '1' }));
  });
  afterAll(() => short.close());

  it('rests while blocked past its permit: no Governor or Apply call until the positions agree, then one permit', async () => {
    await setPositions(short, 'BNBUSDT', '1', '0');
    const plan = makePlan({ symbol: 'BNBUSDT', qty: '1' });
    await short.withWorker(async () => {
      const { workflowId, handle } = await startPlan(short.client, short.config, plan);
      await waitForStage(short, workflowId, 'blocked');
      // Three permit lives (2 s each) pass while blocked: nothing is asked, nothing is published again.
      await new Promise((resolve) => setTimeout(resolve, 6_000));
      const resting = await handle.query(statusQuery);
      expect(resting.stage).toBe('blocked');
      expect(resting.attempts).toBe(1);
      expect(await auditOf(short, plan.plan_id)).toEqual([
        ['governor', 'granted', 'testnet_auto_approved'],
        ['apply', 'published', 'ok'],
        ['p33', 'denied', 'reconcile_required_qty_mismatch'],
      ]);
      await short.redis.hset(short.keys.position('BNBUSDT'), 'ledger_amount', '1');
      await handle.signal(retrySignal, { by: 'ops' });
      const final = await handle.result();
      expect(final.outcome).toBe('executed');
      expect(final.attempts).toBe(2);
    });
    const layers = (await auditOf(short, plan.plan_id)).map(([layer, decision]) => `${layer} ${decision}`);
    expect(layers.slice(3)).toEqual(['governor granted', 'p33 allowed', 'execute executed']);
    expect(await short.redis.hget(short.keys.position('BNBUSDT'), 'ledger_amount')).toBe('0');
  });
});
