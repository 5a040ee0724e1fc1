import type { Dec } from '../../lib/decimal';
import type { Side } from '../../contract/types';

/** An order's state, as Binance names them; the paper exchange only ever says FILLED or REJECTED. */
export const ORDER_STATUSES = ['NEW', 'PARTIALLY_FILLED', 'FILLED', 'CANCELED', 'EXPIRED', 'REJECTED'] as const;
export type OrderStatus = (typeof ORDER_STATUSES)[number];

/** States after which the executed quantity can no longer change: only these reach the ledger. */
export const FINAL_ORDER_STATUSES: ReadonlySet<OrderStatus> = new Set(['FILLED', 'CANCELED', 'EXPIRED', 'REJECTED']);

export function isFinalStatus(status: OrderStatus): boolean {
  return FINAL_ORDER_STATUSES.has(status);
}

export interface ExchangeOrder {
  /** The exchange's id for the order ('' for an order the exchange refused without creating it). */
  order_id: string;
  /** The client order id the exchange knows the order by (derived from the plan id; see the adapter). */
  client_order_id: string;
  symbol: string;
  side: Side;
  /** The quantity asked for. */
  qty: string;
  reduce_only: boolean;
  status: OrderStatus;
  /** The quantity executed so far: what the ledger moves by, whatever the status. */
  filled_qty: string;
  avg_price: string;
  placed_at: number;
  /** Why the exchange refused or ended the order, when it did. */
  reject_reason?: string;
  /** The exchange's answer as received, bounded (lib/bound.ts): what a refused answer shows. */
  raw?: string;
}

export interface MarketOrderRequest {
  symbol: string;
  side: Side;
  qty: string;
  reduceOnly: boolean;
  /** The plan id: the exchange places at most one order per plan (the adapter derives its client order id). */
  clientOrderId: string;
  /**
   * What the adapter's own send claim checks again, in the Redis step that claims the send (activities/exchange/
   * send-guard.ts): Execute passes the kill switch and the plan's permits. An adapter whose send goes out later than
   * Execute's claim (Binance: after reads of its own) refuses with OrderNotSentError.
   */
  guard?: SendGuard;
}

export interface SendGuard {
  killSwitchKey: string;
  governorPermitKey: string;
  p33PermitKey: string;
  marginMs: number;
}

/** The adapter's send claim found the kill switch on or a permit no longer valid: nothing was sent. */
export class OrderNotSentError extends Error {
  override name = 'OrderNotSentError';
  constructor(
    message: string,
    readonly reason: 'kill_switch_active' | 'permit_missing' | 'permit_denied' | 'permit_expiring',
  ) {
    super(message);
  }
}

/** A symbol's trading rules, as the exchange publishes them; decimals as strings. */
export interface SymbolRules {
  symbol: string;
  /** Market orders' quantity step (MARKET_LOT_SIZE, else LOT_SIZE). */
  step_size: string;
  min_qty: string;
  max_qty: string;
  /** Least notional (qty × mark price) of an order that is not reduce-only; '0' when none. */
  min_notional: string;
}

/**
 * The exchange is busy or away and the request was NOT executed (429/418, 5xx before execution, a connection
 * refused): try again after `retryAfterMs`. Activities turn this into a retry with that delay.
 */
export class ExchangeBusyError extends Error {
  override name = 'ExchangeBusyError';
  constructor(
    message: string,
    readonly retryAfterMs: number,
  ) {
    super(message);
  }
}

/**
 * The result of a request that may have been executed is unknown (timeout, reset connection, 5xx on an order), or
 * an order is still open: look again later, never resend blindly.
 */
export class ExchangeUnknownError extends Error {
  override name = 'ExchangeUnknownError';
  constructor(
    message: string,
    readonly retryAfterMs: number,
  ) {
    super(message);
  }
}

/**
 * The exchange refused the chain's credentials (a wrong or revoked key, a secret that does not match it, a key without
 * the permission or from an IP it does not allow). Nothing was executed, and retrying will not help: a person must
 * fix the keys. Its `name` is the failure type to list as non-retryable.
 */
export class ExchangeAuthError extends Error {
  override name = 'ExchangeAuthError';
}

/** The exchange as the chain sees it. Implementations must be idempotent per client order id. */
export interface ExchangePort {
  readonly name: string;
  /** The client order id the exchange knows a plan's order by; the plan id itself when absent. */
  clientOrderIdOf?(planId: string): string;
  /** Signed position: long > 0, short < 0 (hedge mode: LONG + SHORT). */
  getPosition(symbol: string): Promise<Dec>;
  /** The price a market order would fill at now (the mark price on Binance). */
  getPrice(symbol: string): Promise<Dec>;
  /** The symbol's trading rules; null when this exchange sets none (paper). Throws for a symbol it does not list. */
  getRules(symbol: string): Promise<SymbolRules | null>;
  /** The order placed for a plan (`clientOrderId` = plan id), in whatever state it is, or null when there is none. */
  findOrder(symbol: string, clientOrderId: string): Promise<ExchangeOrder | null>;
  /**
   * Places a market order, or returns the order already placed for the same plan (Execute looks with findOrder first,
   * whatever the adapter also does; Binance's looks again only when its sent marker says a request went out). Resolves only with an order in a
   * final state (FINAL_ORDER_STATUSES); an order that stays open, or a result that is unknown, is an
   * ExchangeUnknownError after the adapter has looked the order up.
   */
  placeMarketOrder(request: MarketOrderRequest): Promise<ExchangeOrder>;
}

/** A symbol the exchange does not list: a Governor denial, not a retry. */
export class UnknownSymbolError extends Error {
  override name = 'UnknownSymbolError';
}
