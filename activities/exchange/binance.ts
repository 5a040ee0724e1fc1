import type { Redis } from 'ioredis';
import { z } from 'zod';
import type { RedisKeys } from '../../contract/keys';
import { boundText } from '../../lib/bound';
import type { BinanceConfig, ExchangeName } from '../../lib/config';
import { Dec, formatDec } from '../../lib/decimal';
import {
  DecimalText,
  NO_SUCH_ORDER_CODE,
  binanceClientOrderId,
  binanceFailure,
  netPosition,
  orderFailureKind,
  orderFromBinance,
  orderParams,
  rulesFromExchangeInfo,
  type BinanceFailure,
} from './binance-wire';
import { READ_RETRY_MS, createBinanceSession } from './binance-session';
import { CLAIM_SEND } from './binance-sent-marker';
import {
  ExchangeAuthError,
  ExchangeBusyError,
  ExchangeUnknownError,
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

const ORDER_ENDPOINT = 'fapi/v1/order';

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

  const session = createBinanceSession({ name, config, clock });
  const { client, infoClient, scrub, describe, serverNow, busyError, authError } = session;
  const { readError, syncTime, ensureSynced, signed, read } = session;

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
