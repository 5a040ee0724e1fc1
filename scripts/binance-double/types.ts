/** The double's public shapes: its options, its orders and positions, the faults a test can queue. */

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
