import type { Redis, Result } from 'ioredis';
import { Dec, formatDec, parseAmount } from '../../lib/decimal';
import type { RedisKeys } from '../../contract/keys';
import type { ExchangeOrder, ExchangePort, MarketOrderRequest } from './port';

const DEFAULT_PRICE = '1';
/** Compare-and-set conflicts only happen under contention on one symbol; this many tries is far beyond that. */
const MAX_CAS_TRIES = 100;

/**
 * Sets a decimal amount in a hash only if it still holds the value the caller read (compare-and-set), and only
 * once per guard key: the guard (an order or an execution record) is written in the same atomic step. So a fill
 * moves a position exactly once, however often the step is retried, and two writers never lose an update.
 * Decimal arithmetic stays in TypeScript (Lua only has binary floats); Lua only compares strings.
 *
 * KEYS: guard hash, amount hash, audit stream ('' for none)
 * ARGV: amount field, expected value ('' = absent), new value, updated_at, n guard args, guard args..., audit args...
 * Returns 1 when written, 0 when the guard already existed, -1 when the amount changed meanwhile.
 */
const CAS_AMOUNT_ONCE = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local current = redis.call('HGET', KEYS[2], ARGV[1]) or ''
if current ~= ARGV[2] then return -1 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3], 'updated_at', ARGV[4])
local n = tonumber(ARGV[5])
redis.call('HSET', KEYS[1], unpack(ARGV, 6, 5 + n))
if KEYS[3] ~= '' and #ARGV > 5 + n then
  redis.call('XADD', KEYS[3], '*', unpack(ARGV, 6 + n, #ARGV))
end
return 1
`;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    casAmountOnce(guardKey: string, amountKey: string, auditStream: string, ...args: string[]): Result<number, Context>;
  }
}

/** Defines the compare-and-set script on a connection (idempotent; ioredis caches them by SHA). */
function definePaperScripts(redis: Redis): Redis {
  redis.defineCommand('casAmountOnce', { numberOfKeys: 3, lua: CAS_AMOUNT_ONCE });
  return redis;
}

/** The order a paper market order becomes, given the position it meets: a pure decision. */
export function fillPaperOrder(
  request: MarketOrderRequest,
  position: Dec,
  price: string,
  now: number,
): { order: ExchangeOrder; newPosition: Dec } {
  const qty = new Dec(request.qty);
  const signed = request.side === 'BUY' ? qty : qty.neg();
  const base = {
    order_id: `paper-${request.clientOrderId}`,
    client_order_id: request.clientOrderId,
    symbol: request.symbol,
    side: request.side,
    qty: request.qty,
    reduce_only: request.reduceOnly,
    placed_at: now,
  };
  const reduces = position.isZero() ? false : signed.isNeg() !== position.isNeg();
  if (request.reduceOnly && (!reduces || qty.gt(position.abs()))) {
    return {
      order: { ...base, status: 'REJECTED', filled_qty: '0', avg_price: '0', reject_reason: 'reduce_only_rejected' },
      newPosition: position,
    };
  }
  return {
    order: { ...base, status: 'FILLED', filled_qty: formatDec(qty), avg_price: price },
    newPosition: position.add(signed),
  };
}

function orderFields(order: ExchangeOrder): string[] {
  const fields: string[] = [];
  for (const [key, value] of Object.entries(order)) fields.push(key, String(value));
  return fields;
}

function readOrder(hash: Record<string, string>): ExchangeOrder | null {
  if (!hash.client_order_id) return null;
  const order: ExchangeOrder = {
    order_id: hash.order_id ?? '',
    client_order_id: hash.client_order_id,
    symbol: hash.symbol ?? '',
    side: hash.side === 'BUY' ? 'BUY' : 'SELL',
    qty: hash.qty ?? '0',
    reduce_only: hash.reduce_only === 'true',
    status: hash.status === 'FILLED' ? 'FILLED' : 'REJECTED',
    filled_qty: hash.filled_qty ?? '0',
    avg_price: hash.avg_price ?? '0',
    placed_at: Number(hash.placed_at ?? 0),
  };
  if (hash.reject_reason) order.reject_reason = hash.reject_reason;
  return order;
}

/**
 * The paper exchange (docs/contract.md): its own position per symbol, independent of the ledger, orders keyed by client
 * order id, market orders filled at once at `quantum:exchange:paper:price:{symbol}` (default 1).
 */
export function createPaperExchange(redis: Redis, keys: RedisKeys, clock: () => number): ExchangePort {
  definePaperScripts(redis);

  async function findOrder(_symbol: string, clientOrderId: string): Promise<ExchangeOrder | null> {
    return readOrder(await redis.hgetall(keys.paperOrder(clientOrderId)));
  }

  return {
    name: 'paper',

    async getPosition(symbol) {
      return parseAmount(await redis.hget(keys.paperPosition(symbol), 'amount'), `paper position of ${symbol}`);
    },

    async getPrice(symbol) {
      const raw = await redis.get(keys.paperPrice(symbol));
      return raw ? parseAmount(raw, `paper price of ${symbol}`) : new Dec(DEFAULT_PRICE);
    },

    /** Paper trades any quantity of any symbol. */
    getRules() {
      return Promise.resolve(null);
    },

    findOrder,

    async placeMarketOrder(request) {
      for (let tries = 0; tries < MAX_CAS_TRIES; tries++) {
        const existing = await findOrder(request.symbol, request.clientOrderId);
        if (existing) return existing;
        const [rawPosition, rawPrice] = await Promise.all([
          redis.hget(keys.paperPosition(request.symbol), 'amount'),
          redis.get(keys.paperPrice(request.symbol)),
        ]);
        const price = rawPrice ? formatDec(parseAmount(rawPrice, `paper price of ${request.symbol}`)) : DEFAULT_PRICE;
        const position = parseAmount(rawPosition, `paper position of ${request.symbol}`);
        const { order, newPosition } = fillPaperOrder(request, position, price, clock());
        const written = await redis.casAmountOnce(
          keys.paperOrder(request.clientOrderId),
          keys.paperPosition(request.symbol),
          '',
          'amount',
          rawPosition ?? '',
          formatDec(newPosition),
          String(order.placed_at),
          String(orderFields(order).length),
          ...orderFields(order),
        );
        if (written === 1) return order;
        // Another call placed this order first: that one stands.
        if (written === 0) return (await findOrder(request.symbol, request.clientOrderId)) ?? order;
      }
      throw new Error(`paper exchange: position of ${request.symbol} kept changing; order not placed`);
    },
  };
}
