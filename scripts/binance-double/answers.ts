/** The answers of Binance's endpoints, in Binance's shapes: exchange info, mark prices, positions, orders. */
import { decimals, type DoubleBook } from './book';
import type { DoubleOrder } from './types';

export const exchangeInfo = (book: DoubleBook) => ({
  timezone: 'UTC',
  serverTime: book.serverTime(),
  futuresType: 'U_MARGINED',
  rateLimits: [
    { rateLimitType: 'REQUEST_WEIGHT', interval: 'MINUTE', intervalNum: 1, limit: 2400 },
    { rateLimitType: 'ORDERS', interval: 'MINUTE', intervalNum: 1, limit: 1200 },
    { rateLimitType: 'ORDERS', interval: 'SECOND', intervalNum: 10, limit: 300 },
  ],
  exchangeFilters: [],
  assets: [{ asset: 'USDT', marginAvailable: true, autoAssetExchange: '-10000' }],
  symbols: [...book.symbols].map(([symbol, { rules }]) => ({
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
    orderTypes: ['LIMIT', 'MARKET', 'STOP', 'STOP_MARKET', 'TAKE_PROFIT', 'TAKE_PROFIT_MARKET', 'TRAILING_STOP_MARKET'],
    timeInForce: ['GTC', 'IOC', 'FOK', 'GTX', 'GTD'],
  })),
});

export const premiumIndex = (book: DoubleBook, symbol: string) => {
  const { markPrice } = book.symbol(symbol);
  const now = book.serverTime();
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

export const positionRisk = (book: DoubleBook, symbol: string) =>
  book.positionSides.map((side) => {
    const { amount, entryPrice, updateTime } = book.position(symbol, side);
    const { markPrice } = book.symbol(symbol);
    const pnl = amount.mul(markPrice.sub(entryPrice));
    return {
      symbol,
      positionAmt: book.qtyText(symbol, amount),
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
export const positionRiskV3 = (book: DoubleBook, symbol: string) =>
  book.positionSides
    .filter((side) => !book.position(symbol, side).amount.isZero())
    .map((side) => {
      const { amount, entryPrice, updateTime } = book.position(symbol, side);
      const { markPrice } = book.symbol(symbol);
      const notional = amount.mul(markPrice);
      return {
        symbol,
        positionSide: side,
        positionAmt: book.qtyText(symbol, amount),
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

/** An order as Binance answers it (POST and GET /fapi/v1/order). */
export const orderView = (order: DoubleOrder) => ({
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
