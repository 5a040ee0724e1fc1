import { CancelledFailure } from '@temporalio/activity';
import { MockActivityEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createActivities } from '../../activities';
import type { ExchangeOrder, ExchangePort } from '../../activities/exchange/port';
import { createPaperExchange } from '../../activities/exchange/paper';
import { createGovernorActivities } from '../../activities/governor';
import { createFillsRecord, type FillsEntry } from '../../activities/ledger/fills';
import { createLedger } from '../../activities/ledger';
import { resetFailedPlan } from '../../client/operations';
import { startPlan } from '../../client/plans';
import { loadConfig } from '../../lib/config';
import { Dec } from '../../lib/decimal';
import type { ChainStatus, Plan } from '../../contract/types';
import { runCli } from '../../scripts/stack/cli-runner';
import { auditOf, chainHarness, makePlan, setPositions, testEnv, type ChainHarness } from '../helpers';

/**
 * The fills record (issue 18, item 3): the ledger moves at most once per exchange order, whatever key that guarded
 * it before is lost; and the send claim (items 5 and 6): the kill switch and a cancellation stop an order that waits
 * before it is sent. Real Redis, the real dev server, the paper exchange.
 */

const env = testEnv();
let h: ChainHarness;
let exchange: ExchangePort;
let layers: ReturnType<typeof createActivities>;
let governor: ReturnType<typeof createGovernorActivities>;

beforeAll(async () => {
  h = await chainHarness(loadConfig(env));
  exchange = createPaperExchange(h.redis, h.keys, Date.now);
  layers = over(exchange);
  governor = createGovernorActivities({ ...h, exchange, clock: Date.now, approverKeys: new Map() });
});
afterAll(() => h.close());

function over(port: ExchangePort) {
  return createActivities({
    redis: h.redis,
    config: h.config,
    exchange: port,
    clock: Date.now,
    approverKeys: new Map(),
  });
}

/** Both permits in place, as the Governor and P3.3 leave them for a plan that reaches Execute. */
async function permitted(symbol: string): Promise<Plan> {
  const plan = makePlan({ symbol, qty: '1' });
  expect(await governor.requestPermit({ plan, at: Date.now() })).toMatchObject({ kind: 'permit' });
  expect(await layers.checkPosition(plan)).toMatchObject({ allow: true });
  return plan;
}

const ledgerOf = (symbol: string) => h.redis.hget(h.keys.position(symbol), 'ledger_amount');

async function entryOf(symbol: string, orderId: string): Promise<FillsEntry | undefined> {
  const json = await h.redis.hget(h.keys.fills(symbol), orderId);
  return json === null ? undefined : (JSON.parse(json) as FillsEntry);
}

describe('the ledger moves once per order, with the execution record gone', () => {
  it('Execute again after its execution record was deleted: rebuilt from the fills record, the ledger not moved', async () => {
    await setPositions(h, 'FILLSAUSDT', '5', '5');
    const plan = await permitted('FILLSAUSDT');
    const first = await layers.executePlan(plan);
    expect(first).toMatchObject({ placed: true, ledger_amount: '4' });
    expect(await entryOf('FILLSAUSDT', `paper-${plan.plan_id}`)).toMatchObject({
      plan_id: plan.plan_id,
      applied: '1',
      filled_qty: '1',
      ledger_before: '5',
      ledger_after: '4',
    });
    const record = await h.redis.hgetall(h.keys.execution(plan.plan_id));

    await h.redis.del(h.keys.execution(plan.plan_id));
    const again = await layers.executePlan(plan);

    expect(again).toMatchObject({ placed: true, execution: { order_id: `paper-${plan.plan_id}`, filled_qty: '1' } });
    expect(await ledgerOf('FILLSAUSDT')).toBe('4');
    expect(await h.redis.hget(h.keys.paperPosition('FILLSAUSDT'), 'amount')).toBe('4');
    expect(await h.redis.hgetall(h.keys.execution(plan.plan_id))).toMatchObject({
      order_id: record.order_id,
      filled_qty: '1',
      ledger_applied: '1',
      ledger_before: '5',
    });
    expect((await auditOf(h, plan.plan_id)).map(([, decision]) => decision)).toContain('execution_rebuilt');
  });

  it('a reset of an executed plan to its first workflow task, with its execution record deleted: one order, one move', async () => {
    await setPositions(h, 'FILLSBUSDT', '5', '5');
    const plan = makePlan({ symbol: 'FILLSBUSDT', qty: '1' });
    await h.withWorker(async () => {
      const { handle } = await startPlan(h.client, h.config, plan);
      expect((await handle.result()).outcome).toBe('executed');
      expect(await ledgerOf('FILLSBUSDT')).toBe('4');

      await h.redis.del(h.keys.execution(plan.plan_id));
      const { runId } = await resetFailedPlan(h.client, h.redis, h.keys, plan.plan_id, 'test');
      const rerun = (await h.client.workflow.getHandle(handle.workflowId, runId).result()) as ChainStatus;
      expect(rerun.outcome).toBe('executed');
    });
    expect(await ledgerOf('FILLSBUSDT')).toBe('4');
    expect(await h.redis.hget(h.keys.paperPosition('FILLSBUSDT'), 'amount')).toBe('4');
    expect(await h.redis.hget(h.keys.execution(plan.plan_id), 'ledger_applied')).toBe('1');
    expect(await h.redis.hlen(h.keys.fills('FILLSBUSDT'))).toBe(1);
  });
});

describe('refused answers and reconcile', () => {
  const ledger = () => createLedger(h.redis, h.keys, Date.now);
  const fills = () => createFillsRecord(h.redis, h.keys, Date.now);
  const order = (plan: Plan, orderId: string): ExchangeOrder => ({
    order_id: orderId,
    client_order_id: plan.plan_id,
    symbol: plan.symbol,
    side: plan.side,
    qty: plan.qty,
    reduce_only: true,
    status: 'FILLED',
    filled_qty: plan.qty,
    avg_price: '1',
    placed_at: Date.now(),
  });

  it('a refused answer is never applied; a reconcile accounts for it; its order proven later does not move the ledger', async () => {
    await setPositions(h, 'FILLSCUSDT', '4', '5');
    const plan = makePlan({ symbol: 'FILLSCUSDT', qty: '1' });
    await fills().refuse(plan, {
      orderId: '77',
      clientOrderId: plan.plan_id,
      raw: '{"executedQty":"10"}',
      problems: ['x'],
    });
    expect(await entryOf('FILLSCUSDT', '77')).toMatchObject({ applied: 'refused', answer: '{"executedQty":"10"}' });
    expect(await ledgerOf('FILLSCUSDT')).toBe('5');

    await ledger().reconcile('FILLSCUSDT', new Dec(4), 'tester');
    expect(await ledgerOf('FILLSCUSDT')).toBe('4');
    expect(await entryOf('FILLSCUSDT', '77')).toMatchObject({ applied: 'reconcile' });
    expect((await auditOf(h, plan.plan_id)).map(([, decision]) => decision)).toEqual([
      'exchange_answer_refused',
      'fill_reconciled',
    ]);

    const recorded = await ledger().recordFill(plan, order(plan, '77'), '4');
    expect(recorded.applied).toBe('reconcile');
    expect(await ledgerOf('FILLSCUSDT')).toBe('4');
    expect(await entryOf('FILLSCUSDT', '77')).toMatchObject({ applied: 'reconcile', filled_qty: '1' });
  });

  it('a refused answer does not overwrite a believed fill under the same order id', async () => {
    await setPositions(h, 'FILLSDUSDT', '5', '5');
    const plan = makePlan({ symbol: 'FILLSDUSDT', qty: '1' });
    await ledger().recordFill(plan, order(plan, '88'), '5');
    expect(await ledgerOf('FILLSDUSDT')).toBe('4');
    await fills().refuse(makePlan({ symbol: 'FILLSDUSDT' }), {
      orderId: '88',
      clientOrderId: 'other',
      raw: '{}',
      problems: ['x'],
    });
    expect(await entryOf('FILLSDUSDT', '88')).toMatchObject({ plan_id: plan.plan_id, applied: '1' });
  });
});

describe('trimming the fills record', () => {
  it('removes only entries done with and older than the keep time, and writes the checkpoint', async () => {
    const now = Date.now();
    const entry = (applied: string, ageMs: number) =>
      JSON.stringify({ plan_id: 'p', order_id: 'o', applied, recorded_at: String(now - ageMs) });
    const day = 86_400_000;
    await h.redis.hset(h.keys.fills('TRIMUSDT'), {
      oldApplied: entry('1', 10 * day),
      oldHandSet: entry('hand_set', 10 * day),
      oldReconciled: entry('reconcile', 10 * day),
      oldUnapplied: entry('0', 10 * day),
      oldRefused: entry('refused', 10 * day),
      newApplied: entry('1', day),
    });
    const removed = await createFillsRecord(h.redis, h.keys, () => now).trim('TRIMUSDT', 3 * day);
    expect(removed).toBe(3);
    expect((await h.redis.hkeys(h.keys.fills('TRIMUSDT'))).sort()).toEqual([
      'newApplied',
      'oldRefused',
      'oldUnapplied',
    ]);
    expect(await h.redis.hgetall(h.keys.fillsCheckpoint('TRIMUSDT'))).toEqual({
      trimmed_before: String(now - 3 * day),
      at: String(now),
      trimmed: '3',
    });
    await expect(createFillsRecord(h.redis, h.keys, () => now).trim('TRIMUSDT', 0)).rejects.toThrow(/keepMs/);
  });
});

describe('the send claim', () => {
  it('the kill switch set while an order waits before its claim stops that order', async () => {
    await setPositions(h, 'CLAIMAUSDT', '5', '5');
    const plan = await permitted('CLAIMAUSDT');
    let release = () => {};
    const held = new Promise<void>((resolve) => (release = resolve));
    let reading = () => {};
    const reached = new Promise<void>((resolve) => (reading = resolve));
    // Execute's first look (the gate, the order, the position) is done; the position's read is held before the claim.
    const slow: ExchangePort = {
      ...exchange,
      async getPosition(symbol) {
        reading();
        await held;
        return exchange.getPosition(symbol);
      },
    };
    const result = over(slow).executePlan(plan);
    await reached;
    await h.redis.set(h.keys.killSwitch, '1');
    release();
    try {
      expect(await result).toMatchObject({ placed: false, reason: 'kill_switch_active' });
    } finally {
      await h.redis.del(h.keys.killSwitch);
    }
    expect(await h.redis.exists(h.keys.paperOrder(plan.plan_id), h.keys.executeClaim(plan.plan_id))).toBe(0);
    expect(await ledgerOf('CLAIMAUSDT')).toBe('5');
    expect(await auditOf(h, plan.plan_id)).toContainEqual(['execute', 'refused', 'kill_switch_active']);
  });

  it('writes the claim before the order goes out', async () => {
    await setPositions(h, 'CLAIMBUSDT', '5', '5');
    const plan = await permitted('CLAIMBUSDT');
    let claimed: Record<string, string> = {};
    const watching: ExchangePort = {
      ...exchange,
      async placeMarketOrder(request) {
        claimed = await h.redis.hgetall(h.keys.executeClaim(plan.plan_id));
        return exchange.placeMarketOrder(request);
      },
    };
    expect(await over(watching).executePlan(plan)).toMatchObject({ placed: true });
    expect(claimed).toMatchObject({ symbol: 'CLAIMBUSDT' });
    expect(Number(claimed.claimed_at)).toBeGreaterThan(0);
  });

  it('a cancelled Execute activity sends nothing', async () => {
    await setPositions(h, 'CLAIMCUSDT', '5', '5');
    const plan = await permitted('CLAIMCUSDT');
    const env = new MockActivityEnvironment();
    env.cancel('CANCELLED');
    const err = await env.run(layers.executePlan, plan).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(CancelledFailure);
    expect(await h.redis.exists(h.keys.paperOrder(plan.plan_id), h.keys.executeClaim(plan.plan_id))).toBe(0);
    expect(await ledgerOf('CLAIMCUSDT')).toBe('5');
  });
});

describe('an order on the exchange with no execution record (a worker killed mid-Execute)', () => {
  it('position and reconcile name it, reconcile accounts for it, and its fill is counted once when the plan runs again', async () => {
    await setPositions(h, 'ORPHANUSDT', '5', '5');
    const plan = await permitted('ORPHANUSDT');
    // The order goes out; the worker dies before it records the fill.
    const dying: ExchangePort = {
      ...exchange,
      async placeMarketOrder(request) {
        await exchange.placeMarketOrder(request);
        throw new Error('worker killed');
      },
    };
    await expect(over(dying).executePlan(plan)).rejects.toThrow('worker killed');
    expect(await h.redis.exists(h.keys.execution(plan.plan_id))).toBe(0);
    expect(await h.redis.hget(h.keys.paperPosition('ORPHANUSDT'), 'amount')).toBe('4');

    // position and reconcile run in a worker, under its configuration.
    await h.withWorker(async () => {
      const shown = await runCli(['position', 'ORPHANUSDT'], env);
      expect(shown.stdout).toContain(
        `on the exchange, order paper-${plan.plan_id} of plan ${plan.plan_id}: FILLED 1 of 1 SELL, no execution record`,
      );
      const dry = await runCli(['reconcile', 'ORPHANUSDT', '--by', 'alice', '--dry-run'], env);
      expect(dry.stdout).toContain(
        `  order      order paper-${plan.plan_id} of plan ${plan.plan_id}: FILLED 1 of 1 SELL`,
      );

      const done = await runCli(['reconcile', 'ORPHANUSDT', '--by', 'alice', '--yes'], env);
      expect(done.code).toBe(0);
      expect(done.stdout).toContain(`accounted for order paper-${plan.plan_id} of plan ${plan.plan_id}`);
      expect(await ledgerOf('ORPHANUSDT')).toBe('4');
      expect(await entryOf('ORPHANUSDT', `paper-${plan.plan_id}`)).toMatchObject({
        plan_id: plan.plan_id,
        applied: 'reconcile',
        filled_qty: '1',
      });
      expect(await h.redis.hlen(h.keys.executeClaims('ORPHANUSDT'))).toBe(0);
      expect((await runCli(['position', 'ORPHANUSDT'], env)).stdout).not.toContain('on the exchange, order');
    });

    // The plan runs again (a retry or reset): it finds its order, and the ledger, which counts it, does not move.
    expect(await layers.executePlan(plan)).toMatchObject({ placed: true, ledger_amount: '4' });
    expect(await ledgerOf('ORPHANUSDT')).toBe('4');
    expect(await h.redis.hget(h.keys.execution(plan.plan_id), 'ledger_applied')).toBe('reconcile');
  });
});
