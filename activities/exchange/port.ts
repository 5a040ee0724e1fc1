import type { Dec } from '../../lib/decimal';
import type { Side } from '../../contract/types';

export interface ExchangeOrder {
  order_id: string;
  client_order_id: string;
  symbol: string;
  side: Side;
  qty: string;
  reduce_only: boolean;
  status: 'FILLED' | 'REJECTED';
  filled_qty: string;
  avg_price: string;
  placed_at: number;
  reject_reason?: string;
}

export interface MarketOrderRequest {
  symbol: string;
  side: Side;
  qty: string;
  reduceOnly: boolean;
  /** The plan id: the exchange places at most one order per client order id. */
  clientOrderId: string;
}

/** The exchange as the chain sees it. Implementations must be idempotent per client order id. */
export interface ExchangePort {
  readonly name: string;
  /** Signed position: long > 0, short < 0. */
  getPosition(symbol: string): Promise<Dec>;
  /** The price a market order would fill at now. */
  getPrice(symbol: string): Promise<Dec>;
  findOrder(clientOrderId: string): Promise<ExchangeOrder | null>;
  /** Places a market order, or returns the order already placed under the same client order id. */
  placeMarketOrder(request: MarketOrderRequest): Promise<ExchangeOrder>;
}
