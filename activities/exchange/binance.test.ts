import { describe, expect, it } from 'vitest';
import {
  CLIENT_ORDER_ID_PATTERN,
  HASHED_CLIENT_ORDER_ID_PREFIX,
  binanceClientOrderId,
  binanceFailure,
  netPosition,
  orderFailureKind,
  orderFromBinance,
  orderParams,
  retryAfterMs,
  rulesFromExchangeInfo,
  type BinanceFailure,
  type OrderFailureKind,
} from './binance-wire';
import type { ExchangeOrder, MarketOrderRequest } from './port';

const NOW = 1_700_000_000_000;

describe('binanceClientOrderId', () => {
  it.each([
    ['the contract’s 16-hex plan id', 'a1b2c3d4e5f60718'],
    ['36 allowed characters', 'A'.repeat(30) + '.:/_-9'],
    ['one character', 'x'],
  ])('is the plan id itself when it fits: %s', (_case, planId) => {
    expect(binanceClientOrderId(planId)).toBe(planId);
  });

  it.each([
    ['37 characters', 'a'.repeat(37)],
    ['60 characters', '0123456789'.repeat(6)],
    ['a character Binance does not allow', 'plan id with spaces'],
    ['a plus sign', 'a+b'],
    ['empty', ''],
    ['the hashed prefix itself', `${HASHED_CLIENT_ORDER_ID_PREFIX}abc`],
  ])('is the prefix and a hash otherwise, within Binance’s rule: %s', (_case, planId) => {
    const id = binanceClientOrderId(planId);
    expect(id).toMatch(CLIENT_ORDER_ID_PATTERN);
    expect(id.startsWith(HASHED_CLIENT_ORDER_ID_PREFIX)).toBe(true);
    expect(id).toHaveLength(36);
    expect(binanceClientOrderId(planId)).toBe(id);
  });

  it('maps different plan ids to different ids, the two forms never meeting', () => {
    const hashedLookalike = binanceClientOrderId('0123456789'.repeat(6));
    const planIds = [
      '0123456789'.repeat(6),
      '0123456789'.repeat(6) + '0',
      '1123456789'.repeat(6),
      'a'.repeat(37),
      'a'.repeat(36),
      // A plan id that looks exactly like another's hashed id is hashed itself.
      hashedLookalike,
      ...Array.from({ length: 2000 }, (_, i) => `long-plan-id-${String(i).padStart(40, '0')}`),
    ];
    const ids = planIds.map(binanceClientOrderId);
    expect(new Set(ids).size).toBe(planIds.length);
    expect(binanceClientOrderId(hashedLookalike)).not.toBe(hashedLookalike);
  });
});

describe('orderParams', () => {
  const request = (over: Partial<MarketOrderRequest> = {}): MarketOrderRequest => ({
    symbol: 'BTCUSDT',
    side: 'SELL',
    qty: '0.0620',
    reduceOnly: true,
    clientOrderId: 'a1b2c3d4e5f60718',
    ...over,
  });

  it('one-way mode: reduceOnly as the plan says, the quantity an exact decimal string, RESULT asked for', () => {
    expect(orderParams(request(), 'a1b2c3d4e5f60718', false)).toStrictEqual({
      symbol: 'BTCUSDT',
      side: 'SELL',
      type: 'MARKET',
      quantity: '0.062',
      newClientOrderId: 'a1b2c3d4e5f60718',
      newOrderRespType: 'RESULT',
      reduceOnly: 'true',
    });
    const opening = orderParams(request({ side: 'BUY', reduceOnly: false, qty: '0.00000001' }), 'x', false);
    expect(opening).not.toHaveProperty('reduceOnly');
    expect(opening.quantity).toBe('0.00000001');
  });

  it.each<[string, MarketOrderRequest['side'], boolean, 'LONG' | 'SHORT']>([
    ['a reduce-only SELL closes LONG', 'SELL', true, 'LONG'],
    ['a reduce-only BUY closes SHORT', 'BUY', true, 'SHORT'],
    ['an opening BUY is LONG', 'BUY', false, 'LONG'],
    ['an opening SELL is SHORT', 'SELL', false, 'SHORT'],
  ])('hedge mode: %s, and no reduceOnly', (_case, side, reduceOnly, positionSide) => {
    const params = orderParams(request({ side, reduceOnly }), 'x', true);
    expect(params.positionSide).toBe(positionSide);
    expect(params).not.toHaveProperty('reduceOnly');
  });
});

describe('orderFromBinance', () => {
  const json = {
    orderId: 1000001,
    symbol: 'BTCUSDT',
    status: 'FILLED',
    clientOrderId: 'a1b2c3d4e5f60718',
    price: '0',
    avgPrice: '60000.00',
    origQty: '0.010',
    executedQty: '0.010',
    cumQuote: '600.00000000',
    reduceOnly: true,
    side: 'SELL',
    positionSide: 'BOTH',
    type: 'MARKET',
    time: NOW - 5,
    updateTime: NOW - 4,
  };

  it('maps Binance’s order, its padded decimals made plain', () => {
    expect(orderFromBinance(json, NOW)).toEqual<ExchangeOrder>({
      order_id: '1000001',
      client_order_id: 'a1b2c3d4e5f60718',
      symbol: 'BTCUSDT',
      side: 'SELL',
      qty: '0.01',
      reduce_only: true,
      status: 'FILLED',
      filled_qty: '0.01',
      avg_price: '60000',
      placed_at: NOW - 5,
    });
  });

  it.each(['NEW', 'PARTIALLY_FILLED', 'FILLED', 'CANCELED', 'EXPIRED', 'REJECTED'])('keeps status %s', (status) => {
    expect(orderFromBinance({ ...json, status }, NOW).status).toBe(status);
  });

  it('takes the executed quantity, not the ordered one, and the update time when there is no time', () => {
    const { time: _time, ...result } = { ...json, status: 'EXPIRED', executedQty: '0.004' };
    expect(orderFromBinance(result, NOW)).toMatchObject({ qty: '0.01', filled_qty: '0.004', placed_at: NOW - 4 });
  });

  it('counts a hedge-mode order that closes its side as reduce-only', () => {
    const hedged = { ...json, reduceOnly: false };
    expect(orderFromBinance({ ...hedged, side: 'SELL', positionSide: 'LONG' }, NOW).reduce_only).toBe(true);
    expect(orderFromBinance({ ...hedged, side: 'BUY', positionSide: 'SHORT' }, NOW).reduce_only).toBe(true);
    expect(orderFromBinance({ ...hedged, side: 'BUY', positionSide: 'LONG' }, NOW).reduce_only).toBe(false);
  });

  it.each([
    ['a status Binance uses for liquidations only', { ...json, status: 'NEW_INSURANCE' }],
    ['a quantity as a JS number', { ...json, executedQty: 0.01 }],
    ['no client order id', { ...json, clientOrderId: undefined }],
    ['an error body', { code: -2013, msg: 'Order does not exist.' }],
  ])('refuses what is not an order: %s', (_case, body) => {
    expect(() => orderFromBinance(body, NOW)).toThrow();
  });
});

describe('netPosition', () => {
  const row = (positionSide: string, positionAmt: string, symbol = 'BTCUSDT') => ({
    symbol,
    positionSide,
    positionAmt,
    entryPrice: '60000.0',
  });

  it.each<[string, unknown[], string]>([
    ['one-way long', [row('BOTH', '0.062')], '0.062'],
    ['one-way short', [row('BOTH', '-0.010')], '-0.01'],
    ['nothing (V3 lists no row)', [], '0'],
    ['hedge: LONG and SHORT net', [row('LONG', '0.100'), row('SHORT', '-0.038')], '0.062'],
    ['hedge: short only', [row('LONG', '0.000'), row('SHORT', '-0.500')], '-0.5'],
    ['other symbols ignored', [row('BOTH', '1.000', 'ETHUSDT'), row('BOTH', '0.002')], '0.002'],
  ])('%s', (_case, rows, expected) => {
    expect(netPosition(rows, 'BTCUSDT').toFixed()).toBe(expected);
  });

  it('sums exactly, where binary floats would not', () => {
    expect(netPosition([row('LONG', '0.1'), row('SHORT', '-0.3'), row('LONG', '0.2')], 'BTCUSDT').isZero()).toBe(true);
  });

  it('refuses a row whose amount is not a decimal string', () => {
    expect(() => netPosition([{ ...row('BOTH', '1'), positionAmt: 1 }], 'BTCUSDT')).toThrow();
  });
});

describe('rulesFromExchangeInfo', () => {
  const symbol = (name: string, filters: Record<string, string>[]) => ({ symbol: name, status: 'TRADING', filters });
  const info = {
    symbols: [
      symbol('BTCUSDT', [
        { filterType: 'PRICE_FILTER', tickSize: '0.10' },
        { filterType: 'LOT_SIZE', stepSize: '0.001', minQty: '0.001', maxQty: '1000' },
        { filterType: 'MARKET_LOT_SIZE', stepSize: '0.001', minQty: '0.001', maxQty: '120' },
        { filterType: 'MIN_NOTIONAL', notional: '100' },
      ]),
      // MARKET_LOT_SIZE saying 0 means "as LOT_SIZE".
      symbol('ETHUSDT', [
        { filterType: 'LOT_SIZE', stepSize: '0.010', minQty: '0.010', maxQty: '10000.000' },
        { filterType: 'MARKET_LOT_SIZE', stepSize: '0.000', minQty: '0.000', maxQty: '2000.000' },
        { filterType: 'MIN_NOTIONAL', notional: '20.0' },
      ]),
      symbol('ODDUSDT', [{ filterType: 'LOT_SIZE', stepSize: '1', minQty: '1', maxQty: '5000' }]),
    ],
  };

  it('takes MARKET_LOT_SIZE, falls back to LOT_SIZE field by field, and MIN_NOTIONAL’s notional', () => {
    const rules = rulesFromExchangeInfo(info);
    expect(rules.get('BTCUSDT')).toEqual({
      symbol: 'BTCUSDT',
      step_size: '0.001',
      min_qty: '0.001',
      max_qty: '120',
      min_notional: '100',
    });
    expect(rules.get('ETHUSDT')).toEqual({
      symbol: 'ETHUSDT',
      step_size: '0.01',
      min_qty: '0.01',
      max_qty: '2000',
      min_notional: '20',
    });
    expect(rules.get('ODDUSDT')).toEqual({
      symbol: 'ODDUSDT',
      step_size: '1',
      min_qty: '1',
      max_qty: '5000',
      min_notional: '0',
    });
    expect(rules.has('NOPEUSDT')).toBe(false);
  });
});

describe('binanceFailure and orderFailureKind', () => {
  const http = (status: number, code: number | null, headers: Record<string, string> = {}) => ({
    response: { status, data: code === null ? '<html>bad gateway</html>' : { code, msg: 'm' }, headers },
    config: { headers: { 'X-MBX-APIKEY': 'the-key' }, url: 'https://x/fapi/v1/order?signature=abc' },
  });
  const network = (code: string) => Object.assign(new Error(`connect ${code}`), { code, config: {} });

  it('keeps only status, code, message and headers of an HTTP answer', () => {
    const failure = binanceFailure(http(429, -1003, { 'Retry-After': '7', 'x-mbx-used-weight-1m': '2400' }));
    expect(failure).toEqual({
      kind: 'http',
      status: 429,
      code: -1003,
      msg: 'm',
      headers: { 'retry-after': '7', 'x-mbx-used-weight-1m': '2400' },
    });
    expect(JSON.stringify(failure)).not.toContain('the-key');
    expect(JSON.stringify(failure)).not.toContain('signature');
  });

  it('reads a non-200 success thrown as the response itself', () => {
    expect(binanceFailure({ status: 202, data: {}, headers: {} })).toMatchObject({ kind: 'http', status: 202 });
  });

  it.each<[string, unknown, OrderFailureKind]>([
    ['429', http(429, -1003), 'busy'],
    ['418 (IP ban)', http(418, -1003), 'busy'],
    ['403 (WAF)', http(403, null), 'busy'],
    ['-1008 throttled', http(503, -1008), 'busy'],
    ['connection refused', network('ECONNREFUSED'), 'busy'],
    ['no DNS', network('ENOTFOUND'), 'busy'],
    ['-2015 bad key', http(401, -2015), 'auth'],
    ['-2014 key format', http(401, -2014), 'auth'],
    ['-1022 signature', http(400, -1022), 'auth'],
    ['-1021 timestamp', http(400, -1021), 'clock'],
    ['-4061 position side', http(400, -4061), 'position_side'],
    ['-4116 duplicate client order id', http(400, -4116), 'duplicate'],
    ['-2022 reduce-only rejected', http(400, -2022), 'rejected'],
    ['-4164 min notional', http(400, -4164), 'rejected'],
    ['-1013 filter', http(400, -1013), 'rejected'],
    ['-4005 max qty', http(400, -4005), 'rejected'],
    ['-1111 precision', http(400, -1111), 'rejected'],
    ['500 -1001', http(500, -1001), 'unknown'],
    ['503 -1001', http(503, -1001), 'unknown'],
    ['502 without Binance’s body', http(502, null), 'unknown'],
    ['408', http(408, -1007), 'unknown'],
    ['400 -1007 (timeout at Binance)', http(400, -1007), 'unknown'],
    ['400 -1006 (unexpected response)', http(400, -1006), 'unknown'],
    ['a 400 without Binance’s body', http(400, null), 'unknown'],
    ['a timeout', network('ECONNABORTED'), 'unknown'],
    ['a reset connection', network('ECONNRESET'), 'unknown'],
    ['something else', new TypeError('boom'), 'unknown'],
  ])('an order answered %s is %s', (_case, err, kind) => {
    expect(orderFailureKind(binanceFailure(err))).toBe(kind);
  });
});

describe('retryAfterMs', () => {
  const failure = (status: number, headers: Record<string, string>, msg = ''): BinanceFailure & { kind: 'http' } => ({
    kind: 'http',
    status,
    code: -1003,
    msg,
    headers,
  });

  it.each<[string, BinanceFailure & { kind: 'http' }, number]>([
    ['Retry-After in seconds', failure(429, { 'retry-after': '7' }), 7000],
    ['Retry-After 0', failure(429, { 'retry-after': '0' }), 0],
    ['Retry-After as a date', failure(429, { 'retry-after': new Date(NOW + 30_000).toUTCString() }), 30_000],
    ['no Retry-After: a minute', failure(429, {}), 60_000],
    [
      '418: Retry-After when the ban ends sooner',
      failure(418, { 'retry-after': '120' }, 'banned until ' + (NOW + 5000)),
      120_000,
    ],
    [
      '418: the ban’s end when later',
      failure(418, { 'retry-after': '120' }, `IP banned until ${NOW + 300_000}.`),
      300_000,
    ],
    ['418 without a header or an end: a minute', failure(418, {}), 60_000],
  ])('%s', (_case, f, expected) => {
    expect(retryAfterMs(f, NOW)).toBe(expected);
  });
});
