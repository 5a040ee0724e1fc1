/**
 * The account's history as Binance USD-M serves it: its trades (`GET /fapi/v1/userTrades`) and its orders
 * (`GET /fapi/v1/allOrders`), per symbol, within a window of at most 7 days, paged by id and `limit`, each request
 * charged its weight. What an explanation of a difference between exchange and ledger reads.
 */
import { Dec } from '../../lib/decimal';
import type { DoubleBook } from './book';
import { BinanceError, missing } from './errors';
import { orderView } from './answers';
import type { DoubleOrder } from './types';

/** Binance's longest window between startTime and endTime for both endpoints. */
export const HISTORY_WINDOW_MS = 7 * 24 * 3600 * 1000;
const DEFAULT_LIMIT = 500;
const MAX_LIMIT = 1000;
/** Request weight of one call: userTrades and allOrders with a symbol are 5 each on USD-M. */
export const HISTORY_WEIGHT = 5;

/** The request weight used in the current minute of the double's clock, as `X-MBX-USED-WEIGHT-1M` reports it. */
export class WeightMeter {
  private minute = -1;
  private used = 0;

  charge(weight: number, now: number): number {
    const minute = Math.floor(now / 60_000);
    if (minute !== this.minute) {
      this.minute = minute;
      this.used = 0;
    }
    this.used += weight;
    return this.used;
  }
}

/** One account trade of a filled order, in Binance's shape. The double fills an order in one trade, its id the order's. */
function tradeView(order: DoubleOrder) {
  return {
    buyer: order.side === 'BUY',
    commission: '0',
    commissionAsset: 'USDT',
    id: order.orderId,
    maker: false,
    orderId: order.orderId,
    price: order.avgPrice,
    qty: order.executedQty,
    quoteQty: order.cumQuote,
    realizedPnl: '0',
    side: order.side,
    positionSide: order.positionSide,
    symbol: order.symbol,
    time: order.updateTime,
  };
}

function whole(params: URLSearchParams, name: string): number | undefined {
  const raw = params.get(name);
  if (raw === null) return undefined;
  if (!/^\d+$/.test(raw)) throw new BinanceError(400, -1100, `Illegal characters found in parameter '${name}'.`);
  return Number(raw);
}

/** The request's symbol, id, window and limit, checked as Binance checks them. */
function selection(book: DoubleBook, params: URLSearchParams, idParam: 'fromId' | 'orderId') {
  const symbol = params.get('symbol');
  if (!symbol) throw missing('symbol');
  book.symbol(symbol);
  const limit = whole(params, 'limit') ?? DEFAULT_LIMIT;
  if (limit < 1 || limit > MAX_LIMIT) {
    throw new BinanceError(400, -1130, "Data sent for parameter 'limit' is not valid.");
  }
  const fromId = whole(params, idParam);
  let start = whole(params, 'startTime');
  let end = whole(params, 'endTime');
  if (fromId !== undefined && idParam === 'fromId' && (start !== undefined || end !== undefined)) {
    throw new BinanceError(400, -1128, 'Combination of optional parameters invalid.');
  }
  if (start !== undefined && end !== undefined && end - start > HISTORY_WINDOW_MS) {
    throw new BinanceError(400, -1127, 'More than 168 hours between startTime and endTime.');
  }
  if (fromId === undefined) {
    // One bound names the other; none is the last 7 days.
    end ??= start === undefined ? book.serverTime() : start + HISTORY_WINDOW_MS;
    start ??= end - HISTORY_WINDOW_MS;
  }
  return { symbol, limit, fromId, start, end };
}

/** The orders selected, oldest first: from the id on when one is given, else the most recent `limit` in the window. */
function pick(orders: DoubleOrder[], { symbol, limit, fromId, start, end }: ReturnType<typeof selection>) {
  const selected = orders
    .filter(
      (o) =>
        o.symbol === symbol &&
        (fromId === undefined || o.orderId >= fromId) &&
        (start === undefined || o.updateTime >= start) &&
        (end === undefined || o.updateTime <= end),
    )
    .sort((a, b) => a.orderId - b.orderId);
  return fromId === undefined ? selected.slice(-limit) : selected.slice(0, limit);
}

/** GET /fapi/v1/userTrades: the account's trades on a symbol, oldest first. */
export function accountTrades(book: DoubleBook, params: URLSearchParams) {
  const filled = book.orders.filter((o) => !new Dec(o.executedQty).isZero());
  return pick(filled, selection(book, params, 'fromId')).map(tradeView);
}

/** GET /fapi/v1/allOrders: the account's orders on a symbol, oldest first, whatever their status. */
export function allOrders(book: DoubleBook, params: URLSearchParams) {
  return pick(book.orders, selection(book, params, 'orderId')).map(orderView);
}
