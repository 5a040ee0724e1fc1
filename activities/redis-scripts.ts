import type { Redis, Result } from 'ioredis';

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

/** Defines the shared compare-and-set script on a connection (idempotent; ioredis caches them by SHA). */
export function defineChainScripts(redis: Redis): Redis {
  redis.defineCommand('casAmountOnce', { numberOfKeys: 3, lua: CAS_AMOUNT_ONCE });
  return redis;
}
