import { createHmac } from 'node:crypto';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { PROJECT_ROOT, startBinanceDoubleProcess } from '../../cli/servers';
import { Dec } from '../../lib/decimal';
import { startBinanceDouble, type BinanceDouble, type BinanceDoubleOptions } from '../../scripts/binance-double/server';

/** The double is checked the way the adapter will use it: plain fetch, signatures computed here. */

let double: BinanceDouble | undefined;

afterEach(async () => {
  await double?.stop();
  double = undefined;
});

async function start(options: BinanceDoubleOptions = {}): Promise<BinanceDouble> {
  double = await startBinanceDouble(options);
  return double;
}

interface Reply {
  status: number;
  headers: Headers;
  body: Record<string, unknown> & { code?: number; msg?: string };
}

async function publicGet(d: BinanceDouble, path: string): Promise<Reply> {
  const response = await fetch(`${d.url}${path}`);
  return { status: response.status, headers: response.headers, body: (await response.json()) as Reply['body'] };
}

interface SignOptions {
  secret?: string;
  apiKey?: string;
  timestamp?: number;
  recvWindow?: number;
  /** Send the parameters in a form body instead of the query string. */
  inBody?: boolean;
}

async function signed(
  d: Pick<BinanceDouble, 'url' | 'apiKey' | 'apiSecret'>,
  method: 'GET' | 'POST',
  path: string,
  params: Record<string, string>,
  options: SignOptions = {},
): Promise<Reply> {
  const query = new URLSearchParams(params);
  query.set('timestamp', String(options.timestamp ?? Date.now()));
  if (options.recvWindow !== undefined) query.set('recvWindow', String(options.recvWindow));
  const payload = query.toString();
  const signature = createHmac('sha256', options.secret ?? d.apiSecret)
    .update(payload)
    .digest('hex');
  const full = `${payload}&signature=${signature}`;
  const headers = { 'X-MBX-APIKEY': options.apiKey ?? d.apiKey };
  const response = options.inBody
    ? await fetch(`${d.url}${path}`, {
        method,
        headers: { ...headers, 'Content-Type': 'application/x-www-form-urlencoded' },
        body: full,
      })
    : await fetch(`${d.url}${path}?${full}`, { method, headers });
  return { status: response.status, headers: response.headers, body: (await response.json()) as Reply['body'] };
}

const order = (d: BinanceDouble, params: Record<string, string>, options?: SignOptions) =>
  signed(d, 'POST', '/fapi/v1/order', { type: 'MARKET', newOrderRespType: 'RESULT', ...params }, options);
const lookup = (d: BinanceDouble, symbol: string, origClientOrderId: string) =>
  signed(d, 'GET', '/fapi/v1/order', { symbol, origClientOrderId });

async function positionAmt(d: BinanceDouble, symbol: string, side = 'BOTH'): Promise<Dec> {
  const { body } = await signed(d, 'GET', '/fapi/v2/positionRisk', { symbol });
  const rows = body as unknown as { positionSide: string; positionAmt: string }[];
  const row = rows.find((r) => r.positionSide === side);
  if (!row) throw new Error(`no ${side} position for ${symbol}`);
  return new Dec(row.positionAmt);
}

describe('binance double: public endpoints', () => {
  it('tells its time, with the configured skew', async () => {
    const d = await start({ skewMs: 60_000 });
    const before = Date.now();
    const { body } = await publicGet(d, '/fapi/v1/time');
    expect(body.serverTime).toBeGreaterThanOrEqual(before + 60_000);
    expect(body.serverTime).toBeLessThan(Date.now() + 61_000);
  });

  it('lists symbols with their LOT_SIZE, MARKET_LOT_SIZE and MIN_NOTIONAL filters', async () => {
    const d = await start();
    d.setRules('SOLUSDT', { stepSize: '1', minQty: '1', minNotional: '5' });
    const { body } = await publicGet(d, '/fapi/v1/exchangeInfo');
    const symbols = body.symbols as { symbol: string; filters: Record<string, string>[] }[];
    const btc = symbols.find((s) => s.symbol === 'BTCUSDT');
    expect(btc?.filters).toContainEqual({ filterType: 'LOT_SIZE', stepSize: '0.001', minQty: '0.001', maxQty: '1000' });
    expect(btc?.filters).toContainEqual({
      filterType: 'MARKET_LOT_SIZE',
      stepSize: '0.001',
      minQty: '0.001',
      maxQty: '120',
    });
    expect(btc?.filters).toContainEqual({ filterType: 'MIN_NOTIONAL', notional: '100' });
    const sol = symbols.find((s) => s.symbol === 'SOLUSDT');
    expect(sol?.filters).toContainEqual({ filterType: 'MIN_NOTIONAL', notional: '5' });
  });

  it('gives the mark price, and -1121 for an unknown symbol', async () => {
    const d = await start();
    d.setMarkPrice('BTCUSDT', '61234.5');
    expect((await publicGet(d, '/fapi/v1/premiumIndex?symbol=BTCUSDT')).body.markPrice).toBe('61234.50000000');
    const unknown = await publicGet(d, '/fapi/v1/premiumIndex?symbol=NOPEUSDT');
    expect([unknown.status, unknown.body.code]).toEqual([400, -1121]);
  });
});

describe('binance double: signed requests', () => {
  it('fills a market order at the mark price and moves the position by exactly its quantity', async () => {
    const d = await start();
    d.setMarkPrice('BTCUSDT', '60123.4');
    d.setPosition('BTCUSDT', '0.010');
    const placed = await order(d, { symbol: 'BTCUSDT', side: 'BUY', quantity: '0.003', newClientOrderId: 'plan-1' });
    expect(placed.status).toBe(200);
    expect(placed.body).toMatchObject({ status: 'FILLED', executedQty: '0.003', clientOrderId: 'plan-1' });
    expect(new Dec(placed.body.avgPrice as string).eq('60123.4')).toBe(true);
    expect((await positionAmt(d, 'BTCUSDT')).eq('0.013')).toBe(true);

    // Reduce-only in the form body, as many clients send it.
    const closing = await order(
      d,
      { symbol: 'BTCUSDT', side: 'SELL', quantity: '0.013', reduceOnly: 'true', newClientOrderId: 'plan-2' },
      { inBody: true },
    );
    expect(closing.body.status).toBe('FILLED');
    expect((await positionAmt(d, 'BTCUSDT')).isZero()).toBe(true);
    expect(d.orders().map((o) => [o.clientOrderId, o.status, o.executedQty])).toEqual([
      ['plan-1', 'FILLED', '0.003'],
      ['plan-2', 'FILLED', '0.013'],
    ]);
  });

  it('answers ACK by default: NEW and nothing executed yet; the lookup shows the fill', async () => {
    const d = await start();
    const placed = await signed(d, 'POST', '/fapi/v1/order', {
      symbol: 'ETHUSDT',
      side: 'SELL',
      type: 'MARKET',
      quantity: '0.5',
      newClientOrderId: 'plan-ack',
    });
    expect(placed.body).toMatchObject({ status: 'NEW', executedQty: '0.000' });
    const found = await lookup(d, 'ETHUSDT', 'plan-ack');
    expect(found.body).toMatchObject({ status: 'FILLED', executedQty: '0.500', avgPrice: '3000.00' });
    expect((await positionAmt(d, 'ETHUSDT')).eq('-0.5')).toBe(true);
  });

  it('refuses a bad signature (-1022), a wrong key (-2015), a stale or early timestamp (-1021), a missing param (-1102)', async () => {
    const d = await start();
    const params = { symbol: 'BTCUSDT', side: 'BUY', quantity: '0.01' };
    const badSignature = await order(d, params, { secret: 'not-the-secret' });
    expect([badSignature.status, badSignature.body.code]).toEqual([400, -1022]);
    const badKey = await order(d, params, { apiKey: 'someone-else' });
    expect(badKey.body.code).toBe(-2015);
    const stale = await order(d, params, { timestamp: Date.now() - 6000 });
    expect(stale.body).toEqual({ code: -1021, msg: 'Timestamp for this request is outside of the recvWindow.' });
    expect((await order(d, params, { timestamp: Date.now() - 6000, recvWindow: 10_000 })).body.status).toBe('FILLED');
    expect((await order(d, params, { timestamp: Date.now() + 5000 })).body.code).toBe(-1021);
    const noQuantity = await order(d, { symbol: 'BTCUSDT', side: 'BUY' });
    expect(noQuantity.body.code).toBe(-1102);
    expect(noQuantity.body.msg).toContain("'quantity'");
    expect(d.orders()).toHaveLength(1);
  });

  it('takes a resent client order id once the first order has filled, so a blind resend trades twice', async () => {
    const d = await start();
    const params = { symbol: 'BTCUSDT', side: 'BUY', quantity: '0.002', newClientOrderId: 'plan-resend' };
    const first = await order(d, params);
    const second = await order(d, params);
    expect([first.body.status, second.body.status]).toEqual(['FILLED', 'FILLED']);
    expect(second.body.orderId).not.toBe(first.body.orderId);
    expect((await positionAmt(d, 'BTCUSDT')).eq('0.004')).toBe(true);
    expect((await lookup(d, 'BTCUSDT', 'plan-resend')).body.orderId).toBe(first.body.orderId);
    const unknown = await lookup(d, 'BTCUSDT', 'plan-never');
    expect(unknown.body).toEqual({ code: -2013, msg: 'Order does not exist.' });
  });

  it('names the filter a quantity breaks, checked on exact decimals', async () => {
    const d = await start();
    const tryQty = async (quantity: string, extra: Record<string, string> = {}) =>
      (await order(d, { symbol: 'BTCUSDT', side: 'BUY', quantity, ...extra })).body;
    // 0.001 × 60000 = 60 < 100.
    expect(await tryQty('0.001')).toMatchObject({ code: -4164 });
    expect((await tryQty('0.001')).msg).toContain('no smaller than 100');
    expect(await tryQty('0.0025')).toMatchObject({ code: -1111 });
    d.setRules('BTCUSDT', { stepSize: '0.005', minQty: '0.005', minNotional: '100', marketMaxQty: '120' });
    expect(await tryQty('0.007')).toEqual({ code: -1013, msg: 'Filter failure: MARKET_LOT_SIZE' });
    expect(await tryQty('121')).toMatchObject({ code: -4005 });
    expect(await tryQty('1e-3')).toMatchObject({ code: -1100 });
    // Reduce-only escapes the notional floor but may not open or grow a position.
    expect(await tryQty('0.005', { reduceOnly: 'true' })).toMatchObject({ code: -2022 });
    d.setPosition('BTCUSDT', '-0.010');
    expect(await tryQty('0.005', { reduceOnly: 'true' })).toMatchObject({ status: 'FILLED' });
    expect(d.positions()).toEqual([
      { symbol: 'BTCUSDT', positionSide: 'BOTH', positionAmt: '-0.005', entryPrice: '60000' },
    ]);
  });

  it('keeps hedge-mode positions per side, and refuses a side that does not match the mode', async () => {
    const d = await start({ hedgeMode: true });
    const hedged = (side: string, positionSide: string, quantity: string) =>
      order(d, { symbol: 'ETHUSDT', side, positionSide, quantity });
    expect((await hedged('BUY', 'LONG', '1')).body.status).toBe('FILLED');
    expect((await hedged('SELL', 'SHORT', '0.4')).body.status).toBe('FILLED');
    expect((await hedged('SELL', 'LONG', '0.25')).body.status).toBe('FILLED');
    expect((await positionAmt(d, 'ETHUSDT', 'LONG')).eq('0.75')).toBe(true);
    expect((await positionAmt(d, 'ETHUSDT', 'SHORT')).eq('-0.4')).toBe(true);
    expect((await hedged('BUY', 'SHORT', '0.5')).body.code).toBe(-2022);
    expect((await order(d, { symbol: 'ETHUSDT', side: 'BUY', quantity: '1' })).body.code).toBe(-4061);
    const dual = await signed(d, 'GET', '/fapi/v1/positionSide/dual', {});
    expect(dual.body).toEqual({ dualSidePosition: true });
  });
});

describe("binance double: the account's history (userTrades, allOrders)", () => {
  const rows = (reply: Reply) => reply.body as unknown as Record<string, unknown>[];

  it('lists the filled orders as trades and every order, oldest first, per symbol, paged, each call weighed', async () => {
    const d = await start();
    await order(d, { symbol: 'BTCUSDT', side: 'BUY', quantity: '0.003', newClientOrderId: 'plan-a' });
    await order(d, { symbol: 'ETHUSDT', side: 'SELL', quantity: '0.5', newClientOrderId: 'plan-b' });
    d.injectFault({ kind: 'expire' });
    await order(d, { symbol: 'BTCUSDT', side: 'BUY', quantity: '0.002', newClientOrderId: 'plan-c' });
    await order(d, { symbol: 'BTCUSDT', side: 'SELL', quantity: '0.002', newClientOrderId: 'outside' });
    const [a, , c, outside] = d.orders();

    const trades = await signed(d, 'GET', '/fapi/v1/userTrades', { symbol: 'BTCUSDT' });
    expect(trades.status).toBe(200);
    // The expired order traded nothing: no trade; a trade carries no client order id, as on Binance.
    expect(rows(trades).map((t) => [t.orderId, t.side, t.qty, t.price])).toEqual([
      [a?.orderId, 'BUY', '0.003', '60000.0'],
      [outside?.orderId, 'SELL', '0.002', '60000.0'],
    ]);
    expect(rows(trades)[0]).not.toHaveProperty('clientOrderId');
    expect(trades.headers.get('x-mbx-used-weight-1m')).toBe('5');

    const orders = await signed(d, 'GET', '/fapi/v1/allOrders', { symbol: 'BTCUSDT' });
    expect(rows(orders).map((o) => [o.clientOrderId, o.status])).toEqual([
      ['plan-a', 'FILLED'],
      ['plan-c', 'EXPIRED'],
      ['outside', 'FILLED'],
    ]);
    expect(orders.headers.get('x-mbx-used-weight-1m')).toBe('10');

    // Paged: from an id on, `limit` at a time; without an id, the most recent `limit`.
    const page = await signed(d, 'GET', '/fapi/v1/allOrders', {
      symbol: 'BTCUSDT',
      orderId: String(c?.orderId),
      limit: '1',
    });
    expect(rows(page).map((o) => o.clientOrderId)).toEqual(['plan-c']);
    const recent = await signed(d, 'GET', '/fapi/v1/userTrades', { symbol: 'BTCUSDT', limit: '1' });
    expect(rows(recent).map((t) => t.orderId)).toEqual([outside?.orderId]);
    const from = await signed(d, 'GET', '/fapi/v1/userTrades', { symbol: 'BTCUSDT', fromId: String(c?.orderId) });
    expect(rows(from).map((t) => t.orderId)).toEqual([outside?.orderId]);
  });

  it('keeps to a window of 7 days at most, and refuses what Binance refuses', async () => {
    const d = await start();
    await order(d, { symbol: 'BTCUSDT', side: 'BUY', quantity: '0.003', newClientOrderId: 'plan-a' });
    const now = Date.now();
    const day = 24 * 3600 * 1000;
    const inWindow = await signed(d, 'GET', '/fapi/v1/userTrades', {
      symbol: 'BTCUSDT',
      startTime: String(now - day),
      endTime: String(now + day),
    });
    expect(rows(inWindow)).toHaveLength(1);
    const before = await signed(d, 'GET', '/fapi/v1/allOrders', { symbol: 'BTCUSDT', endTime: String(now - day) });
    expect(rows(before)).toEqual([]);

    const tooLong = await signed(d, 'GET', '/fapi/v1/userTrades', {
      symbol: 'BTCUSDT',
      startTime: String(now - 8 * day),
      endTime: String(now),
    });
    expect([tooLong.status, tooLong.body.code]).toEqual([400, -1127]);
    const both = await signed(d, 'GET', '/fapi/v1/userTrades', {
      symbol: 'BTCUSDT',
      fromId: '1',
      startTime: String(now - day),
    });
    expect([both.status, both.body.code]).toEqual([400, -1128]);
    const limit = await signed(d, 'GET', '/fapi/v1/allOrders', { symbol: 'BTCUSDT', limit: '1001' });
    expect([limit.status, limit.body.code]).toEqual([400, -1130]);
    const noSymbol = await signed(d, 'GET', '/fapi/v1/allOrders', {});
    expect([noSymbol.status, noSymbol.body.code]).toEqual([400, -1102]);
    // A signed endpoint: no API key, no answer.
    const unsigned = await publicGet(d, '/fapi/v1/userTrades?symbol=BTCUSDT');
    expect(unsigned.status).toBe(401);
  });
});

describe('binance double: position risk V3', () => {
  it('lists only the sides that hold a position, SHORT negative, padded like Binance', async () => {
    const d = await start({ hedgeMode: true });
    const rows = async () =>
      (await signed(d, 'GET', '/fapi/v3/positionRisk', { symbol: 'BTCUSDT' })).body as unknown as {
        positionSide: string;
        positionAmt: string;
      }[];
    expect(await rows()).toEqual([]);
    d.setPosition('BTCUSDT', '0.01', 'LONG');
    expect((await rows()).map((r) => [r.positionSide, r.positionAmt])).toEqual([['LONG', '0.010']]);
    d.setPosition('BTCUSDT', '-0.004', 'SHORT');
    expect((await rows()).map((r) => [r.positionSide, r.positionAmt])).toEqual([
      ['LONG', '0.010'],
      ['SHORT', '-0.004'],
    ]);
    const unknown = await signed(d, 'GET', '/fapi/v3/positionRisk', { symbol: 'NOPEUSDT' });
    expect(unknown.body.code).toBe(-1121);
  });
});

describe('binance double: faults, each consumed once', () => {
  const params = { symbol: 'BTCUSDT', side: 'BUY', quantity: '0.010', newClientOrderId: 'plan-fault' };

  it('loses the response after the fill: the order stands, the caller sees the socket close', async () => {
    const d = await start();
    d.injectFault({ kind: 'lose-response-after-fill' });
    await expect(order(d, params)).rejects.toThrow();
    expect((await lookup(d, 'BTCUSDT', 'plan-fault')).body).toMatchObject({ status: 'FILLED', executedQty: '0.010' });
    expect((await positionAmt(d, 'BTCUSDT')).eq('0.01')).toBe(true);
    expect(d.pendingFaults()).toEqual([]);
  });

  it('answers 5xx without executing, or after executing when told to', async () => {
    const d = await start();
    d.injectFault({ kind: 'http-5xx', status: 503 });
    d.injectFault({ kind: 'http-5xx', status: 502, executed: true });
    const first = await order(d, params);
    expect([first.status, first.body.code]).toEqual([503, -1001]);
    expect(d.orders()).toHaveLength(0);
    const second = await order(d, params);
    expect(second.status).toBe(502);
    expect(d.orders()).toHaveLength(1);
    expect((await order(d, params)).body.status).toBe('FILLED');
  });

  it('rate-limits with 429 or 418, Retry-After and -1003, scoped to a path when asked', async () => {
    const d = await start();
    d.injectFault({ kind: 'rate-limit', status: 429, retryAfterS: 7, path: '/fapi/v1/order' });
    d.injectFault({ kind: 'rate-limit', status: 418, retryAfterS: 120 });
    expect((await publicGet(d, '/fapi/v1/time')).status).toBe(418);
    expect((await publicGet(d, '/fapi/v1/time')).status).toBe(200);
    const limited = await order(d, params);
    expect([limited.status, limited.body.code, limited.headers.get('retry-after')]).toEqual([429, -1003, '7']);
    expect(d.orders()).toHaveLength(0);
  });

  it('spares a GET on the same path when the fault names POST', async () => {
    const d = await start();
    d.injectFault({ kind: 'rate-limit', status: 429, retryAfterS: 3, path: '/fapi/v1/order', method: 'POST' });
    expect((await lookup(d, 'BTCUSDT', 'plan-fault')).body.code).toBe(-2013);
    expect(d.pendingFaults()).toHaveLength(1);
    expect((await order(d, params)).status).toBe(429);
    expect(d.pendingFaults()).toEqual([]);
    expect(d.orders()).toHaveLength(0);
  });

  it('answers -1021 once to a request whose timestamp was fine', async () => {
    const d = await start();
    d.injectFault({ kind: 'timestamp' });
    expect((await order(d, params)).body.code).toBe(-1021);
    expect((await order(d, params)).body.status).toBe('FILLED');
  });

  it('fills part of an order (PARTIALLY_FILLED, then EXPIRED) or none of it (EXPIRED)', async () => {
    const d = await start();
    d.injectFault({ kind: 'partial-fill', fraction: 0.45 });
    d.injectFault({ kind: 'expire' });
    const partial = await order(d, params);
    expect(partial.body).toMatchObject({ status: 'PARTIALLY_FILLED', executedQty: '0.004', origQty: '0.010' });
    expect((await lookup(d, 'BTCUSDT', 'plan-fault')).body).toMatchObject({ status: 'EXPIRED', executedQty: '0.004' });
    const expired = await order(d, { ...params, newClientOrderId: 'plan-expire' });
    expect(expired.body).toMatchObject({ status: 'EXPIRED', executedQty: '0.000' });
    expect((await positionAmt(d, 'BTCUSDT')).eq('0.004')).toBe(true);
  });
});

describe('binance double: as `dev --exchange binance-double` starts it', () => {
  it('is a process of the checkout (scripts/binance-double/main.ts): owner-only key files, signed answers, gone when stopped', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'permit-chain-double-'));
    const running = await startBinanceDoubleProcess(join(dir, 'keys'));
    try {
      expect(running.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      expect(running.process.spawnargs).toContain(join(PROJECT_ROOT, 'scripts', 'binance-double', 'main.ts'));
      for (const file of ['api-key', 'api-secret']) expect(statSync(join(dir, 'keys', file)).mode & 0o777).toBe(0o600);
      const { status, body } = await signed(running, 'GET', '/fapi/v1/positionSide/dual', {});
      expect(status).toBe(200);
      expect(body).toEqual({ dualSidePosition: false });
    } finally {
      await running.stop();
      rmSync(dir, { recursive: true, force: true });
    }
    expect(running.process.exitCode !== null || running.process.signalCode !== null).toBe(true);
    await expect(fetch(`${running.url}/fapi/v1/ping`)).rejects.toThrow();
  }, 60_000);
});
