import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createActivities } from '../../activities';
import { createGovernorActivities } from '../../activities/governor';
import { binanceClientOrderId } from '../../activities/exchange';
import { createBinanceExchange } from '../../activities/exchange/binance';
import { ANSWER_MAX_BYTES } from '../../activities/exchange/binance-session';
import type { ExchangePort } from '../../activities/exchange/port';
import type { FillsEntry } from '../../activities/ledger/fills';
import { startPlan } from '../../client/plans';
import { loadConfig } from '../../lib/config';
import type { ChainStatus, Plan } from '../../contract/types';
import { startBinanceDouble, type BinanceDouble, type Fault } from '../../scripts/binance-double/server';
import { auditOf, chainHarness, eventually, makePlan, testEnv, type ChainHarness } from '../helpers';

/**
 * Execute believes the exchange's answer about an order only when it matches the order sent (issue 18, item 1): the
 * whole chain (dev server, Redis, a worker) on the Binance double, with the double rewriting its order answers as a
 * hostile proxy would. The order itself is real on the double each time: the exchange's position moves, the ledger
 * moves only by what a believed answer says.
 */

let double: BinanceDouble;
let h: ChainHarness;

beforeAll(async () => {
  double = await startBinanceDouble();
  h = await chainHarness(
    loadConfig(
      testEnv({
        EXCHANGE: 'binance-usdm-testnet',
        BINANCE_BASE_URL: double.url,
        BINANCE_API_KEY: double.apiKey,
        BINANCE_API_SECRET: double.apiSecret,
        BINANCE_RECV_WINDOW_MS: '2000',
      }),
    ),
  );
});
afterAll(async () => {
  await h.close();
  await double.stop();
});

async function positions(symbol: string, amount: string): Promise<void> {
  double.setPosition(symbol, amount);
  await h.redis.hset(h.keys.position(symbol), 'ledger_amount', amount);
}

async function run(plan: Plan, ...faults: Fault[]): Promise<ChainStatus> {
  for (const fault of faults) double.injectFault(fault);
  return h.withWorker(async () => (await startPlan(h.client, h.config, plan)).handle.result());
}

async function fillsOf(plan: Plan): Promise<FillsEntry[]> {
  const hash = await h.redis.hgetall(h.keys.fills(plan.symbol));
  return Object.values(hash)
    .map((json) => JSON.parse(json) as FillsEntry)
    .filter((entry) => entry.plan_id === plan.plan_id);
}

const ordersOf = (plan: Plan) => double.orders().filter((o) => o.clientOrderId === binanceClientOrderId(plan.plan_id));
const onPost = (set: Record<string, unknown>): Fault => ({ kind: 'rewrite-answer', set, method: 'POST' });
const onLookup = (set: Record<string, unknown>): Fault => ({ kind: 'rewrite-answer', set, method: 'GET' });

describe('an order answer that does not match the order sent, and a lookup that says the same', () => {
  it.each<[string, Record<string, unknown>, RegExp]>([
    ['10x the executed quantity', { executedQty: '5.000' }, /executed qty 5 > 0\.5 sent/],
    ['a negative executed quantity', { executedQty: '-0.500' }, /executed qty "-0\.5" is not a decimal >= 0/],
    ['another symbol and side', { symbol: 'BTCUSDT', side: 'BUY' }, /symbol "BTCUSDT", sent ETHUSDT; side "BUY"/],
    ['a negative price', { avgPrice: '-5.00' }, /avg price "-5" is not a decimal >= 0/],
  ])('%s: the plan fails, the ledger does not move, the order is recorded refused', async (_, set, problem) => {
    await positions('ETHUSDT', '2');
    const plan = makePlan({ symbol: 'ETHUSDT', qty: '0.5' });
    const final = await run(plan, onPost(set), onLookup(set));

    expect(final.outcome).toBe('failed');
    expect(final.last_error).toMatch(problem);
    expect(final.last_error).toContain("the exchange's answer about the order of plan");
    expect(final.last_error).toContain(`permit-chain reconcile ETHUSDT --by NAME`);
    expect(final.last_error?.length).toBeLessThan(4096);
    expect(await h.redis.hget(h.keys.position('ETHUSDT'), 'ledger_amount')).toBe('2');
    expect(await h.redis.exists(h.keys.execution(plan.plan_id))).toBe(0);
    // One real order went out, and none again.
    expect(ordersOf(plan)).toHaveLength(1);
    const entries = await fillsOf(plan);
    expect(entries.length).toBeGreaterThan(0);
    expect(entries.every((entry) => entry.applied === 'refused' && entry.filled_qty === undefined)).toBe(true);
    expect(entries[0]?.problems).toMatch(problem);
    const refused = (await auditOf(h, plan.plan_id)).filter(([, decision]) => decision === 'exchange_answer_refused');
    expect(refused.length).toBeGreaterThan(0);
    expect(refused[0]?.[2]).toMatch(problem);
  });
});

describe('an answer refused, then proven by the lookup', () => {
  it('10x on the order answer, the truth on the lookup: executed by what the lookup proves', async () => {
    await positions('ETHUSDT', '2');
    const plan = makePlan({ symbol: 'ETHUSDT', qty: '0.5' });
    const final = await run(plan, onPost({ executedQty: '5.000' }));
    expect(final.outcome).toBe('executed');
    expect(final.execution).toMatchObject({ status: 'FILLED', filled_qty: '0.5' });
    expect(await h.redis.hget(h.keys.position('ETHUSDT'), 'ledger_amount')).toBe('1.5');
    const [order] = ordersOf(plan);
    const entry = JSON.parse(
      (await h.redis.hget(h.keys.fills('ETHUSDT'), String(order?.orderId))) ?? '{}',
    ) as FillsEntry;
    expect(entry).toMatchObject({ plan_id: plan.plan_id, applied: '1', filled_qty: '0.5', ledger_after: '1.5' });
    const decisions = (await auditOf(h, plan.plan_id)).map(([, decision]) => decision);
    expect(decisions).toContain('exchange_answer_refused');
    expect(decisions).toContain('executed');
  });

  it('a 2 MB order answer is not read: the order is looked up by client order id, and the lookup is applied', async () => {
    await positions('ETHUSDT', '2');
    const plan = makePlan({ symbol: 'ETHUSDT', qty: '0.5' });
    // Believable if it were parsed (half the order): the ledger moving by all of it shows it was not.
    const final = await run(plan, {
      kind: 'rewrite-answer',
      set: { executedQty: '0.250' },
      padTo: 2 * 1024 * 1024,
      method: 'POST',
    });
    expect(2 * 1024 * 1024).toBeGreaterThan(ANSWER_MAX_BYTES);
    expect(final.outcome).toBe('executed');
    expect(final.execution).toMatchObject({ filled_qty: '0.5' });
    expect(await h.redis.hget(h.keys.position('ETHUSDT'), 'ledger_amount')).toBe('1.5');
    expect(ordersOf(plan)).toHaveLength(1);
    expect(double.pendingFaults()).toEqual([]);
  });
});

describe('the post-trade check', () => {
  it('a fill after which the exchange and the ledger differ beyond the tolerance is flagged in status and audit', async () => {
    await positions('ETHUSDT', '2');
    const plan = makePlan({ symbol: 'ETHUSDT', qty: '0.5' });
    const binance = h.config.binance;
    if (!binance) throw new Error('the harness trades on the double');
    const real = createBinanceExchange({ name: 'binance-usdm-testnet', config: binance, redis: h.redis, keys: h.keys });
    // Something else trades the account right after the order: the position is 0.3 below what the fill left.
    const traded: ExchangePort = {
      ...real,
      async placeMarketOrder(request) {
        const order = await real.placeMarketOrder(request);
        double.setPosition('ETHUSDT', '1.2');
        return order;
      },
    };
    const final = await h.withWorker(
      async () => (await startPlan(h.client, h.config, plan)).handle.result(),
      undefined,
      { exchange: traded },
    );
    expect(final.outcome).toBe('executed');
    expect(await h.redis.hget(h.keys.position('ETHUSDT'), 'ledger_amount')).toBe('1.5');
    const mismatch = (await auditOf(h, plan.plan_id)).find(([, decision]) => decision === 'post_trade_mismatch');
    expect(mismatch?.[2]).toMatch(/exchange 1\.2 vs ledger 1\.5 .* discrepancy 0\.3 beyond tolerance/);
    expect(final.timeline.at(-1)?.detail).toMatch(/post-trade check: exchange 1\.2 vs ledger 1\.5/);
  });

  it('a fill after which they agree: no flag', async () => {
    await positions('ETHUSDT', '2');
    const plan = makePlan({ symbol: 'ETHUSDT', qty: '0.5' });
    const final = await run(plan);
    expect(final.outcome).toBe('executed');
    expect(final.timeline.at(-1)?.detail).not.toContain('post-trade');
    expect((await auditOf(h, plan.plan_id)).map(([, decision]) => decision)).not.toContain('post_trade_mismatch');
  });
});

describe("the kill switch at the Binance adapter's send claim", () => {
  it('set after Execute claimed the send but while the adapter still reads the account, it stops the order', async () => {
    await positions('ETHUSDT', '2');
    const binance = h.config.binance;
    if (!binance) throw new Error('the harness trades on the double');
    // A fresh adapter reads the position mode before its first order: the double holds that read for a second.
    const fresh = createBinanceExchange({
      name: 'binance-usdm-testnet',
      config: binance,
      redis: h.redis,
      keys: h.keys,
    });
    const deps = { redis: h.redis, config: h.config, exchange: fresh, clock: Date.now, approverKeys: new Map() };
    const layers = createActivities(deps);
    const plan = makePlan({ symbol: 'ETHUSDT', qty: '0.5' });
    expect(await createGovernorActivities(deps).requestPermit({ plan, at: Date.now() })).toMatchObject({
      kind: 'permit',
    });
    expect(await layers.checkPosition(plan)).toMatchObject({ allow: true });
    double.injectFault({ kind: 'delay', ms: 1000, path: '/fapi/v1/positionSide/dual' });
    const result = layers.executePlan(plan);
    await eventually(async () => ((await h.redis.exists(h.keys.executeClaim(plan.plan_id))) === 1 ? true : undefined));
    await h.redis.set(h.keys.killSwitch, '1');
    try {
      expect(await result).toMatchObject({ placed: false, reason: 'kill_switch_active' });
    } finally {
      await h.redis.del(h.keys.killSwitch);
    }
    expect(ordersOf(plan)).toEqual([]);
    expect(await h.redis.exists(h.keys.binanceSent(plan.plan_id))).toBe(0);
    expect(await h.redis.hexists(h.keys.executeClaims('ETHUSDT'), plan.plan_id)).toBe(0);
    expect(await h.redis.hget(h.keys.position('ETHUSDT'), 'ledger_amount')).toBe('2');
    expect(await auditOf(h, plan.plan_id)).toContainEqual(['execute', 'refused', 'kill_switch_active']);
  });
});

describe('answers read with a size bound', () => {
  it('a lookup answer over 64 KiB is not read: an error saying so, not an order', async () => {
    const binance = h.config.binance;
    if (!binance) throw new Error('the harness trades on the double');
    const adapter = createBinanceExchange({
      name: 'binance-usdm-testnet',
      config: binance,
      redis: h.redis,
      keys: h.keys,
    });
    await positions('ETHUSDT', '2');
    const plan = makePlan({ symbol: 'ETHUSDT', qty: '0.5' });
    expect((await run(plan)).outcome).toBe('executed');
    double.injectFault({ kind: 'rewrite-answer', padTo: ANSWER_MAX_BYTES + 1024, method: 'GET' });
    await expect(adapter.findOrder('ETHUSDT', plan.plan_id)).rejects.toThrow(
      /over its size bound or cut short: not read/,
    );
    // Within the bound, the same lookup is read.
    double.injectFault({ kind: 'rewrite-answer', padTo: ANSWER_MAX_BYTES - 1024, method: 'GET' });
    expect(await adapter.findOrder('ETHUSDT', plan.plan_id)).toMatchObject({ filled_qty: '0.5', status: 'FILLED' });
  });
});
