import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Dec, formatDec } from '../../lib/decimal';

/**
 * A local double of Binance USD-M futures REST (fapi v1/v2/v3): the endpoints the exchange adapter uses, signed and
 * checked the way Binance checks them, with positions it keeps and faults a test can inject. Test code only; also
 * runnable by hand (`npx tsx scripts/binance-double/main.ts`).
 */

export type PositionSide = 'BOTH' | 'LONG' | 'SHORT';
export type OrderStatus = 'NEW' | 'PARTIALLY_FILLED' | 'FILLED' | 'CANCELED' | 'EXPIRED' | 'REJECTED';

/**
 * One injected fault, consumed by the first request it applies to: of its kind, and on its `path` and `method` when
 * it names them (GET and POST /fapi/v1/order share a path: the lookup and the order).
 */
export type Fault = FaultKind & { method?: 'GET' | 'POST' };

export type FaultKind =
  /** The order is executed and stored; the socket is destroyed without a response. POST /fapi/v1/order only. */
  | { kind: 'lose-response-after-fill'; path?: string }
  /** A 5xx with Binance's -1001 body. `executed`: the order went through anyway (Binance's "status unknown"). */
  | { kind: 'http-5xx'; status: 500 | 502 | 503 | 504; executed?: boolean; path?: string }
  /** 429 (or 418, the IP ban) with `Retry-After` in seconds and code -1003. */
  | { kind: 'rate-limit'; status: 429 | 418; retryAfterS: number; path?: string }
  /** -1021 once, on a signed request whose timestamp is in fact fine. */
  | { kind: 'timestamp'; path?: string }
  /** The market order fills `fraction` of its quantity (down to the step): PARTIALLY_FILLED, then EXPIRED. */
  | { kind: 'partial-fill'; fraction: number; path?: string }
  /** The market order expires unfilled: EXPIRED, executedQty 0. */
  | { kind: 'expire'; path?: string }
  /**
   * A hostile answer: the next successful order answer (POST or GET /fapi/v1/order; name `method` to pick one) has
   * `set`'s fields written over it, and with `padTo` is padded to that many bytes (a `padding` field). The order
   * itself, as stored and as later lookups see it, is unchanged.
   */
  | { kind: 'rewrite-answer'; set?: Record<string, unknown>; padTo?: number; path?: string }
  /** The request is held `ms` before the double handles it (a slow network or exchange). */
  | { kind: 'delay'; ms: number; path?: string };

export interface SymbolRules {
  stepSize: string;
  minQty: string;
  minNotional: string;
  /** LOT_SIZE maxQty (limit orders). */
  maxQty?: string;
  /** MARKET_LOT_SIZE maxQty: what a market order is checked against. */
  marketMaxQty?: string;
  tickSize?: string;
}

export interface DoubleOrder {
  orderId: number;
  clientOrderId: string;
  symbol: string;
  side: 'BUY' | 'SELL';
  positionSide: PositionSide;
  type: 'MARKET';
  origQty: string;
  executedQty: string;
  avgPrice: string;
  cumQuote: string;
  reduceOnly: boolean;
  status: OrderStatus;
  time: number;
  updateTime: number;
}

export interface DoublePosition {
  symbol: string;
  positionSide: PositionSide;
  positionAmt: string;
  entryPrice: string;
}

export interface BinanceDoubleOptions {
  /** 0 (the default) picks a free port. */
  port?: number;
  apiKey?: string;
  apiSecret?: string;
  /** Server time = local time + skewMs, for testing the adapter's time sync. */
  skewMs?: number;
  /** Hedge mode (dualSidePosition): orders name LONG or SHORT, positions are kept per side. */
  hedgeMode?: boolean;
  /** Replaces the default symbols (BTCUSDT, ETHUSDT). */
  symbols?: Record<string, SymbolRules & { markPrice: string }>;
}

export interface BinanceDouble {
  url: string;
  port: number;
  apiKey: string;
  apiSecret: string;
  setPosition(symbol: string, amount: string, positionSide?: PositionSide): void;
  setMarkPrice(symbol: string, price: string): void;
  setRules(symbol: string, rules: SymbolRules): void;
  setClockSkew(skewMs: number): void;
  injectFault(fault: Fault): void;
  /** Faults not yet consumed. */
  pendingFaults(): Fault[];
  orders(): DoubleOrder[];
  positions(): DoublePosition[];
  stop(): Promise<void>;
}

/** BTCUSDT and ETHUSDT, with Binance's rules for them (as of 2026) and a mark price. */
export const DEFAULT_SYMBOLS: Record<string, SymbolRules & { markPrice: string }> = {
  BTCUSDT: {
    stepSize: '0.001',
    minQty: '0.001',
    minNotional: '100',
    maxQty: '1000',
    marketMaxQty: '120',
    tickSize: '0.10',
    markPrice: '60000.00',
  },
  ETHUSDT: {
    stepSize: '0.001',
    minQty: '0.001',
    minNotional: '20',
    maxQty: '10000',
    marketMaxQty: '2000',
    tickSize: '0.01',
    markPrice: '3000.00',
  },
};

const DEFAULT_RECV_WINDOW = 5000;
const MAX_RECV_WINDOW = 60_000;
/** Binance refuses a timestamp more than this far ahead of its clock. */
const MAX_AHEAD_MS = 1000;
const QUANTITY_PATTERN = /^([0-9]{1,20})(\.[0-9]{1,20})?$/;
const CLIENT_ORDER_ID_PATTERN = /^[.A-Z:/a-z0-9_-]{1,36}$/;
const ORDER_PATH = '/fapi/v1/order';
/** The double's own control endpoints (not Binance's). */
const CONTROL_PREFIX = '/double/v1/';

/** A Binance error: the HTTP status and the `{code, msg}` body. */
class BinanceError extends Error {
  constructor(
    readonly status: number,
    readonly code: number,
    msg: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(msg);
  }
}

const missing = (name: string) =>
  new BinanceError(400, -1102, `Mandatory parameter '${name}' was not sent, was empty/null, or malformed.`);
const invalidSymbol = () => new BinanceError(400, -1121, 'Invalid symbol.');

interface SymbolState {
  rules: Required<SymbolRules>;
  markPrice: Dec;
}

interface PositionState {
  amount: Dec;
  entryPrice: Dec;
  updateTime: number;
}

function decimals(step: string): number {
  const dot = step.indexOf('.');
  return dot < 0 ? 0 : step.slice(dot + 1).replace(/0+$/, '').length;
}

function completeRules(rules: SymbolRules): Required<SymbolRules> {
  return {
    maxQty: '1000000',
    marketMaxQty: rules.maxQty ?? '1000000',
    tickSize: '0.01',
    ...rules,
  };
}

/** Starts the double on 127.0.0.1. Stop it with `stop()`. */
export async function startBinanceDouble(options: BinanceDoubleOptions = {}): Promise<BinanceDouble> {
  const apiKey = options.apiKey ?? randomBytes(32).toString('hex');
  const apiSecret = options.apiSecret ?? randomBytes(32).toString('hex');
  const hedgeMode = options.hedgeMode ?? false;
  let skewMs = options.skewMs ?? 0;
  const symbols = new Map<string, SymbolState>();
  const positionBook = new Map<string, PositionState>();
  const orderBook: DoubleOrder[] = [];
  const faults: Fault[] = [];
  let nextOrderId = 1_000_001;

  const serverTime = () => Date.now() + skewMs;
  for (const [symbol, { markPrice, ...rules }] of Object.entries(options.symbols ?? DEFAULT_SYMBOLS)) {
    symbols.set(symbol, { rules: completeRules(rules), markPrice: new Dec(markPrice) });
  }

  const symbolState = (symbol: string | undefined): SymbolState => {
    if (symbol === undefined) throw missing('symbol');
    const state = symbols.get(symbol);
    if (!state) throw invalidSymbol();
    return state;
  };
  const positionKey = (symbol: string, side: PositionSide) => `${symbol}|${side}`;
  const positionSides: PositionSide[] = hedgeMode ? ['LONG', 'SHORT'] : ['BOTH'];
  const position = (symbol: string, side: PositionSide): PositionState =>
    positionBook.get(positionKey(symbol, side)) ?? { amount: new Dec(0), entryPrice: new Dec(0), updateTime: 0 };

  /** The first queued fault that applies to this request, removed from the queue. */
  const takeFault = (path: string, method: string, applies: (fault: Fault) => boolean): Fault | undefined => {
    const index = faults.findIndex(
      (fault) =>
        (fault.path === undefined || fault.path === path) &&
        (fault.method === undefined || fault.method === method) &&
        applies(fault),
    );
    return index < 0 ? undefined : faults.splice(index, 1)[0];
  };

  const qtyText = (symbol: string, value: Dec) =>
    value.toFixed(decimals(symbols.get(symbol)?.rules.stepSize ?? '0.001'));
  const priceText = (symbol: string, value: Dec) =>
    value.toFixed(decimals(symbols.get(symbol)?.rules.tickSize ?? '0.01'));

  /** Moves a position by a fill: the entry price averages on increase, stays on decrease, resets on a flip. */
  const applyFill = (symbol: string, side: PositionSide, signedQty: Dec, price: Dec, now: number) => {
    const before = position(symbol, side);
    const amount = before.amount.add(signedQty);
    let entryPrice: Dec;
    if (amount.isZero()) entryPrice = new Dec(0);
    else if (before.amount.isZero() || amount.isNeg() !== before.amount.isNeg()) entryPrice = price;
    else if (amount.abs().gt(before.amount.abs())) {
      entryPrice = before.amount.abs().mul(before.entryPrice).add(signedQty.abs().mul(price)).div(amount.abs());
    } else entryPrice = before.entryPrice;
    positionBook.set(positionKey(symbol, side), { amount, entryPrice, updateTime: now });
  };

  // --- the signed-request check, as Binance does it -------------------------------------------------------------

  const authenticate = (req: IncomingMessage, rawQuery: string, rawBody: string, params: URLSearchParams) => {
    const key = req.headers['x-mbx-apikey'];
    if (typeof key !== 'string' || key === '') throw new BinanceError(401, -2014, 'API-key format invalid.');
    if (key !== apiKey) throw new BinanceError(401, -2015, 'Invalid API-key, IP, or permissions for action.');
    const signature = params.get('signature');
    if (!signature) throw missing('signature');
    const unsigned = (raw: string) =>
      raw
        .split('&')
        .filter((part) => part !== '' && !part.startsWith('signature='))
        .join('&');
    // Binance signs totalParams: the query string concatenated with the body.
    const expected = createHmac('sha256', apiSecret)
      .update(unsigned(rawQuery) + unsigned(rawBody))
      .digest();
    const given = Buffer.from(signature, 'hex');
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      throw new BinanceError(400, -1022, 'Signature for this request is not valid.');
    }
    const timestampText = params.get('timestamp');
    if (!timestampText || !/^\d+$/.test(timestampText)) throw missing('timestamp');
    const recvWindowText = params.get('recvWindow');
    const recvWindow = recvWindowText ? Number(recvWindowText) : DEFAULT_RECV_WINDOW;
    if (!Number.isFinite(recvWindow) || recvWindow <= 0 || recvWindow > MAX_RECV_WINDOW) {
      throw new BinanceError(400, -1131, 'recvWindow must be less than 60000');
    }
    const timestamp = Number(timestampText);
    const now = serverTime();
    const stale = () => new BinanceError(400, -1021, 'Timestamp for this request is outside of the recvWindow.');
    if (timestamp < now - recvWindow) throw stale();
    if (timestamp > now + MAX_AHEAD_MS) {
      throw new BinanceError(400, -1021, "Timestamp for this request was 1000ms ahead of the server's time.");
    }
    const here = new URL(req.url ?? '/', 'http://x').pathname;
    if (takeFault(here, req.method ?? 'GET', (fault) => fault.kind === 'timestamp')) throw stale();
  };

  // --- the endpoints --------------------------------------------------------------------------------------------

  const exchangeInfo = () => ({
    timezone: 'UTC',
    serverTime: serverTime(),
    futuresType: 'U_MARGINED',
    rateLimits: [
      { rateLimitType: 'REQUEST_WEIGHT', interval: 'MINUTE', intervalNum: 1, limit: 2400 },
      { rateLimitType: 'ORDERS', interval: 'MINUTE', intervalNum: 1, limit: 1200 },
      { rateLimitType: 'ORDERS', interval: 'SECOND', intervalNum: 10, limit: 300 },
    ],
    exchangeFilters: [],
    assets: [{ asset: 'USDT', marginAvailable: true, autoAssetExchange: '-10000' }],
    symbols: [...symbols].map(([symbol, { rules }]) => ({
      symbol,
      pair: symbol,
      contractType: 'PERPETUAL',
      deliveryDate: 4133404800000,
      onboardDate: 1569398400000,
      status: 'TRADING',
      baseAsset: symbol.replace(/USDT$/, ''),
      quoteAsset: 'USDT',
      marginAsset: 'USDT',
      pricePrecision: decimals(rules.tickSize),
      quantityPrecision: decimals(rules.stepSize),
      baseAssetPrecision: 8,
      quotePrecision: 8,
      underlyingType: 'COIN',
      triggerProtect: '0.0500',
      filters: [
        { filterType: 'PRICE_FILTER', minPrice: rules.tickSize, maxPrice: '4529764', tickSize: rules.tickSize },
        { filterType: 'LOT_SIZE', stepSize: rules.stepSize, minQty: rules.minQty, maxQty: rules.maxQty },
        { filterType: 'MARKET_LOT_SIZE', stepSize: rules.stepSize, minQty: rules.minQty, maxQty: rules.marketMaxQty },
        { filterType: 'MAX_NUM_ORDERS', limit: 200 },
        { filterType: 'MAX_NUM_ALGO_ORDERS', limit: 10 },
        { filterType: 'MIN_NOTIONAL', notional: rules.minNotional },
        { filterType: 'PERCENT_PRICE', multiplierUp: '1.0500', multiplierDown: '0.9500', multiplierDecimal: '4' },
      ],
      orderTypes: [
        'LIMIT',
        'MARKET',
        'STOP',
        'STOP_MARKET',
        'TAKE_PROFIT',
        'TAKE_PROFIT_MARKET',
        'TRAILING_STOP_MARKET',
      ],
      timeInForce: ['GTC', 'IOC', 'FOK', 'GTX', 'GTD'],
    })),
  });

  const premiumIndex = (symbol: string) => {
    const { markPrice } = symbolState(symbol);
    const now = serverTime();
    return {
      symbol,
      markPrice: markPrice.toFixed(8),
      indexPrice: markPrice.toFixed(8),
      estimatedSettlePrice: markPrice.toFixed(8),
      lastFundingRate: '0.00010000',
      interestRate: '0.00010000',
      nextFundingTime: Math.ceil(now / 28_800_000) * 28_800_000,
      time: now,
    };
  };

  const positionRisk = (symbol: string) =>
    positionSides.map((side) => {
      const { amount, entryPrice, updateTime } = position(symbol, side);
      const { markPrice } = symbolState(symbol);
      const pnl = amount.mul(markPrice.sub(entryPrice));
      return {
        symbol,
        positionAmt: qtyText(symbol, amount),
        entryPrice: entryPrice.toFixed(8),
        breakEvenPrice: entryPrice.toFixed(8),
        markPrice: markPrice.toFixed(8),
        unRealizedProfit: pnl.toFixed(8),
        liquidationPrice: '0',
        leverage: '20',
        maxNotionalValue: '25000000',
        marginType: 'cross',
        isolatedMargin: '0.00000000',
        isAutoAddMargin: 'false',
        positionSide: side,
        notional: amount.mul(markPrice).toFixed(8),
        isolatedWallet: '0',
        updateTime,
      };
    });

  /** V3 (Binance's current endpoint): fewer fields, and only the sides that hold a position. */
  const positionRiskV3 = (symbol: string) =>
    positionSides
      .filter((side) => !position(symbol, side).amount.isZero())
      .map((side) => {
        const { amount, entryPrice, updateTime } = position(symbol, side);
        const { markPrice } = symbolState(symbol);
        const notional = amount.mul(markPrice);
        return {
          symbol,
          positionSide: side,
          positionAmt: qtyText(symbol, amount),
          entryPrice: entryPrice.toFixed(8),
          breakEvenPrice: entryPrice.toFixed(8),
          markPrice: markPrice.toFixed(8),
          unRealizedProfit: amount.mul(markPrice.sub(entryPrice)).toFixed(8),
          liquidationPrice: '0',
          isolatedMargin: '0',
          notional: notional.toFixed(8),
          marginAsset: 'USDT',
          isolatedWallet: '0',
          initialMargin: notional.abs().div(20).toFixed(8),
          maintMargin: notional.abs().mul('0.004').toFixed(8),
          positionInitialMargin: notional.abs().div(20).toFixed(8),
          openOrderInitialMargin: '0',
          adl: 0,
          bidNotional: '0',
          askNotional: '0',
          updateTime,
        };
      });

  const orderView = (order: DoubleOrder) => ({
    orderId: order.orderId,
    symbol: order.symbol,
    status: order.status,
    clientOrderId: order.clientOrderId,
    price: '0',
    avgPrice: order.avgPrice,
    origQty: order.origQty,
    executedQty: order.executedQty,
    cumQty: order.executedQty,
    cumQuote: order.cumQuote,
    timeInForce: 'GTC',
    type: order.type,
    reduceOnly: order.reduceOnly,
    closePosition: false,
    side: order.side,
    positionSide: order.positionSide,
    stopPrice: '0',
    workingType: 'CONTRACT_PRICE',
    priceProtect: false,
    origType: order.type,
    priceMatch: 'NONE',
    selfTradePreventionMode: 'EXPIRE_MAKER',
    goodTillDate: 0,
    time: order.time,
    updateTime: order.updateTime,
  });

  /** Validates and executes a market order. Returns the order as stored and as the POST response shows it. */
  const placeOrder = (params: URLSearchParams, path: string): { stored: DoubleOrder; shown: DoubleOrder } => {
    const symbol = params.get('symbol');
    if (!symbol) throw missing('symbol');
    const { rules, markPrice } = symbolState(symbol);
    const side = params.get('side');
    if (!side) throw missing('side');
    if (side !== 'BUY' && side !== 'SELL') throw new BinanceError(400, -1117, 'Invalid side.');
    const type = params.get('type');
    if (!type) throw missing('type');
    if (type !== 'MARKET') throw new BinanceError(400, -1116, 'Invalid orderType.');
    const quantityText = params.get('quantity');
    if (!quantityText) throw missing('quantity');
    if (!QUANTITY_PATTERN.test(quantityText)) {
      throw new BinanceError(
        400,
        -1100,
        `Illegal characters found in parameter 'quantity'; legal range is '${QUANTITY_PATTERN.source}'.`,
      );
    }
    const reduceOnlyText = params.get('reduceOnly');
    if (reduceOnlyText !== null && reduceOnlyText !== 'true' && reduceOnlyText !== 'false') {
      throw new BinanceError(400, -1100, "Illegal characters found in parameter 'reduceOnly'.");
    }
    const reduceOnly = reduceOnlyText === 'true';
    const positionSideText = params.get('positionSide') ?? 'BOTH';
    if (positionSideText !== 'BOTH' && positionSideText !== 'LONG' && positionSideText !== 'SHORT') {
      throw new BinanceError(400, -1100, "Illegal characters found in parameter 'positionSide'.");
    }
    const positionSide: PositionSide = positionSideText;
    if (hedgeMode !== (positionSide !== 'BOTH')) {
      throw new BinanceError(400, -4061, "Order's position side does not match user's setting.");
    }
    if (hedgeMode && reduceOnlyText !== null) {
      throw new BinanceError(400, -1106, "Parameter 'reduceonly' sent when not required.");
    }
    const clientOrderId = params.get('newClientOrderId') ?? `double-${randomBytes(8).toString('hex')}`;
    if (!CLIENT_ORDER_ID_PATTERN.test(clientOrderId)) {
      throw new BinanceError(400, -4015, 'Client order id is not valid.');
    }
    // Binance refuses a client order id only while an order holding it is open; a filled one frees it.
    if (
      orderBook.some(
        (o) => o.clientOrderId === clientOrderId && (o.status === 'NEW' || o.status === 'PARTIALLY_FILLED'),
      )
    ) {
      throw new BinanceError(400, -4116, 'ClientOrderId is duplicated.');
    }

    const qty = new Dec(quantityText);
    if (qty.lte(0)) throw new BinanceError(400, -4003, 'Quantity less than or equal to zero.');
    if (decimals(quantityText) > decimals(rules.stepSize)) {
      throw new BinanceError(400, -1111, 'Precision is over the maximum defined for this asset.');
    }
    if (qty.lt(rules.minQty) || !qty.mod(rules.stepSize).isZero()) {
      throw new BinanceError(400, -1013, 'Filter failure: MARKET_LOT_SIZE');
    }
    if (qty.gt(rules.marketMaxQty)) throw new BinanceError(400, -4005, 'Quantity greater than max quantity.');
    const notional = qty.mul(markPrice);
    if (!reduceOnly && notional.lt(rules.minNotional)) {
      throw new BinanceError(
        400,
        -4164,
        `Order's notional must be no smaller than ${rules.minNotional} (unless you choose reduce only).`,
      );
    }
    // What the order does to its position: in hedge mode, BUY on SHORT and SELL on LONG close.
    const signed = side === 'BUY' ? qty : qty.neg();
    const held = position(symbol, positionSide).amount;
    const closes = hedgeMode ? (positionSide === 'LONG') !== (side === 'BUY') : reduceOnly;
    if (closes && (held.isZero() || signed.isNeg() === held.isNeg() || qty.gt(held.abs()))) {
      throw new BinanceError(400, -2022, 'ReduceOnly Order is rejected.');
    }

    const now = serverTime();
    const fault = takeFault(path, 'POST', (f) => f.kind === 'partial-fill' || f.kind === 'expire');
    let executed = qty;
    if (fault?.kind === 'expire') executed = new Dec(0);
    if (fault?.kind === 'partial-fill') {
      const part = qty.mul(fault.fraction);
      executed = part.sub(part.mod(rules.stepSize));
    }
    if (!executed.isZero()) applyFill(symbol, positionSide, signed.isNeg() ? executed.neg() : executed, markPrice, now);
    const filled = !executed.isZero();
    const stored: DoubleOrder = {
      orderId: nextOrderId++,
      clientOrderId,
      symbol: symbol,
      side,
      positionSide,
      type: 'MARKET',
      origQty: qtyText(symbol, qty),
      executedQty: qtyText(symbol, executed),
      avgPrice: filled ? priceText(symbol, markPrice) : '0.00',
      cumQuote: executed.mul(markPrice).toFixed(8),
      reduceOnly,
      status: fault ? 'EXPIRED' : 'FILLED',
      time: now,
      updateTime: now,
    };
    orderBook.push(stored);
    const shown: DoubleOrder =
      fault?.kind === 'partial-fill' && filled ? { ...stored, status: 'PARTIALLY_FILLED' } : stored;
    return { stored, shown };
  };

  const findOrder = (params: URLSearchParams) => {
    const symbol = params.get('symbol') ?? undefined;
    symbolState(symbol);
    const orderId = params.get('orderId');
    const origClientOrderId = params.get('origClientOrderId');
    if (!orderId && !origClientOrderId) {
      throw new BinanceError(
        400,
        -1102,
        "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!",
      );
    }
    // With several orders under one client order id (a resend after a fill), the first one answers.
    const order = orderBook.find(
      (o) =>
        o.symbol === symbol &&
        (orderId ? String(o.orderId) === orderId : true) &&
        (origClientOrderId ? o.clientOrderId === origClientOrderId : true),
    );
    if (!order) throw new BinanceError(400, -2013, 'Order does not exist.');
    return orderView(order);
  };

  // --- the HTTP plumbing ----------------------------------------------------------------------------------------

  const positionList = (): DoublePosition[] =>
    [...positionBook].map(([key, { amount, entryPrice }]) => {
      const [symbol = '', positionSide = 'BOTH'] = key.split('|');
      return {
        symbol,
        positionSide: positionSide as PositionSide,
        positionAmt: formatDec(amount),
        entryPrice: formatDec(entryPrice),
      };
    });

  const send = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
    res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
    res.end(JSON.stringify(body));
  };

  /**
   * `GET /double/v1/ping` says it is the double; `POST /double/v1/position?symbol=&amount=[&positionSide=]` sets a
   * position; `POST /double/v1/fault` with a JSON fault body queues it; `GET /double/v1/orders` lists the orders,
   * `GET /double/v1/positions` the positions.
   */
  const control = (method: string, what: string, params: URLSearchParams, rawBody: string, res: ServerResponse) => {
    if (method === 'GET' && what === 'ping') return send(res, 200, { double: 'binance-usdm' });
    if (method === 'GET' && what === 'orders') return send(res, 200, orderBook);
    if (method === 'GET' && what === 'positions') return send(res, 200, positionList());
    if (method === 'POST' && what === 'position') {
      const symbol = params.get('symbol') ?? undefined;
      const amount = params.get('amount');
      if (amount === null || !/^-?\d+(\.\d+)?$/.test(amount)) throw missing('amount');
      const side = (params.get('positionSide') ?? 'BOTH') as PositionSide;
      if (!positionSides.includes(side)) throw new BinanceError(400, -4061, `positionSide ${side} not in this mode.`);
      const { markPrice } = symbolState(symbol);
      const value = new Dec(amount);
      positionBook.set(positionKey(symbol ?? '', side), {
        amount: value,
        entryPrice: value.isZero() ? new Dec(0) : markPrice,
        updateTime: serverTime(),
      });
      return send(res, 200, { symbol, positionSide: side, positionAmt: formatDec(value) });
    }
    if (method === 'POST' && what === 'fault') {
      faults.push(JSON.parse(rawBody) as Fault);
      return send(res, 200, { pending: faults.length });
    }
    return send(res, 404, { code: -1000, msg: `No control ${method} ${what} in the double.` });
  };

  const route = (req: IncomingMessage, res: ServerResponse, rawBody: string) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const path = url.pathname;
    const method = req.method ?? 'GET';
    const rawQuery = url.search.replace(/^\?/, '');
    const params = new URLSearchParams(rawQuery);
    for (const [name, value] of new URLSearchParams(rawBody)) params.append(name, value);

    // The double's own controls, for a person (or the demo) driving it over HTTP; never faulted, never signed.
    if (path.startsWith(CONTROL_PREFIX))
      return control(method, path.slice(CONTROL_PREFIX.length), params, rawBody, res);

    const gateway = takeFault(path, method, (f) => f.kind === 'rate-limit' || (f.kind === 'http-5xx' && !f.executed));
    if (gateway?.kind === 'rate-limit') {
      const msg =
        gateway.status === 418
          ? `Way too many requests; IP banned until ${serverTime() + gateway.retryAfterS * 1000}.`
          : 'Too many requests; current limit of IP is 2400 requests per minute.';
      throw new BinanceError(gateway.status, -1003, msg, { 'Retry-After': String(gateway.retryAfterS) });
    }
    if (gateway?.kind === 'http-5xx') {
      throw new BinanceError(
        gateway.status,
        -1001,
        'Internal error; unable to process your request. Please try again.',
      );
    }

    if (method === 'GET' && path === '/fapi/v1/ping') return send(res, 200, {});
    if (method === 'GET' && path === '/fapi/v1/time') return send(res, 200, { serverTime: serverTime() });
    if (method === 'GET' && path === '/fapi/v1/exchangeInfo') return send(res, 200, exchangeInfo());
    if (method === 'GET' && path === '/fapi/v1/premiumIndex') {
      const symbol = params.get('symbol');
      return send(res, 200, symbol ? premiumIndex(symbol) : [...symbols.keys()].map(premiumIndex));
    }

    const signed =
      (method === 'GET' &&
        (path === '/fapi/v2/positionRisk' ||
          path === '/fapi/v3/positionRisk' ||
          path === '/fapi/v1/positionSide/dual')) ||
      ((method === 'GET' || method === 'POST') && path === ORDER_PATH);
    if (!signed) return send(res, 404, { code: -1000, msg: `No route for ${method} ${path} in the double.` });
    authenticate(req, rawQuery, rawBody, params);

    if (path === '/fapi/v1/positionSide/dual') return send(res, 200, { dualSidePosition: hedgeMode });
    if (path === '/fapi/v2/positionRisk') {
      const symbol = params.get('symbol');
      if (symbol) symbolState(symbol);
      return send(res, 200, (symbol ? [symbol] : [...symbols.keys()]).flatMap(positionRisk));
    }
    if (path === '/fapi/v3/positionRisk') {
      const symbol = params.get('symbol');
      if (symbol) symbolState(symbol);
      return send(res, 200, (symbol ? [symbol] : [...symbols.keys()]).flatMap(positionRiskV3));
    }
    if (method === 'GET') return sendOrder(res, path, method, findOrder(params));

    const { stored, shown } = placeOrder(params, path);
    const after = takeFault(
      path,
      'POST',
      (f) => f.kind === 'lose-response-after-fill' || (f.kind === 'http-5xx' && f.executed === true),
    );
    if (after?.kind === 'lose-response-after-fill') {
      req.socket.destroy();
      return;
    }
    if (after?.kind === 'http-5xx') {
      throw new BinanceError(after.status, -1001, 'Internal error; unable to process your request. Please try again.');
    }
    // Binance's default for futures is ACK: the order as accepted, before its fills are reported.
    const ack = (params.get('newOrderRespType') ?? 'ACK') === 'ACK';
    const view = orderView(
      ack
        ? {
            ...stored,
            status: 'NEW',
            executedQty: qtyText(stored.symbol, new Dec(0)),
            avgPrice: '0.00',
            cumQuote: '0.00000000',
          }
        : shown,
    );
    return sendOrder(res, path, method, view);
  };

  /** An order answer, rewritten by a queued `rewrite-answer` fault when one applies. */
  const sendOrder = (res: ServerResponse, path: string, method: string, view: unknown) => {
    const fault = takeFault(path, method, (f) => f.kind === 'rewrite-answer');
    if (fault?.kind !== 'rewrite-answer') return send(res, 200, view);
    const body: Record<string, unknown> = { ...(view as Record<string, unknown>), ...fault.set };
    const text = JSON.stringify(body);
    if (fault.padTo !== undefined && fault.padTo > text.length) {
      body.padding = 'x'.repeat(fault.padTo - text.length - ',"padding":""'.length);
    }
    return send(res, 200, body);
  };

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const path = new URL(req.url ?? '/', 'http://127.0.0.1').pathname;
      const delay = path.startsWith(CONTROL_PREFIX)
        ? undefined
        : takeFault(path, req.method ?? 'GET', (f) => f.kind === 'delay');
      if (delay?.kind === 'delay') {
        setTimeout(() => handle(req, res, chunks), delay.ms);
        return;
      }
      handle(req, res, chunks);
    });
  });

  /** A request, read whole, answered (Binance's errors as Binance sends them). */
  function handle(req: IncomingMessage, res: ServerResponse, chunks: Buffer[]) {
    try {
      route(req, res, Buffer.concat(chunks).toString('utf8'));
    } catch (error) {
      if (error instanceof BinanceError) {
        send(res, error.status, { code: error.code, msg: error.message }, error.headers);
      } else {
        send(res, 500, {
          code: -1000,
          msg: `An unknown error occurred while processing the request: ${String(error)}`,
        });
      }
    }
  }
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    port,
    apiKey,
    apiSecret,
    setPosition(symbol, amount, positionSide = 'BOTH') {
      const { markPrice } = symbolState(symbol);
      const value = new Dec(amount);
      positionBook.set(positionKey(symbol, positionSide), {
        amount: value,
        entryPrice: value.isZero() ? new Dec(0) : markPrice,
        updateTime: serverTime(),
      });
    },
    setMarkPrice(symbol, price) {
      symbolState(symbol).markPrice = new Dec(price);
    },
    setRules(symbol, rules) {
      const existing = symbols.get(symbol);
      symbols.set(symbol, { rules: completeRules(rules), markPrice: existing?.markPrice ?? new Dec(1) });
    },
    setClockSkew(ms) {
      skewMs = ms;
    },
    injectFault(fault) {
      faults.push(fault);
    },
    pendingFaults: () => faults.map((fault) => ({ ...fault })),
    orders: () => orderBook.map((order) => ({ ...order })),
    positions: positionList,
    stop: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((error) => (error ? reject(error) : resolve()));
      }),
  };
}
