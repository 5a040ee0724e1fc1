import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ApplicationFailure } from '@temporalio/activity';
import type { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createActivities } from '../../activities';
import { exchangeFor } from '../../activities/exchange';
import { SEND_WINDOW_MARGIN_MS, createBinanceExchange, type BinanceExchange } from '../../activities/exchange/binance';
import { binanceClientOrderId } from '../../activities/exchange/binance-wire';
import {
  ExchangeAuthError,
  ExchangeBusyError,
  ExchangeUnknownError,
  UnknownSymbolError,
  type MarketOrderRequest,
} from '../../activities/exchange/port';
import { ruleViolation } from '../../activities/exchange/rules';
import { redisKeys } from '../../contract/keys';
import type { ChainConfig } from '../../lib/config';
import { connectRedis } from '../../lib/connections';
import { startBinanceDouble, type BinanceDouble, type BinanceDoubleOptions } from '../../scripts/binance-double/server';
import { makePlan, testConfig } from '../helpers';

/**
 * The Binance adapter against the double: real HTTP (signed by the library, checked by the double as Binance checks),
 * real Redis for the sent markers. Every key and secret here is the double's; no test reaches a real endpoint.
 */

const RECV_WINDOW_MS = 5000;
let redis: Redis;
const stops: (() => Promise<void>)[] = [];

beforeAll(async () => {
  redis = await connectRedis(testConfig());
});
afterAll(() => redis.disconnect());
afterEach(async () => {
  await Promise.all(stops.splice(0).map((stop) => stop()));
});

/** Credentials that the adapter's generic hex scrubbing would not hide: a message must not contain them at all. */
const credential = (what: string) => `${what}${randomBytes(24).toString('base64url')}`;

interface Setup {
  double: BinanceDouble;
  exchange: BinanceExchange;
  config: ChainConfig & { binance: NonNullable<ChainConfig['binance']> };
  keys: ReturnType<typeof redisKeys>;
  /** Moves the adapter's clock (not Binance's, not the library's). */
  advance(ms: number): void;
  /** The waits the adapter asked for between looks at an open order. */
  sleeps: number[];
}

async function setup(
  doubleOptions: BinanceDoubleOptions = {},
  adapter: { apiKey?: string; apiSecret?: string; env?: Record<string, string> } = {},
): Promise<Setup> {
  const double = await startBinanceDouble({
    apiKey: credential('DoubleKey'),
    apiSecret: credential('DoubleSecret'),
    ...doubleOptions,
  });
  stops.push(() => double.stop());
  const config = testConfig({
    EXCHANGE: 'binance-usdm-testnet',
    BINANCE_API_KEY: adapter.apiKey ?? double.apiKey,
    BINANCE_API_SECRET: adapter.apiSecret ?? double.apiSecret,
    BINANCE_BASE_URL: double.url,
    BINANCE_RECV_WINDOW_MS: String(RECV_WINDOW_MS),
    ...adapter.env,
  });
  const binance = config.binance;
  if (!binance || !binance.baseUrl.startsWith('http://127.0.0.1:')) throw new Error('tests only talk to the double');
  let ahead = 0;
  const sleeps: number[] = [];
  const keys = redisKeys(config.keyPrefix);
  const exchange = createBinanceExchange({
    name: 'binance-usdm-testnet',
    config: binance,
    redis,
    keys,
    clock: () => Date.now() + ahead,
    sleep: (ms) => {
      sleeps.push(ms);
      return Promise.resolve();
    },
  });
  return { double, exchange, config: { ...config, binance }, keys, advance: (ms) => (ahead += ms), sleeps };
}

const planId = () => randomBytes(8).toString('hex');
const request = (over: Partial<MarketOrderRequest> = {}): MarketOrderRequest => ({
  symbol: 'BTCUSDT',
  side: 'SELL',
  qty: '0.010',
  reduceOnly: true,
  clientOrderId: planId(),
  ...over,
});

/** The error a promise rejects with (failing the test if it resolves). */
async function failure(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof Error) return err;
    throw new Error(`rejected with a non-Error: ${typeof err}`);
  }
  return expect.fail('expected a rejection');
}

/** What no message may carry: the key, the secret, a signature (64 hex characters, or the signed URL's parameter). */
function expectClean(message: string, s: Pick<Setup, 'config'>) {
  expect(message).not.toContain(s.config.binance.apiKey.reveal());
  expect(message).not.toContain(s.config.binance.apiSecret.reveal());
  expect(message).not.toMatch(/signature=/i);
  expect(message).not.toMatch(/[0-9a-f]{64}/i);
}

describe('exchangeFor', () => {
  it('picks the Binance adapter for a Binance exchange, the paper exchange by default', async () => {
    const s = await setup();
    expect(exchangeFor(s.config, redis).name).toBe('binance-usdm-testnet');
    expect(exchangeFor(testConfig(), redis).name).toBe('paper');
    s.double.setPosition('ETHUSDT', '-0.250');
    expect((await exchangeFor(s.config, redis).getPosition('ETHUSDT')).toFixed()).toBe('-0.25');
  });
});

describe('binance adapter: positions, mark price, rules', () => {
  it('reads the one-way position as a signed decimal, zero when Binance lists none', async () => {
    const s = await setup();
    expect((await s.exchange.getPosition('BTCUSDT')).isZero()).toBe(true);
    s.double.setPosition('BTCUSDT', '0.062');
    expect((await s.exchange.getPosition('BTCUSDT')).toFixed()).toBe('0.062');
    s.double.setPosition('BTCUSDT', '-0.010');
    expect((await s.exchange.getPosition('BTCUSDT')).toFixed()).toBe('-0.01');
  });

  it('nets hedge mode: LONG + SHORT, SHORT negative', async () => {
    const s = await setup({ hedgeMode: true });
    s.double.setPosition('BTCUSDT', '0.100', 'LONG');
    s.double.setPosition('BTCUSDT', '-0.038', 'SHORT');
    expect((await s.exchange.getPosition('BTCUSDT')).toFixed()).toBe('0.062');
    s.double.setPosition('BTCUSDT', '0', 'LONG');
    expect((await s.exchange.getPosition('BTCUSDT')).toFixed()).toBe('-0.038');
  });

  it('gives the mark price exactly, and UnknownSymbolError for a symbol not listed', async () => {
    const s = await setup();
    s.double.setMarkPrice('BTCUSDT', '61234.56789');
    expect((await s.exchange.getPrice('BTCUSDT')).toFixed()).toBe('61234.56789');
    await expect(s.exchange.getPrice('NOPEUSDT')).rejects.toBeInstanceOf(UnknownSymbolError);
    await expect(s.exchange.getPosition('NOPEUSDT')).rejects.toBeInstanceOf(UnknownSymbolError);
  });

  it('reads the rules from exchangeInfo, keeps them BINANCE_RULES_REFRESH_S, reads again on a miss', async () => {
    const s = await setup({}, { env: { BINANCE_RULES_REFRESH_S: '300' } });
    expect(await s.exchange.getRules('BTCUSDT')).toEqual({
      symbol: 'BTCUSDT',
      step_size: '0.001',
      min_qty: '0.001',
      max_qty: '120',
      min_notional: '100',
    });
    s.double.setRules('BTCUSDT', { stepSize: '0.010', minQty: '0.010', minNotional: '5', marketMaxQty: '50' });
    s.advance(299_000);
    expect((await s.exchange.getRules('BTCUSDT')).step_size).toBe('0.001');
    s.advance(1_000);
    expect(await s.exchange.getRules('BTCUSDT')).toEqual({
      symbol: 'BTCUSDT',
      step_size: '0.01',
      min_qty: '0.01',
      max_qty: '50',
      min_notional: '5',
    });
    // Listed since the last read: found without waiting for the refresh.
    s.double.setRules('SOLUSDT', { stepSize: '1', minQty: '1', minNotional: '5' });
    expect((await s.exchange.getRules('SOLUSDT')).min_qty).toBe('1');
    const unknown = await failure(s.exchange.getRules('NOPEUSDT'));
    expect(unknown).toBeInstanceOf(UnknownSymbolError);
    expect(unknown.message).toBe('binance: NOPEUSDT is not listed on binance-usdm-testnet');
  });

  it('gives rules that refuse exactly what Binance refuses (the Governor’s ruleViolation on them)', async () => {
    const s = await setup();
    s.double.setRules('BTCUSDT', { stepSize: '0.005', minQty: '0.010', minNotional: '100', marketMaxQty: '2' });
    s.double.setPosition('BTCUSDT', '1.000');
    s.double.setMarkPrice('BTCUSDT', '8000');
    const rules = await s.exchange.getRules('BTCUSDT');
    const price = await s.exchange.getPrice('BTCUSDT');
    const cases: [string, boolean, string | null][] = [
      ['0.010', true, null],
      ['0.015', false, null],
      ['0.007', true, 'qty_step_violation'],
      ['0.005', true, 'below_min_qty'],
      ['2.005', false, 'above_max_qty'],
      // 0.010 × 8000 = 80 < 100; 0.015 × 8000 = 120.
      ['0.0100', false, 'below_min_notional'],
    ];
    for (const [qty, reduceOnly, reason] of cases) {
      const side = reduceOnly ? 'SELL' : 'BUY';
      expect(ruleViolation({ qty, reduceOnly }, rules, price)?.reason ?? null).toBe(reason);
      const order = await s.exchange.placeMarketOrder(request({ qty, reduceOnly, side }));
      expect([qty, order.status]).toEqual([qty, reason === null ? 'FILLED' : 'REJECTED']);
    }
  });
});

describe('binance adapter: orders', () => {
  it('places a reduce-only market order once, FILLED at the mark, and returns the same order on every retry', async () => {
    const s = await setup();
    s.double.setPosition('BTCUSDT', '0.062');
    const plan = request({ qty: '0.062' });
    const order = await s.exchange.placeMarketOrder(plan);
    expect(order).toMatchObject({
      client_order_id: plan.clientOrderId,
      symbol: 'BTCUSDT',
      side: 'SELL',
      qty: '0.062',
      reduce_only: true,
      status: 'FILLED',
      filled_qty: '0.062',
      avg_price: '60000',
    });
    expect(order.order_id).toMatch(/^\d+$/);
    expect(await s.exchange.placeMarketOrder(plan)).toEqual(order);
    expect(await s.exchange.findOrder('BTCUSDT', plan.clientOrderId)).toEqual(order);
    expect(s.double.orders().map((o) => [o.clientOrderId, o.reduceOnly, o.origQty])).toEqual([
      [plan.clientOrderId, true, '0.062'],
    ]);
    expect((await s.exchange.getPosition('BTCUSDT')).isZero()).toBe(true);
    expect(await s.exchange.findOrder('BTCUSDT', planId())).toBeNull();
  });

  it.each<[string, Partial<MarketOrderRequest>, string]>([
    ['reduce-only with no position (-2022)', { qty: '0.010' }, 'binance -2022: ReduceOnly Order is rejected.'],
    [
      'below the least notional (-4164)',
      { side: 'BUY', reduceOnly: false, qty: '0.001' },
      "binance -4164: Order's notional must be no smaller than 100 (unless you choose reduce only).",
    ],
    [
      'more decimals than the step (-1111)',
      { qty: '0.0105' },
      'binance -1111: Precision is over the maximum defined for this asset.',
    ],
    ['above the largest quantity (-4005)', { qty: '121' }, 'binance -4005: Quantity greater than max quantity.'],
  ])('resolves an order Binance refuses as REJECTED, with the reason: %s', async (_case, over, reason) => {
    const s = await setup();
    const order = await s.exchange.placeMarketOrder(request(over));
    expect(order).toMatchObject({ status: 'REJECTED', order_id: '', filled_qty: '0', reject_reason: reason });
    expect(s.double.orders()).toHaveLength(0);
  });

  it('after a refusal, a retry of the plan sends at once (the refusal is not an unknown result)', async () => {
    const s = await setup();
    const plan = request();
    expect((await s.exchange.placeMarketOrder(plan)).status).toBe('REJECTED');
    expect(await redis.exists(s.keys.binanceSent(plan.clientOrderId))).toBe(0);
    s.double.setPosition('BTCUSDT', '0.010');
    expect((await s.exchange.placeMarketOrder(plan)).status).toBe('FILLED');
    expect(s.double.orders()).toHaveLength(1);
  });

  it('orders in hedge mode by position side, never with reduceOnly', async () => {
    const s = await setup({ hedgeMode: true });
    s.double.setPosition('ETHUSDT', '1.000', 'LONG');
    s.double.setPosition('ETHUSDT', '-0.400', 'SHORT');
    const closeLong = await s.exchange.placeMarketOrder(request({ symbol: 'ETHUSDT', side: 'SELL', qty: '0.25' }));
    const closeShort = await s.exchange.placeMarketOrder(request({ symbol: 'ETHUSDT', side: 'BUY', qty: '0.4' }));
    const openLong = await s.exchange.placeMarketOrder(
      request({ symbol: 'ETHUSDT', side: 'BUY', qty: '0.1', reduceOnly: false }),
    );
    const openShort = await s.exchange.placeMarketOrder(
      request({ symbol: 'ETHUSDT', side: 'SELL', qty: '0.2', reduceOnly: false }),
    );
    expect([closeLong, closeShort, openLong, openShort].map((o) => [o.status, o.reduce_only])).toEqual([
      ['FILLED', true],
      ['FILLED', true],
      ['FILLED', false],
      ['FILLED', false],
    ]);
    expect(s.double.orders().map((o) => [o.side, o.positionSide, o.reduceOnly])).toEqual([
      ['SELL', 'LONG', false],
      ['BUY', 'SHORT', false],
      ['BUY', 'LONG', false],
      ['SELL', 'SHORT', false],
    ]);
    expect((await s.exchange.getPosition('ETHUSDT')).toFixed()).toBe('0.65');
    // Closing more SHORT than there is: Binance refuses the close, and so does the adapter's answer.
    const overshoot = await s.exchange.placeMarketOrder(request({ symbol: 'ETHUSDT', side: 'BUY', qty: '0.5' }));
    expect(overshoot).toMatchObject({
      status: 'REJECTED',
      reject_reason: 'binance -2022: ReduceOnly Order is rejected.',
    });
  });

  it('maps a 60-character plan id to one Binance accepts, and finds the order by the plan id', async () => {
    const s = await setup();
    s.double.setPosition('BTCUSDT', '0.010');
    const longId = `plan-${randomBytes(24).toString('hex')}`.slice(0, 60).padEnd(60, 'x');
    expect(longId).toHaveLength(60);
    const order = await s.exchange.placeMarketOrder(request({ clientOrderId: longId }));
    const mapped = binanceClientOrderId(longId);
    expect(mapped).not.toBe(longId);
    expect(order).toMatchObject({ status: 'FILLED', client_order_id: mapped });
    expect(s.double.orders().map((o) => o.clientOrderId)).toEqual([mapped]);
    expect(await s.exchange.findOrder('BTCUSDT', longId)).toEqual(order);
    expect(await s.exchange.placeMarketOrder(request({ clientOrderId: longId }))).toEqual(order);
    expect(s.double.orders()).toHaveLength(1);
  });
});

describe('binance adapter: every fault of the double', () => {
  it('a response lost after the fill: one order on the double, and the adapter returns it', async () => {
    const s = await setup();
    s.double.setPosition('BTCUSDT', '0.010');
    s.double.injectFault({ kind: 'lose-response-after-fill' });
    const plan = request();
    const order = await s.exchange.placeMarketOrder(plan);
    expect(order).toMatchObject({ status: 'FILLED', filled_qty: '0.01', client_order_id: plan.clientOrderId });
    expect(s.double.orders()).toHaveLength(1);
    expect(s.double.pendingFaults()).toEqual([]);
    expect(await s.exchange.placeMarketOrder(plan)).toEqual(order);
    expect(s.double.orders()).toHaveLength(1);
  });

  it('a 5xx after the order executed: one order, returned', async () => {
    const s = await setup();
    s.double.setPosition('BTCUSDT', '0.010');
    s.double.injectFault({ kind: 'http-5xx', status: 503, executed: true });
    const order = await s.exchange.placeMarketOrder(request());
    expect(order).toMatchObject({ status: 'FILLED', filled_qty: '0.01' });
    expect(s.double.orders()).toHaveLength(1);
  });

  it('429 on the order: ExchangeBusyError with Retry-After, no order, and the next call sends', async () => {
    const s = await setup();
    s.double.setPosition('BTCUSDT', '0.010');
    s.double.injectFault({ kind: 'rate-limit', status: 429, retryAfterS: 7, path: '/fapi/v1/order', method: 'POST' });
    const plan = request();
    const busy = await failure(s.exchange.placeMarketOrder(plan));
    expect(busy).toBeInstanceOf(ExchangeBusyError);
    expect((busy as ExchangeBusyError).retryAfterMs).toBe(7000);
    expect(busy.message).toContain('HTTP 429 -1003');
    expect(busy.message).toContain('retry after 7 s');
    expectClean(busy.message, s);
    expect(s.double.orders()).toHaveLength(0);
    expect(s.double.pendingFaults()).toEqual([]);
    expect((await s.exchange.placeMarketOrder(plan)).status).toBe('FILLED');
    expect(s.double.orders()).toHaveLength(1);
  });

  it('418 on a read: ExchangeBusyError for at least Retry-After, saying the IP is banned', async () => {
    const s = await setup();
    s.double.injectFault({ kind: 'rate-limit', status: 418, retryAfterS: 120 });
    const banned = await failure(s.exchange.getPrice('BTCUSDT'));
    expect(banned).toBeInstanceOf(ExchangeBusyError);
    expect((banned as ExchangeBusyError).retryAfterMs).toBeGreaterThanOrEqual(120_000);
    expect(banned.message).toContain('banned');
  });

  it('a 5xx on a read: ExchangeBusyError, nothing executed', async () => {
    const s = await setup();
    s.double.injectFault({ kind: 'http-5xx', status: 502, path: '/fapi/v3/positionRisk' });
    const busy = await failure(s.exchange.getPosition('BTCUSDT'));
    expect(busy).toBeInstanceOf(ExchangeBusyError);
    expect(busy.message).toContain('HTTP 502 -1001');
    expectClean(busy.message, s);
    expect((await s.exchange.getPosition('BTCUSDT')).isZero()).toBe(true);
  });

  it('-1021: resyncs the time and the request goes through once', async () => {
    const s = await setup();
    s.double.setPosition('BTCUSDT', '0.010');
    s.double.injectFault({ kind: 'timestamp', path: '/fapi/v1/order', method: 'POST' });
    const order = await s.exchange.placeMarketOrder(request());
    expect(order.status).toBe('FILLED');
    expect(s.double.orders()).toHaveLength(1);
    expect(s.double.pendingFaults()).toEqual([]);
  });

  it('a server clock far off: synced at the start, and again when it moves (-1021)', async () => {
    const s = await setup({ skewMs: 60_000 });
    s.double.setPosition('BTCUSDT', '0.010');
    expect((await s.exchange.getPosition('BTCUSDT')).toFixed()).toBe('0.01');
    s.double.setClockSkew(-45_000);
    expect((await s.exchange.placeMarketOrder(request())).status).toBe('FILLED');
    expect(s.double.orders()).toHaveLength(1);
  });

  it('a partial fill: the final order as the lookup says, EXPIRED with less than asked', async () => {
    const s = await setup();
    s.double.setPosition('BTCUSDT', '0.010');
    s.double.injectFault({ kind: 'partial-fill', fraction: 0.45 });
    const order = await s.exchange.placeMarketOrder(request());
    expect(order).toMatchObject({ status: 'EXPIRED', qty: '0.01', filled_qty: '0.004' });
    expect(s.sleeps).toHaveLength(1);
    expect(s.double.orders()).toHaveLength(1);
    expect((await s.exchange.getPosition('BTCUSDT')).toFixed()).toBe('0.006');
  });

  it('an order that expires unfilled: EXPIRED with 0', async () => {
    const s = await setup();
    s.double.setPosition('BTCUSDT', '0.010');
    s.double.injectFault({ kind: 'expire' });
    expect(await s.exchange.placeMarketOrder(request())).toMatchObject({ status: 'EXPIRED', filled_qty: '0' });
    expect((await s.exchange.getPosition('BTCUSDT')).toFixed()).toBe('0.01');
  });
});

describe('binance adapter: an unknown result is never followed by a blind resend', () => {
  it('not found right after: no resend until recvWindow + margin have passed since the request', async () => {
    const s = await setup();
    s.double.setPosition('BTCUSDT', '0.010');
    // Not executed, but the adapter cannot know: a 5xx on an order is Binance's "status unknown".
    s.double.injectFault({ kind: 'http-5xx', status: 500, path: '/fapi/v1/order', method: 'POST' });
    const plan = request();
    const first = await failure(s.exchange.placeMarketOrder(plan));
    expect(first).toBeInstanceOf(ExchangeUnknownError);
    expect(first.message).toContain('Binance has no such order yet');
    expect((first as ExchangeUnknownError).retryAfterMs).toBe(RECV_WINDOW_MS + SEND_WINDOW_MARGIN_MS);
    expectClean(first.message, s);
    const marker = await redis.hgetall(s.keys.binanceSent(plan.clientOrderId));
    expect(marker).toMatchObject({ recv_window_ms: String(RECV_WINDOW_MS), plan_id: plan.clientOrderId });
    expect(Number(marker.timestamp)).toBeGreaterThan(Date.now() - 60_000);

    // A retry at once, and one just inside the window: looked up, not sent.
    const again = await failure(s.exchange.placeMarketOrder(plan));
    expect(again).toBeInstanceOf(ExchangeUnknownError);
    s.advance(RECV_WINDOW_MS + SEND_WINDOW_MARGIN_MS - 2000);
    expect(await failure(s.exchange.placeMarketOrder(plan))).toBeInstanceOf(ExchangeUnknownError);
    expect(s.double.orders()).toHaveLength(0);

    s.advance(2001);
    expect((await s.exchange.placeMarketOrder(plan)).status).toBe('FILLED');
    expect(s.double.orders()).toHaveLength(1);
  });

  it('two calls for one plan at once: one request goes out', async () => {
    const s = await setup();
    s.double.setPosition('BTCUSDT', '0.020');
    const plan = request();
    const results = await Promise.allSettled([s.exchange.placeMarketOrder(plan), s.exchange.placeMarketOrder(plan)]);
    expect(s.double.orders()).toHaveLength(1);
    const statuses = results.map((r) => (r.status === 'fulfilled' ? r.value.status : (r.reason as Error).name));
    expect(statuses).toContain('FILLED');
    // The other either found the order or was told to look again, never sent.
    expect(statuses.every((x) => x === 'FILLED' || x === 'ExchangeUnknownError')).toBe(true);
    expect((await s.exchange.getPosition('BTCUSDT')).toFixed()).toBe('0.01');
  });
});

describe('binance adapter: credentials', () => {
  it('a wrong secret: ExchangeAuthError (-1022), no order, and neither key, secret nor signature in the message', async () => {
    const s = await setup({}, { apiSecret: credential('WrongSecret') });
    for (const attempt of [() => s.exchange.getPosition('BTCUSDT'), () => s.exchange.placeMarketOrder(request())]) {
      const refused = await failure(attempt());
      expect(refused).toBeInstanceOf(ExchangeAuthError);
      expect(refused.message).toContain('-1022');
      expect(refused.message).toContain('BINANCE_API_SECRET');
      expectClean(refused.message, s);
    }
    expect(s.double.orders()).toHaveLength(0);
  });

  it('Execute fails the plan at once on refused keys: a non-retryable ExchangeAuthError', async () => {
    const s = await setup({}, { apiKey: credential('WrongKey') });
    const layers = createActivities({
      redis,
      config: s.config,
      exchange: s.exchange,
      clock: Date.now,
      approverKeys: new Map(),
    });
    const failed = await failure(layers.executePlan(makePlan()));
    expect(failed).toBeInstanceOf(ApplicationFailure);
    expect(failed).toMatchObject({ type: 'ExchangeAuthError', nonRetryable: true });
    expectClean(failed.message, s);
    expect(s.double.orders()).toHaveLength(0);
  });

  it('a key Binance does not know: ExchangeAuthError (-2015)', async () => {
    const s = await setup({}, { apiKey: credential('WrongKey') });
    const refused = await failure(s.exchange.findOrder('BTCUSDT', planId()));
    expect(refused).toBeInstanceOf(ExchangeAuthError);
    expect(refused.message).toContain('-2015');
    expectClean(refused.message, s);
  });
});

describe('binance adapter: an order that stays open', () => {
  /** A Binance that takes an order and leaves it NEW forever (the double always fills). */
  async function stuckBinance(): Promise<{ url: string; posts: () => number; lookups: () => number }> {
    let posts = 0;
    let lookups = 0;
    let order: Record<string, unknown> | null = null;
    const server = createServer((req: IncomingMessage, res: ServerResponse) => {
      const url = new URL(req.url ?? '/', 'http://127.0.0.1');
      const reply = (status: number, body: unknown) => {
        res.writeHead(status, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify(body));
      };
      if (url.pathname === '/fapi/v1/time') return reply(200, { serverTime: Date.now() });
      if (url.pathname === '/fapi/v1/positionSide/dual') return reply(200, { dualSidePosition: false });
      if (url.pathname !== '/fapi/v1/order') return reply(404, { code: -1000, msg: 'no route' });
      if (req.method === 'GET') {
        if (order) lookups++;
        return order ? reply(200, order) : reply(400, { code: -2013, msg: 'Order does not exist.' });
      }
      posts++;
      order = {
        orderId: 42,
        clientOrderId: url.searchParams.get('newClientOrderId'),
        symbol: url.searchParams.get('symbol'),
        status: 'NEW',
        side: url.searchParams.get('side'),
        positionSide: 'BOTH',
        origQty: url.searchParams.get('quantity'),
        executedQty: '0.000',
        avgPrice: '0.00',
        reduceOnly: true,
        updateTime: Date.now(),
      };
      return reply(200, order);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    stops.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    return {
      url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      posts: () => posts,
      lookups: () => lookups,
    };
  }

  it('looks a few times, then ExchangeUnknownError "still NEW; looking again"; a retry looks, never resends', async () => {
    const stuck = await stuckBinance();
    const config = testConfig({
      EXCHANGE: 'binance-usdm-testnet',
      BINANCE_API_KEY: credential('Key'),
      BINANCE_API_SECRET: credential('Secret'),
      BINANCE_BASE_URL: stuck.url,
    });
    const binance = config.binance;
    if (!binance) throw new Error('no binance config');
    const exchange = createBinanceExchange({
      name: 'binance-usdm-testnet',
      config: binance,
      redis,
      keys: redisKeys(config.keyPrefix),
      sleep: () => Promise.resolve(),
    });
    const plan = request();
    for (let call = 1; call <= 2; call++) {
      const open = await failure(exchange.placeMarketOrder(plan));
      expect(open).toBeInstanceOf(ExchangeUnknownError);
      expect(open.message).toMatch(/order 42 of plan [0-9a-f]{16} .* still NEW, 0 of 0\.01 executed; looking again$/);
    }
    expect(stuck.posts()).toBe(1);
    // Three looks after the order, then, on the retry, the lookup that found it and three more.
    expect(stuck.lookups()).toBe(7);
    expect((await exchange.findOrder('BTCUSDT', plan.clientOrderId))?.status).toBe('NEW');
  });
});
