import { createHash } from 'node:crypto';
import type * as BinancePackage from 'binance';
import type { Redis, Result } from 'ioredis';
import { z } from 'zod';
import type { RedisKeys } from '../../contract/keys';
import { boundText } from '../../lib/bound';
import type { BinanceConfig, ExchangeName } from '../../lib/config';
import { Dec, formatDec } from '../../lib/decimal';
import { SEND_GUARD_LUA } from './send-guard';
import {
  ExchangeAuthError,
  ExchangeBusyError,
  ExchangeUnknownError,
  ORDER_STATUSES,
  OrderNotSentError,
  UnknownSymbolError,
  isFinalStatus,
  type ExchangeOrder,
  type ExchangePort,
  type MarketOrderRequest,
  type SymbolRules,
} from './port';

/**
 * Binance USD-M futures over the `binance` package's USDMClient (signing, the server-time offset), with the chain's
 * own rules on top: one order per plan under a client order id derived from the plan id, a lookup before anything is
 * sent again, decimals as exact strings, and every failure sorted into "not executed" (ExchangeBusyError), "refused"
 * (a REJECTED order, or ExchangeAuthError) or "unknown" (ExchangeUnknownError).
 */

/** The library waits 5 minutes by default; an Execute attempt lives within a permit of seconds. */
const REQUEST_TIMEOUT_MS = 10_000;
/**
 * The most of an answer read, per endpoint: an order, a position, a price or the time is a few hundred bytes (64 KiB
 * leaves room); exchangeInfo lists every symbol (some 2 MB on Binance: 8 MiB). A longer answer is not read further:
 * on a read it is an error, on an order an unknown result, looked up by client order id like a timeout.
 */
export const ANSWER_MAX_BYTES = 64 * 1024;
export const EXCHANGE_INFO_MAX_BYTES = 8 * 1024 * 1024;
/** How much of an order answer an ExchangeOrder keeps as `raw` (what a refused answer shows). */
const RAW_ANSWER_BYTES = 1024;
/**
 * Added to recvWindow before an order request whose result is unknown may be followed by another: our estimate of
 * Binance's clock is off by up to half a round trip, and the marker's timestamp is taken a moment before the
 * library takes the request's own.
 */
export const SEND_WINDOW_MARGIN_MS = 2_000;
/** The sent marker outlives any retry of a plan's Execute (a plan lives PLAN_MAX_AGE_S, an hour by default). */
const SENT_MARKER_TTL_S = 86_400;
/** A market order is final within milliseconds; an order still open after this many looks is left to a retry. */
const OPEN_ORDER_LOOKUPS = 3;
const OPEN_ORDER_LOOKUP_DELAY_MS = 300;
/** Clocks drift slowly; -1021 resyncs at once in between. */
const TIME_SYNC_INTERVAL_MS = 3_600_000;
/** Binance's request weight is counted per minute: without Retry-After, wait that long. */
const DEFAULT_RETRY_AFTER_MS = 60_000;
/** A 5xx or a network failure on a read: soon again, the activity's retry policy spaces further tries. */
const READ_RETRY_MS = 1_000;

const ORDER_ENDPOINT = 'fapi/v1/order';
/** Binance's rule for `newClientOrderId`. */
export const CLIENT_ORDER_ID_PATTERN = /^[.A-Z:/a-z0-9_-]{1,36}$/;
/** Reserved for hashed ids: a plan id starting with it is hashed too, so the two forms never meet. */
export const HASHED_CLIENT_ORDER_ID_PREFIX = 'qpc:';

const AUTH_CODES: ReadonlySet<number> = new Set([-2014, -2015, -1022]);
/** Binance's "execution status unknown" answers. */
const UNKNOWN_CODES: ReadonlySet<number> = new Set([-1000, -1001, -1006, -1007]);
const TIMESTAMP_CODE = -1021;
const THROTTLED_CODE = -1008;
const NO_SUCH_ORDER_CODE = -2013;
const INVALID_SYMBOL_CODE = -1121;
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

const DecimalText = z.string().regex(/^-?(\d+(\.\d*)?|\.\d+)$/, 'must be a decimal string');

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

// --- the sent marker --------------------------------------------------------------------------------------------

/**
 * Claims the right to send an order request under a client order id: refused while the last request's timestamp
 * plus its recvWindow and the margin has not passed (Binance could still execute it), else the marker is written
 * with this request's timestamp, in one step so two calls for one plan cannot both send.
 *
 * A marker whose window has passed means a request went out before whose fate is not known here: unless the caller
 * has just looked the order up (ARGV[7] = 'looked'), the claim is refused with -1 so that it looks first. With no
 * marker (no request in the marker's life, or the last one refused outright), nothing needs looking up.
 *
 * With a guard (the request's: Execute's kill switch and permits), a new request is claimed only while the guard
 * holds (SEND_GUARD_LUA), in the same step: the switch set while the adapter read the mode or the time stops it.
 *
 * KEYS: the marker, and with a guard the kill switch, the Governor's permit, P3.3's permit. ARGV: now (Binance time),
 * margin ms, recv window ms, plan id, symbol, ttl s, 'looked' or '', the guard's permit margin ms ('' = no guard).
 * Returns 0 when claimed, -1 when the order must be looked up first, the guard's refusal (a string), else the ms still
 * to wait (> 0).
 */
const CLAIM_SEND = `${SEND_GUARD_LUA}
local ts = tonumber(redis.call('HGET', KEYS[1], 'timestamp'))
local window = tonumber(redis.call('HGET', KEYS[1], 'recv_window_ms'))
if ts and window then
  local wait = ts + window + tonumber(ARGV[2]) - tonumber(ARGV[1])
  if wait >= 0 then return wait + 1 end
  if ARGV[7] ~= 'looked' then return -1 end
end
if ARGV[8] ~= '' then
  local refusal = sendRefusal(KEYS[2], KEYS[3], KEYS[4], ARGV[4], ARGV[8])
  if refusal then return refusal end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'timestamp', ARGV[1], 'recv_window_ms', ARGV[3], 'plan_id', ARGV[4], 'symbol', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[6])
return 0
`;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    binanceClaimSend(numberOfKeys: string, markerKey: string, ...args: string[]): Result<number | string, Context>;
  }
}

// --- the adapter ------------------------------------------------------------------------------------------------

export interface BinanceExchangeOptions {
  name: Exclude<ExchangeName, 'paper'>;
  config: BinanceConfig;
  redis: Redis;
  keys: RedisKeys;
  /** ms since epoch on this machine: the sent markers' window and the rules' age; injected so tests can move it. */
  clock?: () => number;
  /** Waits between looks at an order that is still open; injected so tests need not wait. */
  sleep?: (ms: number) => Promise<void>;
}

export interface BinanceExchange extends ExchangePort {
  /** Binance sets rules for every symbol it lists: never null. */
  getRules(symbol: string): Promise<SymbolRules>;
  /** Reads Binance's time and sets the offset every signed request's timestamp carries. Done lazily otherwise. */
  syncTime(): Promise<void>;
}

/** Binance USD-M futures (testnet or live, or BINANCE_BASE_URL) as the chain's exchange port. */
export function createBinanceExchange(options: BinanceExchangeOptions): BinanceExchange {
  const { name, config, redis, keys } = options;
  const clock = options.clock ?? Date.now;
  const sleep = options.sleep ?? ((ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms)));
  const refreshMs = config.rulesRefreshS * 1000;
  const sendWindowMs = config.recvWindowMs + SEND_WINDOW_MARGIN_MS;
  // One key, or four with a guard: their number is the call's first argument.
  redis.defineCommand('binanceClaimSend', { lua: CLAIM_SEND });

  const apiKey = config.apiKey.reveal();
  const apiSecret = config.apiSecret.reveal();
  // Loaded here, not at import: a CLI command that never trades (status, list) does not pay for the package's load.
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- the lazy load above
  const { USDMClient } = require('binance') as typeof BinancePackage;
  const clientOptions = {
    api_key: apiKey,
    api_secret: apiSecret,
    baseUrl: config.baseUrl,
    recvWindow: config.recvWindowMs,
    // Our own sync: the library's logs the axios error (with the key's header) when it fails.
    disableTimeSync: true,
    keepAlive: true,
    // The raw axios error keeps the HTTP status, which the library's parsed error drops.
    parseExceptions: false,
  };
  // axios stops reading an answer past maxContentLength (ERR_BAD_RESPONSE): one client per bound.
  const client = new USDMClient(clientOptions, { timeout: REQUEST_TIMEOUT_MS, maxContentLength: ANSWER_MAX_BYTES });
  const infoClient = new USDMClient(clientOptions, {
    timeout: REQUEST_TIMEOUT_MS,
    maxContentLength: EXCHANGE_INFO_MAX_BYTES,
  });

  /** Binance's text, with anything that could be a credential or a signature taken out. */
  const scrub = (text: string) =>
    text
      .split(apiKey)
      .join('***')
      .split(apiSecret)
      .join('***')
      .replace(/signature=[^&\s]*/gi, 'signature=***')
      .replace(/\b[0-9a-f]{64}\b/gi, '***');

  const describe = (failure: BinanceFailure): string => {
    if (failure.kind === 'network') {
      if (failure.code === 'ECONNABORTED' || failure.code === 'ETIMEDOUT') {
        return `no answer within ${REQUEST_TIMEOUT_MS / 1000} s`;
      }
      if (failure.code === 'ECONNRESET') return 'the connection was reset before an answer';
      if (failure.code === 'ERR_BAD_RESPONSE') return 'the answer was over its size bound or cut short: not read';
      return `network error ${failure.code}`;
    }
    if (failure.kind === 'other') return scrub(failure.message);
    const code = failure.code === null ? '' : ` ${failure.code}`;
    return `HTTP ${failure.status}${code}${failure.msg ? ` ${scrub(failure.msg)}` : ''}`;
  };

  const serverNow = () => clock() + client.getTimeOffset();

  const busyError = (what: string, failure: Extract<BinanceFailure, { kind: 'http' }>) => {
    const delay = retryAfterMs(failure, serverNow());
    const weight = failure.headers['x-mbx-used-weight-1m'];
    const banned = failure.status === 418 ? ' (this IP is banned for a while)' : '';
    return new ExchangeBusyError(
      `binance: ${what}: ${describe(failure)}${banned}${weight ? `; used weight ${weight} in the last minute` : ''}; ` +
        `retry after ${Math.ceil(delay / 1000)} s`,
      delay,
    );
  };

  const authError = (what: string, failure: BinanceFailure) =>
    new ExchangeAuthError(
      `binance: ${what}: ${describe(failure)}: the API key or its secret was refused; check BINANCE_API_KEY and ` +
        "BINANCE_API_SECRET (or their _FILE), the key's futures permission and its IP allow-list",
    );

  /** A read's failure as the port's errors: nothing a read does is executed, so it is busy or broken. */
  const readError = (what: string, err: unknown): Error => {
    const failure = binanceFailure(err);
    if (failure.kind === 'network')
      return new ExchangeBusyError(`binance: ${what}: ${describe(failure)}`, READ_RETRY_MS);
    if (failure.kind === 'other') return new Error(`binance: ${what}: ${describe(failure)}`);
    const kind = orderFailureKind(failure);
    if (kind === 'busy') return busyError(what, failure);
    if (kind === 'auth') return authError(what, failure);
    if (failure.code === INVALID_SYMBOL_CODE) return new UnknownSymbolError(`binance: ${what}: not listed on ${name}`);
    if (kind === 'clock' || failure.status >= 500) {
      const clockNote = kind === 'clock' ? ' (clock still off after a resync)' : '';
      return new ExchangeBusyError(`binance: ${what}: ${describe(failure)}${clockNote}`, READ_RETRY_MS);
    }
    return new Error(`binance: ${what}: ${describe(failure)}`);
  };

  let syncedAt: number | null = null;
  let syncing: Promise<void> | null = null;

  function syncTime(): Promise<void> {
    syncing ??= (async () => {
      // Date.now(), not the injected clock: the library adds the offset to Date.now().
      const start = Date.now();
      let serverTime: unknown;
      try {
        serverTime = await client.getServerTime();
      } catch (err) {
        throw readError('GET fapi/v1/time', err);
      }
      const end = Date.now();
      if (typeof serverTime !== 'number') throw new Error('binance: GET fapi/v1/time: no serverTime in the answer');
      client.setTimeOffset(Math.round(serverTime - (start + end) / 2));
      syncedAt = clock();
    })().finally(() => {
      syncing = null;
    });
    return syncing;
  }

  async function ensureSynced(): Promise<void> {
    if (syncedAt === null || clock() - syncedAt > TIME_SYNC_INTERVAL_MS) await syncTime();
  }

  /** A signed request, after a time sync when none is recent; on -1021 resync, `beforeResend`, and send once more. */
  async function signed<T>(request: () => Promise<T>, beforeResend?: () => Promise<void>): Promise<T> {
    await ensureSynced();
    try {
      return await request();
    } catch (err) {
      const failure = binanceFailure(err);
      if (failure.kind !== 'http' || failure.code !== TIMESTAMP_CODE) throw err;
      await syncTime();
      await beforeResend?.();
      return await request();
    }
  }

  async function read<T>(what: string, request: () => Promise<T>, isSigned: boolean): Promise<T> {
    try {
      return isSigned ? await signed(request) : await request();
    } catch (err) {
      if (err instanceof ExchangeBusyError || err instanceof ExchangeAuthError) throw err;
      throw readError(what, err);
    }
  }

  /** The order with the answer it came from, bounded: what Execute shows when it does not believe the answer. */
  const withRaw = (order: ExchangeOrder, json: unknown): ExchangeOrder => ({
    ...order,
    raw: boundText(scrub(JSON.stringify(json) ?? ''), RAW_ANSWER_BYTES),
  });

  /** The order under a client order id, or null when Binance has none (-2013). */
  async function lookup(symbol: string, clientOrderId: string): Promise<ExchangeOrder | null> {
    let json: unknown;
    try {
      json = await signed(() => client.getOrder({ symbol, origClientOrderId: clientOrderId }));
    } catch (err) {
      const failure = binanceFailure(err);
      if (failure.kind === 'http' && failure.code === NO_SUCH_ORDER_CODE) return null;
      if (err instanceof ExchangeBusyError || err instanceof ExchangeAuthError) throw err;
      throw readError(`GET ${ORDER_ENDPOINT} ${symbol} ${clientOrderId}`, err);
    }
    try {
      return withRaw(orderFromBinance(json, clock()), json);
    } catch {
      throw new Error(`binance: GET ${ORDER_ENDPOINT} ${symbol} ${clientOrderId}: the answer is not an order`);
    }
  }

  let rules: { bySymbol: Map<string, SymbolRules>; at: number } | null = null;
  let loadingRules: Promise<{ bySymbol: Map<string, SymbolRules>; at: number }> | null = null;

  function loadRules() {
    loadingRules ??= (async () => {
      const info = await read('GET fapi/v1/exchangeInfo', () => infoClient.getExchangeInfo(), false);
      rules = { bySymbol: rulesFromExchangeInfo(info), at: clock() };
      return rules;
    })().finally(() => {
      loadingRules = null;
    });
    return loadingRules;
  }

  let positionMode: { hedge: boolean; at: number } | null = null;

  /** One-way or hedge mode; kept as long as the rules, read again when an order says it changed (-4061). */
  async function hedgeMode(fresh = false): Promise<boolean> {
    if (fresh || positionMode === null || clock() - positionMode.at >= refreshMs) {
      const json = await read('GET fapi/v1/positionSide/dual', () => client.getCurrentPositionMode(), true);
      positionMode = { hedge: z.object({ dualSidePosition: z.boolean() }).parse(json).dualSidePosition, at: clock() };
    }
    return positionMode.hedge;
  }

  /** An order that Binance refused outright: nothing executed, and the plan learns why. */
  const rejected = (request: MarketOrderRequest, clientOrderId: string, failure: BinanceFailure): ExchangeOrder => ({
    order_id: '',
    client_order_id: clientOrderId,
    symbol: request.symbol,
    side: request.side,
    qty: formatDec(new Dec(request.qty)),
    reduce_only: request.reduceOnly,
    status: 'REJECTED',
    filled_qty: '0',
    avg_price: '0',
    placed_at: clock(),
    reject_reason:
      failure.kind === 'http' ? `binance ${failure.code ?? failure.status}: ${scrub(failure.msg)}` : describe(failure),
  });

  /** An order that is final, or after a few brief looks an ExchangeUnknownError: the plan's retry looks again. */
  async function settle(order: ExchangeOrder, planId: string): Promise<ExchangeOrder> {
    let current = order;
    for (let look = 0; !isFinalStatus(current.status) && look < OPEN_ORDER_LOOKUPS; look++) {
      await sleep(OPEN_ORDER_LOOKUP_DELAY_MS);
      try {
        current = (await lookup(current.symbol, current.client_order_id)) ?? current;
      } catch {
        break;
      }
    }
    if (isFinalStatus(current.status)) return current;
    throw new ExchangeUnknownError(
      `binance: order ${current.order_id} of plan ${planId} (client order id ${current.client_order_id}) still ` +
        `${current.status}, ${current.filled_qty} of ${current.qty} executed; looking again`,
      READ_RETRY_MS,
    );
  }

  /** The send's result is unknown: look the order up before anything is sent again, and send nothing now. */
  async function unknownOutcome(request: MarketOrderRequest, clientOrderId: string, why: string) {
    const planId = request.clientOrderId;
    let found: ExchangeOrder | null;
    try {
      found = await lookup(request.symbol, clientOrderId);
    } catch (err) {
      throw new ExchangeUnknownError(
        `binance: order of plan ${planId} (client order id ${clientOrderId}): ${why}; looking it up failed too ` +
          `(${err instanceof Error ? err.message : 'unknown error'}); looking again`,
        READ_RETRY_MS,
      );
    }
    if (found) return settle(found, planId);
    throw new ExchangeUnknownError(
      `binance: order of plan ${planId} (client order id ${clientOrderId}): ${why}; Binance has no such order yet; ` +
        `nothing is sent again for ${Math.ceil(sendWindowMs / 1000)} s (until it would refuse that request as stale)`,
      sendWindowMs,
    );
  }

  async function send(
    request: MarketOrderRequest,
    clientOrderId: string,
    hedge: boolean,
    mayReadModeAgain: boolean,
  ): Promise<ExchangeOrder> {
    const planId = request.clientOrderId;
    const marker = keys.binanceSent(clientOrderId);
    const stamp = () => String(Math.round(serverNow()));
    // Before the claim: the marker's timestamp is in Binance's time.
    await ensureSynced();
    const { guard } = request;
    const guardKeys = guard ? [guard.killSwitchKey, guard.governorPermitKey, guard.p33PermitKey] : [];
    const claim = async (looked: boolean): Promise<number> => {
      const answer = await redis.binanceClaimSend(
        String(1 + guardKeys.length),
        marker,
        ...guardKeys,
        stamp(),
        String(SEND_WINDOW_MARGIN_MS),
        String(config.recvWindowMs),
        planId,
        request.symbol,
        String(SENT_MARKER_TTL_S),
        looked ? 'looked' : '',
        guard ? String(guard.marginMs) : '',
      );
      if (typeof answer === 'number') return answer;
      throw new OrderNotSentError(
        `binance: order of plan ${planId} not sent: ${answer} at the send claim`,
        answer as OrderNotSentError['reason'],
      );
    };
    let wait = await claim(false);
    if (wait !== 0) {
      // A request went out before: Binance may have the order (if its window has passed: has it now, or never will).
      const existing = await lookup(request.symbol, clientOrderId);
      if (existing) return settle(existing, planId);
      if (wait === -1) wait = await claim(true);
    }
    if (wait > 0) {
      throw new ExchangeUnknownError(
        `binance: an order request of plan ${planId} (client order id ${clientOrderId}) has an unknown result and ` +
          `Binance has no such order; nothing is sent again for ${Math.ceil(wait / 1000)} s (until it would refuse ` +
          'that request as stale)',
        wait,
      );
    }
    let json: unknown;
    try {
      json = await signed(
        () => client.postPrivate(ORDER_ENDPOINT, orderParams(request, clientOrderId, hedge)),
        // The resend is a new request: the window counts from its timestamp.
        async () => void (await redis.hset(marker, 'timestamp', stamp())),
      );
    } catch (err) {
      // The resync after a -1021 failed: the first request was refused and the second never sent.
      if (err instanceof ExchangeBusyError || err instanceof ExchangeAuthError) {
        await redis.del(marker);
        throw err;
      }
      const failure = binanceFailure(err);
      const kind = orderFailureKind(failure);
      const what = `POST ${ORDER_ENDPOINT} for plan ${planId}`;
      if (kind === 'unknown' || kind === 'duplicate') return unknownOutcome(request, clientOrderId, describe(failure));
      // Every other answer is a refusal: nothing was executed, so the next call may send at once.
      await redis.del(marker);
      if (kind === 'position_side' && mayReadModeAgain) {
        return send(request, clientOrderId, await hedgeMode(true), false);
      }
      if (kind === 'auth') throw authError(what, failure);
      if (failure.kind === 'http' && kind === 'busy') throw busyError(what, failure);
      if (kind === 'busy') throw new ExchangeBusyError(`binance: ${what}: ${describe(failure)}`, READ_RETRY_MS);
      if (kind === 'clock') {
        throw new ExchangeBusyError(`binance: ${what}: ${describe(failure)} (clock still off after a resync)`, 1000);
      }
      return rejected(request, clientOrderId, failure);
    }
    let order: ExchangeOrder;
    try {
      order = withRaw(orderFromBinance(json, clock()), json);
    } catch {
      return unknownOutcome(request, clientOrderId, 'the answer was not an order');
    }
    return settle(order, planId);
  }

  return {
    name,
    syncTime,

    async getPosition(symbol) {
      const rows = await read(`GET fapi/v3/positionRisk ${symbol}`, () => client.getPositionsV3({ symbol }), true);
      return netPosition(rows, symbol);
    },

    async getPrice(symbol) {
      const json = await read(`GET fapi/v1/premiumIndex ${symbol}`, () => client.getMarkPrice({ symbol }), false);
      return new Dec(z.object({ markPrice: DecimalText }).parse(json).markPrice);
    },

    async getRules(symbol) {
      const fresh = rules !== null && clock() - rules.at < refreshMs ? rules : null;
      let current = fresh ?? (await loadRules());
      let found = current.bySymbol.get(symbol);
      // A symbol listed since the last read: read once more before calling it unknown.
      if (!found && fresh) {
        current = await loadRules();
        found = current.bySymbol.get(symbol);
      }
      if (!found) throw new UnknownSymbolError(`binance: ${symbol} is not listed on ${name}`);
      return found;
    },

    clientOrderIdOf: binanceClientOrderId,

    findOrder(symbol, planId) {
      return lookup(symbol, binanceClientOrderId(planId));
    },

    async placeMarketOrder(request) {
      // No lookup before the first request (Execute has just looked): the sent marker makes send() look whenever a
      // request went out before, so an order is looked up only when there may be one (one GET fewer per order).
      const clientOrderId = binanceClientOrderId(request.clientOrderId);
      return send(request, clientOrderId, await hedgeMode(), true);
    },
  };
}
