/** Orders: a market order checked as Binance checks it and executed at the mark price, and an order looked up. */
import { randomBytes } from 'node:crypto';
import { Dec } from '../../lib/decimal';
import { orderView } from './answers';
import { decimals, type DoubleBook } from './book';
import { BinanceError, missing } from './errors';
import type { FaultQueue } from './faults';
import type { DoubleOrder, PositionSide } from './types';

const QUANTITY_PATTERN = /^([0-9]{1,20})(\.[0-9]{1,20})?$/;
const CLIENT_ORDER_ID_PATTERN = /^[.A-Z:/a-z0-9_-]{1,36}$/;

/** Validates and executes a market order. Returns the order as stored and as the POST response shows it. */
export function placeOrder(
  book: DoubleBook,
  faults: FaultQueue,
  params: URLSearchParams,
  path: string,
): { stored: DoubleOrder; shown: DoubleOrder } {
  const symbol = params.get('symbol');
  if (!symbol) throw missing('symbol');
  const { rules, markPrice } = book.symbol(symbol);
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
  if (book.hedgeMode !== (positionSide !== 'BOTH')) {
    throw new BinanceError(400, -4061, "Order's position side does not match user's setting.");
  }
  if (book.hedgeMode && reduceOnlyText !== null) {
    throw new BinanceError(400, -1106, "Parameter 'reduceonly' sent when not required.");
  }
  const clientOrderId = params.get('newClientOrderId') ?? `double-${randomBytes(8).toString('hex')}`;
  if (!CLIENT_ORDER_ID_PATTERN.test(clientOrderId)) {
    throw new BinanceError(400, -4015, 'Client order id is not valid.');
  }
  // Binance refuses a client order id only while an order holding it is open; a filled one frees it.
  if (
    book.orders.some(
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
  const held = book.position(symbol, positionSide).amount;
  const closes = book.hedgeMode ? (positionSide === 'LONG') !== (side === 'BUY') : reduceOnly;
  if (closes && (held.isZero() || signed.isNeg() === held.isNeg() || qty.gt(held.abs()))) {
    throw new BinanceError(400, -2022, 'ReduceOnly Order is rejected.');
  }

  const now = book.serverTime();
  const fault = faults.take(path, 'POST', (f) => f.kind === 'partial-fill' || f.kind === 'expire');
  let executed = qty;
  if (fault?.kind === 'expire') executed = new Dec(0);
  if (fault?.kind === 'partial-fill') {
    const part = qty.mul(fault.fraction);
    executed = part.sub(part.mod(rules.stepSize));
  }
  if (!executed.isZero())
    book.applyFill(symbol, positionSide, signed.isNeg() ? executed.neg() : executed, markPrice, now);
  const filled = !executed.isZero();
  const stored: DoubleOrder = {
    orderId: book.takeOrderId(),
    clientOrderId,
    symbol: symbol,
    side,
    positionSide,
    type: 'MARKET',
    origQty: book.qtyText(symbol, qty),
    executedQty: book.qtyText(symbol, executed),
    avgPrice: filled ? book.priceText(symbol, markPrice) : '0.00',
    cumQuote: executed.mul(markPrice).toFixed(8),
    reduceOnly,
    status: fault ? 'EXPIRED' : 'FILLED',
    time: now,
    updateTime: now,
  };
  book.orders.push(stored);
  const shown: DoubleOrder =
    fault?.kind === 'partial-fill' && filled ? { ...stored, status: 'PARTIALLY_FILLED' } : stored;
  return { stored, shown };
}

/** GET /fapi/v1/order: an order looked up by its id or its client order id. */
export function findOrder(book: DoubleBook, params: URLSearchParams) {
  const symbol = params.get('symbol') ?? undefined;
  book.symbol(symbol);
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
  const order = book.orders.find(
    (o) =>
      o.symbol === symbol &&
      (orderId ? String(o.orderId) === orderId : true) &&
      (origClientOrderId ? o.clientOrderId === origClientOrderId : true),
  );
  if (!order) throw new BinanceError(400, -2013, 'Order does not exist.');
  return orderView(order);
}
