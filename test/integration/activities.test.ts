import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createActivities } from '../../activities';
import { APPLY_DEDUPE_TTL_S } from '../../activities/apply';
import type { CarriedRecord } from '../../activities/carry';
import { createPaperExchange } from '../../activities/exchange/paper';
import { createGovernorActivities } from '../../activities/governor';
import { WAITER_STALE_MS } from '../../activities/symbol-lock';
import { redisKeys } from '../../contract/keys';
import type { GovernorPermit, Plan } from '../../contract/types';
import { auditOf, makePlan, setPositions, testConfig } from '../helpers';

/** Carried records as a run writes them (test/unit/carried-format.test.ts reads them too). */
const CARRIED_FIXTURES = join(__dirname, '..', 'fixtures', 'carried');
/** The blocked plan's carried record (format 1), made a record of `plan`'s. */
function carriedRecordOf(plan: Plan, runId: string): CarriedRecord {
  const record = JSON.parse(readFileSync(join(CARRIED_FIXTURES, 'format-1-blocked.json'), 'utf8')) as CarriedRecord;
  record.workflow_id = `plan-${plan.plan_id}`;
  record.run_id = runId;
  record.state.status.plan_id = plan.plan_id;
  return record;
}
const config = testConfig({ PERMIT_TTL_S: '60', PERMIT_MARGIN_S: '5' });
const keys = redisKeys(config.keyPrefix);
let redis: Redis;
let layers: ReturnType<typeof createActivities>;
let governor: ReturnType<typeof createGovernorActivities>;

beforeAll(() => {
  redis = new Redis(config.redisUrl);
  const deps = { redis, config, exchange: createPaperExchange(redis, keys, Date.now), clock: Date.now };
  layers = createActivities({ ...deps, approverKeys: new Map() });
  governor = createGovernorActivities({ ...deps, approverKeys: new Map() });
});
afterAll(() => redis.disconnect());

/** The Governor's permit for a plan (testnet mode: it decides by itself). */
async function permitFor(plan: Plan): Promise<GovernorPermit> {
  const answer = await governor.requestPermit({ plan, at: Date.now() });
  if (answer.kind !== 'permit') throw new Error(`expected a permit, got ${answer.kind}`);
  return answer.permit;
}

/** Both permits in place, as the Governor and P3.3 would have left them. */
async function grantPermits(planId: string, symbol = 'BTCUSDT') {
  const plan = makePlan({ plan_id: planId, symbol });
  await permitFor(plan);
  const p33 = await layers.checkPosition(plan);
  expect(p33.allow).toBe(true);
  return plan;
}

async function paperOrderCount(): Promise<number> {
  return (await redis.keys(`${config.keyPrefix}:exchange:paper:order:*`)).length;
}

describe('Governor', () => {
  it('writes a granted permit with the TTL, and audits it', async () => {
    const plan = makePlan();
    const permit = await permitFor(plan);
    const stored = JSON.parse((await redis.get(keys.permit(plan.plan_id))) ?? 'null') as unknown;
    expect(stored).toEqual(permit);
    expect(permit).toMatchObject({ plan_id: plan.plan_id, granted: true, mode: 'testnet', symbol: 'BTCUSDT' });
    expect(permit.expires_at - permit.issued_at).toBe(60_000);
    const ttl = await redis.ttl(keys.permit(plan.plan_id));
    expect(ttl).toBeGreaterThan(55);
    expect(ttl).toBeLessThanOrEqual(60);
    expect(await auditOf({ redis, keys }, plan.plan_id)).toEqual([['governor', 'granted', 'testnet_auto_approved']]);
  });

  // Fails safe: any value but absent or `0` is on, whatever a person meant by it.
  it.each(['1', 'true', 'on', 'off', ''])('denies every permit while the kill switch holds %j', async (value) => {
    await redis.set(keys.killSwitch, value);
    try {
      const plan = makePlan();
      const permit = await permitFor(plan);
      expect(permit).toMatchObject({ granted: false, reason: 'kill_switch_active', approved_by: null });
      expect(await auditOf({ redis, keys }, plan.plan_id)).toEqual([['governor', 'denied', 'kill_switch_active']]);
    } finally {
      await redis.del(keys.killSwitch);
    }
  });
});

describe('Governor size limits', () => {
  it('denies a plan above the notional limit at the exchange price, and grants one within it', async () => {
    const limited = testConfig({ GOVERNOR_MAX_NOTIONAL: '1000', GOVERNOR_MAX_QTY_SIZEUSDT: '5' });
    const lkeys = redisKeys(limited.keyPrefix);
    const governor = createGovernorActivities({
      redis,
      config: limited,
      exchange: createPaperExchange(redis, lkeys, Date.now),
      clock: Date.now,
      approverKeys: new Map(),
    });
    await redis.set(lkeys.paperPrice('SIZEUSDT'), '97000.5');
    const big = await governor.requestPermit({ plan: makePlan({ symbol: 'SIZEUSDT', qty: '0.02' }), at: Date.now() });
    expect(big).toMatchObject({ kind: 'permit', permit: { granted: false, reason: 'size_limit_exceeded' } });
    const small = await governor.requestPermit({ plan: makePlan({ symbol: 'SIZEUSDT', qty: '0.01' }), at: Date.now() });
    expect(small).toMatchObject({ kind: 'permit', permit: { granted: true } });
    await redis.set(lkeys.paperPrice('SIZEUSDT'), '1');
    const many = await governor.requestPermit({ plan: makePlan({ symbol: 'SIZEUSDT', qty: '6' }), at: Date.now() });
    expect(many).toMatchObject({ kind: 'permit', permit: { granted: false, reason: 'size_limit_exceeded' } });
  });
});

describe('Apply', () => {
  it('publishes once and returns one id to 20 concurrent calls', async () => {
    const plan = makePlan({ symbol: 'APPLYUSDT' });
    const results = await Promise.all(Array.from({ length: 20 }, () => layers.publishPlan(plan, 'plan-x')));
    const ids = new Set(results.map((r) => r.stream_id));
    expect(ids.size).toBe(1);
    expect(results.filter((r) => r.published)).toHaveLength(1);
    const entries = await redis.xrange(keys.applyStream, '-', '+');
    const mine = entries.filter(([, fields]) => fields[1] === plan.plan_id);
    expect(mine).toHaveLength(1);
    expect(mine[0]?.[0]).toBe([...ids][0]);
    expect(await redis.get(keys.applyPublished(plan.plan_id))).toBe([...ids][0]);
    // No retention given to these activities: the record never expires (test/integration/store.test.ts: with one).
    expect(await redis.ttl(keys.applyPublished(plan.plan_id))).toBe(-1);
    // The existing system's dedupe key keeps its one day.
    expect(await redis.get(keys.applyDedupe(plan.plan_id))).toBe([...ids][0]);
    expect(await redis.ttl(keys.applyDedupe(plan.plan_id))).toBeGreaterThan(APPLY_DEDUPE_TTL_S - 60);
    expect(await auditOf({ redis, keys }, plan.plan_id)).toEqual([['apply', 'published', 'ok']]);
  });

  it('writes the entry fields the existing consumers read', async () => {
    const plan = makePlan({ symbol: 'FIELDUSDT', qty: '0.00000001', reduce_only: false, side: 'BUY' });
    const { stream_id } = await layers.publishPlan(plan, `plan-${plan.plan_id}`);
    const [entry] = await redis.xrange(keys.applyStream, stream_id, stream_id);
    const fields = Object.fromEntries(
      (entry?.[1] ?? []).flatMap((v, i, all) => (i % 2 === 0 ? [[v, all[i + 1]]] : [])),
    ) as Record<string, string>;
    expect(fields).toMatchObject({
      plan_id: plan.plan_id,
      symbol: 'FIELDUSDT',
      action: 'EXECUTE',
      side: 'BUY',
      qty: '0.00000001',
      reduce_only: 'false',
      source: 'test',
      workflow_id: `plan-${plan.plan_id}`,
    });
    expect(Date.parse(fields.published_at ?? '')).toBeGreaterThan(0);
  });
});

describe('P3.3', () => {
  it('denies the incident with the amounts in its permit', async () => {
    await setPositions({ redis, keys }, 'INCUSDT', '0.062', '0.002');
    const plan = makePlan({ symbol: 'INCUSDT' });
    const permit = await layers.checkPosition(plan);
    expect(permit).toMatchObject({
      allow: false,
      reason: 'reconcile_required_qty_mismatch',
      exchange_amount: '0.062',
      ledger_amount: '0.002',
      discrepancy: '0.06',
      tolerance: '0.001',
    });
    expect(JSON.parse((await redis.get(keys.p33Permit(plan.plan_id))) ?? 'null')).toEqual(permit);
    expect(await auditOf({ redis, keys }, plan.plan_id)).toEqual([
      ['p33', 'denied', 'reconcile_required_qty_mismatch'],
    ]);
  });
});

describe('P3.3, a blocked plan’s look', () => {
  it('is unsettled when it disagrees while another plan holds the symbol or the ledger moves; its own hold is not', async () => {
    await setPositions({ redis, keys }, 'PEEKUSDT', '2', '1');
    const plan = makePlan({ symbol: 'PEEKUSDT' });
    const disagree = {
      allow: false,
      reason: 'reconcile_required_qty_mismatch',
      exchange_amount: '2',
      ledger_amount: '1',
      tolerance: '0.001',
    };
    expect(await layers.peekPosition(plan)).toEqual(disagree);
    await redis.set(keys.symbolLock('PEEKUSDT'), 'feedfeedfeedfeed', 'PX', 10_000);
    expect(await layers.peekPosition(plan)).toEqual({ ...disagree, unsettled: 'feedfeedfeedfeed holds PEEKUSDT' });
    await redis.set(keys.symbolLock('PEEKUSDT'), plan.plan_id, 'PX', 10_000);
    expect(await layers.peekPosition(plan)).toEqual(disagree);
    await redis.del(keys.symbolLock('PEEKUSDT'));

    // A fill recorded while the look reads the exchange: the ledger it shows is the one read before, with the holder.
    const paper = createPaperExchange(redis, keys, Date.now);
    const recordedMeanwhile = createActivities({
      redis,
      config,
      clock: Date.now,
      approverKeys: new Map(),
      exchange: {
        ...paper,
        async getPosition(symbol) {
          const amount = await paper.getPosition(symbol);
          await redis.hset(keys.position(symbol), 'ledger_amount', '1.5', 'updated_at', String(Date.now()));
          return amount;
        },
      },
    });
    expect(await recordedMeanwhile.peekPosition(plan)).toEqual({
      ...disagree,
      unsettled: 'the ledger of PEEKUSDT moved meanwhile',
    });
    // Agreeing positions are never unsettled, whoever holds the symbol.
    await setPositions({ redis, keys }, 'PEEKUSDT', '2', '2');
    await redis.set(keys.symbolLock('PEEKUSDT'), 'feedfeedfeedfeed', 'PX', 10_000);
    expect(await layers.peekPosition(plan)).toMatchObject({ allow: true, reason: 'positions_reconciled' });
    expect((await layers.peekPosition(plan)).unsettled).toBeUndefined();
    await redis.del(keys.symbolLock('PEEKUSDT'));
  });
});

describe('Execute', () => {
  it('places one order and moves the ledger once, however often it is called', async () => {
    await setPositions({ redis, keys }, 'TWICEUSDT', '0.062', '0.062');
    await redis.set(keys.paperPrice('TWICEUSDT'), '97000.5');
    const plan = await grantPermits('a1a1a1a1a1a1a1a1', 'TWICEUSDT');
    const before = await paperOrderCount();
    const [first, ...others] = await Promise.all([1, 2, 3, 4, 5].map(() => layers.executePlan(plan)));
    const again = await layers.executePlan(plan);
    expect(first?.placed).toBe(true);
    for (const result of [...others, again]) expect(result).toEqual(first);
    expect((await paperOrderCount()) - before).toBe(1);
    expect(await redis.hget(keys.position('TWICEUSDT'), 'ledger_amount')).toBe('0');
    expect(await redis.hget(keys.paperPosition('TWICEUSDT'), 'amount')).toBe('0');
    expect(await redis.hgetall(keys.execution(plan.plan_id))).toMatchObject({
      order_id: 'paper-a1a1a1a1a1a1a1a1',
      client_order_id: plan.plan_id,
      status: 'FILLED',
      side: 'SELL',
      filled_qty: '0.062',
      avg_price: '97000.5',
    });
    const executes = (await auditOf({ redis, keys }, plan.plan_id)).filter(([layer]) => layer === 'execute');
    expect(executes).toEqual([['execute', 'executed', 'filled 0.062 @ 97000.5']]);
  });

  it.each([
    ['missing governor permit', 'permit_missing', async (planId: string) => redis.del(keys.permit(planId))],
    ['expired p33 permit', 'permit_missing', async (planId: string) => redis.del(keys.p33Permit(planId))],
    // 4 s left is inside the 5 s margin: too late to place an order.
    [
      'permit within the margin',
      'permit_expiring',
      async (planId: string) => redis.pexpire(keys.permit(planId), 4_000),
    ],
  ])('places no order with a %s', async (_case, reason, spoil) => {
    await setPositions({ redis, keys }, 'NOPEUSDT', '1', '1');
    const plan = await grantPermits(makePlan().plan_id, 'NOPEUSDT');
    await spoil(plan.plan_id);
    const before = await paperOrderCount();
    const result = await layers.executePlan(plan);
    expect(result).toMatchObject({ placed: false, reason });
    expect((await paperOrderCount()) - before).toBe(0);
    expect(await redis.exists(keys.execution(plan.plan_id))).toBe(0);
    expect(await redis.hget(keys.position('NOPEUSDT'), 'ledger_amount')).toBe('1');
    expect(await redis.hget(keys.paperPosition('NOPEUSDT'), 'amount')).toBe('1');
  });

  it.each(['true', 'on', 'false'])('places no order while the kill switch holds %j', async (value) => {
    await setPositions({ redis, keys }, 'KILLEXUSDT', '1', '1');
    const plan = await grantPermits(makePlan().plan_id, 'KILLEXUSDT');
    await redis.set(keys.killSwitch, value);
    try {
      expect(await layers.executePlan(plan)).toMatchObject({ placed: false, reason: 'kill_switch_active' });
    } finally {
      await redis.del(keys.killSwitch);
    }
    expect(await redis.exists(keys.paperOrder(plan.plan_id), keys.execution(plan.plan_id))).toBe(0);
    // `0` is the one value besides absent that means off.
    await redis.set(keys.killSwitch, '0');
    try {
      expect(await layers.executePlan(plan)).toMatchObject({ placed: true });
    } finally {
      await redis.del(keys.killSwitch);
    }
  });

  it('records an order already on the exchange even after its permits expired (crash after placing)', async () => {
    await setPositions({ redis, keys }, 'CRASHUSDT', '0.5', '0.5');
    const plan = await grantPermits(makePlan().plan_id, 'CRASHUSDT');
    const exchange = createPaperExchange(redis, keys, Date.now);
    await exchange.placeMarketOrder({
      symbol: 'CRASHUSDT',
      side: 'SELL',
      qty: plan.qty,
      reduceOnly: true,
      clientOrderId: plan.plan_id,
    });
    await redis.del(keys.permit(plan.plan_id), keys.p33Permit(plan.plan_id));
    const result = await layers.executePlan(plan);
    expect(result).toMatchObject({ placed: true, ledger_amount: '0.438' });
    expect(await redis.hget(keys.paperPosition('CRASHUSDT'), 'amount')).toBe('0.438');
  });

  it('keeps the ledger exact under concurrent fills on one symbol', async () => {
    await setPositions({ redis, keys }, 'MANYUSDT', '0', '0');
    const plans = await Promise.all(
      Array.from({ length: 10 }, async () => {
        const plan = makePlan({ symbol: 'MANYUSDT', side: 'BUY', qty: '0.00000001', reduce_only: false });
        await permitFor(plan);
        await layers.checkPosition(plan);
        return plan;
      }),
    );
    const results = await Promise.all(plans.map((plan) => layers.executePlan(plan)));
    expect(results.every((r) => r.placed)).toBe(true);
    expect(await redis.hget(keys.position('MANYUSDT'), 'ledger_amount')).toBe('0.0000001');
    expect(await redis.hget(keys.paperPosition('MANYUSDT'), 'amount')).toBe('0.0000001');
  });
});

describe('symbol lock', () => {
  it('serves waiters in arrival order and names the next one on release', async () => {
    const [a, b, c] = [1, 2, 3].map(() => makePlan({ symbol: 'LINEUSDT' }));
    if (!a || !b || !c) throw new Error('plans');
    expect(await layers.holdSymbol(a, 10_000)).toEqual({ held: true });
    expect(await layers.holdSymbol(b, 10_000)).toMatchObject({ held: false, holder: a.plan_id, ahead: 0 });
    expect(await layers.holdSymbol(c, 10_000)).toMatchObject({ held: false, holder: a.plan_id, ahead: 1 });
    expect(await layers.releaseSymbol(a)).toBe(b.plan_id);
    // The symbol is free, but c is behind b: it keeps waiting, and b gets it.
    expect(await layers.holdSymbol(c, 10_000)).toMatchObject({ held: false, holder: '', ahead: 1 });
    expect(await layers.holdSymbol(b, 10_000)).toEqual({ held: true });
    expect(await layers.releaseSymbol(b)).toBe(c.plan_id);
    expect(await layers.holdSymbol(c, 10_000)).toEqual({ held: true });
    expect(await layers.releaseSymbol(c)).toBe('');
    expect(await redis.exists(keys.symbolLock('LINEUSDT'), keys.symbolLine('LINEUSDT'))).toBe(0);
  });

  it('drops a waiter that stopped asking, so it cannot hold up the line', async () => {
    let now = Date.now();
    const exchange = createPaperExchange(redis, keys, () => now);
    const timed = createActivities({ redis, config, exchange, clock: () => now, approverKeys: new Map() });
    const [gone, next] = [1, 2].map(() => makePlan({ symbol: 'STALEUSDT' }));
    if (!gone || !next) throw new Error('plans');
    await redis.set(keys.symbolLock('STALEUSDT'), 'cafecafecafecafe', 'PX', 60_000);
    expect(await timed.holdSymbol(gone, 10_000)).toMatchObject({ held: false, ahead: 0 });
    expect(await timed.holdSymbol(next, 10_000)).toMatchObject({ held: false, ahead: 1 });
    await redis.del(keys.symbolLock('STALEUSDT'));
    now += WAITER_STALE_MS + 1; // `gone` never asks again
    expect(await timed.holdSymbol(next, 10_000)).toEqual({ held: true });
  });

  it('frees a crashed holder only when its lease runs out', async () => {
    const [holder, waiter] = [1, 2].map(() => makePlan({ symbol: 'CRASHLOCKUSDT' }));
    if (!holder || !waiter) throw new Error('plans');
    expect(await layers.holdSymbol(holder, 300)).toEqual({ held: true });
    const waiting = await layers.holdSymbol(waiter, 10_000);
    expect(waiting).toMatchObject({ held: false, holder: holder.plan_id });
    expect(waiting.held === false && waiting.leaseLeftMs).toBeLessThanOrEqual(300);
    await new Promise((r) => setTimeout(r, 350));
    expect(await layers.holdSymbol(waiter, 10_000)).toEqual({ held: true });
  });
});

describe('carried state between runs', () => {
  it('is written in format 1 and taken by the run that continues from it', async () => {
    const plan = makePlan();
    const { state } = carriedRecordOf(plan, 'run-1');
    const workflowId = `plan-${plan.plan_id}`;
    await layers.carryOver({ workflowId, runId: 'run-1', state });
    const stored = JSON.parse((await redis.get(keys.carriedState(plan.plan_id))) ?? 'null') as Record<string, unknown>;
    expect(stored).toMatchObject({ format: 1, workflow_id: workflowId, run_id: 'run-1' });
    const taken = await layers.resumeCarried({ workflowId, previousRunId: 'run-1', planId: plan.plan_id });
    expect(taken).toEqual({ carried: state });
  });

  it('refuses a format it does not read, audited with the format named', async () => {
    const plan = makePlan();
    const workflowId = `plan-${plan.plan_id}`;
    await redis.set(keys.carriedState(plan.plan_id), JSON.stringify({ ...carriedRecordOf(plan, 'run-1'), format: 2 }));
    const taken = await layers.resumeCarried({ workflowId, previousRunId: 'run-1', planId: plan.plan_id });
    const why = 'the state is in format 2, which this build does not read (it reads format 1)';
    expect(taken).toEqual({ carried: null, why });
    expect(await auditOf({ redis, keys }, plan.plan_id)).toEqual([['governor', 'carry_refused', why]]);
  });
});
