import { createHash } from 'node:crypto';
import { z } from 'zod';
import { Dec, formatDec } from '../../lib/decimal';
import { ORDER_STATUSES, type ExchangeOrder, type MarketOrderRequest, type SymbolRules } from './port';

/**
 * Binance USD-M futures' wire, as pure functions: the client order id a plan's order carries, the order's
 * parameters, the answers read (order, position, exchange rules) and every failure sorted by what it means for the
 * plan. No I/O: the adapter (binance.ts) calls these; their tables are in binance.test.ts.
 */

/** Binance's request weight is counted per minute: without Retry-After, wait that long. */
const DEFAULT_RETRY_AFTER_MS = 60_000;

/** Binance's rule for `newClientOrderId`. */
export const CLIENT_ORDER_ID_PATTERN = /^[.A-Z:/a-z0-9_-]{1,36}$/;
/** Reserved for hashed ids: a plan id starting with it is hashed too, so the two forms never meet. */
export const HASHED_CLIENT_ORDER_ID_PREFIX = 'qpc:';

const AUTH_CODES: ReadonlySet<number> = new Set([-2014, -2015, -1022]);
/** Binance's "execution status unknown" answers. */
const UNKNOWN_CODES: ReadonlySet<number> = new Set([-1000, -1001, -1006, -1007]);
export const TIMESTAMP_CODE = -1021;
const THROTTLED_CODE = -1008;
export const NO_SUCH_ORDER_CODE = -2013;
export const INVALID_SYMBOL_CODE = -1121;
const POSITION_SIDE_MISMATCH_CODE = -4061;
const DUPLICATE_CLIENT_ORDER_ID_CODE = -4116;

// --- pure decisions ---------------------------------------------------------------------------------------------

/**
 * The client order id a plan's order carries on Binance, which allows `^[.A-Z:/a-z0-9_-]{1,36}$`: the plan id itself
 * when it fits (the contract's 16-hex plan ids always do) and does not start with `qpc:`; otherwise `qpc:` and the
 * first 32 characters of the base64url SHA-256 of the plan id (192 bits). The two forms cannot meet (only hashed ids
 * start with `qpc:`), and two plan ids share a hashed id only on a SHA-256 collision. Deterministic: every retry of a
 * plan asks for the same id.
 */
export function binanceClientOrderId(planId: string): string {
  if (CLIENT_ORDER_ID_PATTERN.test(planId) && !planId.startsWith(HASHED_CLIENT_ORDER_ID_PREFIX)) return planId;
  const hash = createHash('sha256').update(planId, 'utf8').digest('base64url');
  return `${HASHED_CLIENT_ORDER_ID_PREFIX}${hash.slice(0, 36 - HASHED_CLIENT_ORDER_ID_PREFIX.length)}`;
}

/**
 * The request parameters of a plan's market order, every value a string (quantities exact, never JS numbers).
 * One-way mode: `reduceOnly` as the plan says. Hedge mode: the position side instead (Binance refuses `reduceOnly`
 * there, -1106): a reduce-only SELL closes LONG and a reduce-only BUY closes SHORT; an opening BUY is LONG, SELL SHORT.
 */
export function orderParams(
  request: MarketOrderRequest,
  clientOrderId: string,
  hedgeMode: boolean,
): Record<string, string> {
  const params: Record<string, string> = {
    symbol: request.symbol,
    side: request.side,
    type: 'MARKET',
    quantity: formatDec(new Dec(request.qty)),
    newClientOrderId: clientOrderId,
    newOrderRespType: 'RESULT',
  };
  if (hedgeMode) {
    const long = request.reduceOnly ? request.side === 'SELL' : request.side === 'BUY';
    params.positionSide = long ? 'LONG' : 'SHORT';
  } else if (request.reduceOnly) {
    params.reduceOnly = 'true';
  }
  return params;
}

export const DecimalText = z.string().regex(/^-?(\d+(\.\d*)?|\.\d+)$/, 'must be a decimal string');

const OrderJson = z.object({
  orderId: z.union([z.number().int(), z.string().regex(/^\d+$/)]),
  clientOrderId: z.string(),
  symbol: z.string(),
  status: z.enum(ORDER_STATUSES),
  side: z.enum(['BUY', 'SELL']),
  positionSide: z.enum(['BOTH', 'LONG', 'SHORT']).optional(),
  origQty: DecimalText,
  executedQty: DecimalText,
  avgPrice: DecimalText,
  reduceOnly: z.boolean().optional(),
  time: z.number().optional(),
  updateTime: z.number().optional(),
});

/**
 * Binance's order JSON as the chain's order: `qty` is origQty, `filled_qty` executedQty, `avg_price` avgPrice, all as
 * plain decimals (Binance pads them: "0.010"); a hedge-mode order that closes its side counts as reduce-only.
 * Throws when the JSON is not an order.
 */
export function orderFromBinance(json: unknown, now: number): ExchangeOrder {
  const order = OrderJson.parse(json);
  const closesSide =
    (order.positionSide === 'LONG' && order.side === 'SELL') ||
    (order.positionSide === 'SHORT' && order.side === 'BUY');
  return {
    order_id: String(order.orderId),
    client_order_id: order.clientOrderId,
    symbol: order.symbol,
    side: order.side,
    qty: formatDec(new Dec(order.origQty)),
    reduce_only: order.reduceOnly === true || closesSide,
    status: order.status,
    filled_qty: formatDec(new Dec(order.executedQty)),
    avg_price: formatDec(new Dec(order.avgPrice)),
    placed_at: order.time ?? order.updateTime ?? now,
  };
}

const PositionRows = z.array(z.object({ symbol: z.string(), positionSide: z.string(), positionAmt: DecimalText }));

/**
 * The signed net position of a symbol from Binance's position risk rows: one BOTH row in one-way mode, LONG and
 * SHORT rows in hedge mode (SHORT already negative), none at all when V3 has nothing to show.
 */
export function netPosition(rows: unknown, symbol: string): Dec {
  return PositionRows.parse(rows)
    .filter((row) => row.symbol === symbol)
    .reduce((sum, row) => sum.add(new Dec(row.positionAmt)), new Dec(0));
}

const ExchangeInfoJson = z.object({
  symbols: z.array(z.object({ symbol: z.string(), filters: z.array(z.looseObject({ filterType: z.string() })) })),
});

/** A filter's field as a plain decimal, or undefined when it is absent, not a decimal, or 0 ("none"). */
function positiveField(filter: Record<string, unknown> | undefined, field: string): string | undefined {
  const raw = filter?.[field];
  if (typeof raw !== 'string' || !DecimalText.safeParse(raw).success) return undefined;
  const value = new Dec(raw);
  return value.gt(0) ? formatDec(value) : undefined;
}

/**
 * Every listed symbol's rules from exchangeInfo: step, least and largest quantity from MARKET_LOT_SIZE (what a market
 * order is checked against), field by field falling back to LOT_SIZE where MARKET_LOT_SIZE says 0 or nothing; the
 * least notional from MIN_NOTIONAL's `notional`. '0' where Binance sets nothing.
 */
export function rulesFromExchangeInfo(info: unknown): Map<string, SymbolRules> {
  const rules = new Map<string, SymbolRules>();
  for (const { symbol, filters } of ExchangeInfoJson.parse(info).symbols) {
    const filter = (type: string) => filters.find((f) => f.filterType === type);
    const market = filter('MARKET_LOT_SIZE');
    const lot = filter('LOT_SIZE');
    const pick = (field: string) => positiveField(market, field) ?? positiveField(lot, field) ?? '0';
    rules.set(symbol, {
      symbol,
      step_size: pick('stepSize'),
      min_qty: pick('minQty'),
      max_qty: pick('maxQty'),
      min_notional: positiveField(filter('MIN_NOTIONAL'), 'notional') ?? '0',
    });
  }
  return rules;
}

/** How a request failed, as far as the adapter can tell. */
export type BinanceFailure =
  | { kind: 'http'; status: number; code: number | null; msg: string; headers: Record<string, string> }
  /** No answer: `connected` false when the request never left this machine (refused, no DNS). */
  | { kind: 'network'; code: string; connected: boolean }
  | { kind: 'other'; message: string };

const NEVER_CONNECTED: ReadonlySet<string> = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN']);

function headerRecord(headers: unknown): Record<string, string> {
  const record: Record<string, string> = {};
  if (!headers || typeof headers !== 'object') return record;
  for (const [name, value] of Object.entries(headers as Record<string, unknown>)) {
    if (typeof value === 'string' || typeof value === 'number') record[name.toLowerCase()] = String(value);
  }
  return record;
}

interface HttpAnswer {
  status?: unknown;
  data?: unknown;
  headers?: unknown;
}

/**
 * What the library threw, sorted. With `parseExceptions: false` it rethrows axios's error: an HTTP answer in
 * `response`, or no `response` for a timeout or a reset connection; a non-200 success is thrown as the response.
 * Only the status, Binance's code and message and the headers are kept: the error also holds the signed URL and
 * the key's header, which must never be printed.
 */
export function binanceFailure(err: unknown): BinanceFailure {
  if (err && typeof err === 'object') {
    const e = err as HttpAnswer & { response?: HttpAnswer; code?: unknown };
    const response = e.response ?? (typeof e.status === 'number' && 'data' in e ? e : undefined);
    if (response && typeof response.status === 'number') {
      const data = (response.data && typeof response.data === 'object' ? response.data : {}) as {
        code?: unknown;
        msg?: unknown;
      };
      return {
        kind: 'http',
        status: response.status,
        code: typeof data.code === 'number' ? data.code : null,
        msg: typeof data.msg === 'string' ? data.msg : '',
        headers: headerRecord(response.headers),
      };
    }
    if (typeof e.code === 'string') return { kind: 'network', code: e.code, connected: !NEVER_CONNECTED.has(e.code) };
  }
  return { kind: 'other', message: err instanceof Error ? err.message : String(err) };
}

/**
 * How long to stay away after a 429 or 418: `Retry-After` (seconds, or an HTTP date), else a minute; for 418, an IP
 * ban, at least until the ban's end when Binance names it ("IP banned until 1700000120000").
 */
export function retryAfterMs(failure: Extract<BinanceFailure, { kind: 'http' }>, now: number): number {
  const header = failure.headers['retry-after'];
  let delay = DEFAULT_RETRY_AFTER_MS;
  if (header !== undefined && /^\d+$/.test(header.trim())) delay = Number(header.trim()) * 1000;
  else if (header !== undefined && !Number.isNaN(Date.parse(header))) delay = Math.max(0, Date.parse(header) - now);
  if (failure.status === 418) {
    const until = /banned until (\d+)/.exec(failure.msg);
    if (until) delay = Math.max(delay, Number(until[1]) - now);
  }
  return delay;
}

/** What an order request's failure means for the plan. */
export type OrderFailureKind =
  /** Not executed, come back later (429/418, 403 WAF, -1008, never connected). */
  | 'busy'
  /** The key or the signature was refused: a person must act. */
  | 'auth'
  /** -1021: the request's timestamp was refused; resync and send again. */
  | 'clock'
  /** -4061: the account's position mode changed; read it again. */
  | 'position_side'
  /** -4116: an open order already holds the client order id: look it up. */
  | 'duplicate'
  /** Binance refused the order (a filter, reduce-only, a parameter): a REJECTED order, nothing executed. */
  | 'rejected'
  /** It may or may not have been executed: look it up before anything is sent again. */
  | 'unknown';

export function orderFailureKind(failure: BinanceFailure): OrderFailureKind {
  if (failure.kind === 'network') return failure.connected ? 'unknown' : 'busy';
  if (failure.kind === 'other') return 'unknown';
  const { status, code } = failure;
  if (status === 429 || status === 418 || status === 403 || code === THROTTLED_CODE) return 'busy';
  if (status === 401 || (code !== null && AUTH_CODES.has(code))) return 'auth';
  if (code === TIMESTAMP_CODE) return 'clock';
  if (code === POSITION_SIDE_MISMATCH_CODE) return 'position_side';
  if (code === DUPLICATE_CLIENT_ORDER_ID_CODE) return 'duplicate';
  if (status >= 500 || status === 408 || (code !== null && UNKNOWN_CODES.has(code))) return 'unknown';
  // A 4xx without Binance's body came from something in between: not known to be Binance's refusal.
  return status >= 400 && status < 500 && code !== null ? 'rejected' : 'unknown';
}
