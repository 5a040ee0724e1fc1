import type { Redis, Result } from 'ioredis';
import { redisKeys } from '../contract/keys';
import { WAITER_STALE_MS } from '../lib/symbol-line';
import type { Plan } from '../contract/types';
import type { ActivityDeps } from './deps';

export { WAITER_STALE_MS } from '../lib/symbol-line';

/**
 * Takes the symbol for a plan, first come first served, or extends the plan's own hold. The hold is a lease, so a
 * worker that crashes while holding a symbol frees it when the lease runs out. Plans that find the symbol taken
 * line up in arrival order; a waiter that stops asking drops out of the line.
 *
 * KEYS: lock, line (sorted set: plan → arrival number), last-asked (hash: plan → ms), arrival counter, the set of
 * symbols with lines (the line sweep's register). ARGV: plan id, lease ms, now ms, stale ms, symbol.
 * Returns ['', 0, 0] when the plan holds the symbol, else [holder ('' if none), lease ms left, plans ahead].
 */
const TAKE_SYMBOL = `
local lock, line, asked, arrivals = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local plan, lease, now, stale = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('SADD', KEYS[5], ARGV[5])
local holder = redis.call('GET', lock)
if holder == plan then
  redis.call('SET', lock, plan, 'PX', lease)
  return {'', 0, 0}
end
if not redis.call('ZSCORE', line, plan) then redis.call('ZADD', line, redis.call('INCR', arrivals), plan) end
redis.call('HSET', asked, plan, now)
while true do
  local head = redis.call('ZRANGE', line, 0, 0)[1]
  if (not head) or head == plan then break end
  if tonumber(redis.call('HGET', asked, head) or '0') >= now - stale then break end
  redis.call('ZREM', line, head)
  redis.call('HDEL', asked, head)
end
if not holder and redis.call('ZRANGE', line, 0, 0)[1] == plan then
  redis.call('SET', lock, plan, 'PX', lease)
  redis.call('ZREM', line, plan)
  redis.call('HDEL', asked, plan)
  return {'', 0, 0}
end
return {holder or '', holder and redis.call('PTTL', lock) or 0, redis.call('ZRANK', line, plan)}
`;

/**
 * Lets go of the symbol if the plan holds it, and leaves the line if it is in it.
 * KEYS: lock, line, last-asked. ARGV: plan id. Returns the plan first in line when the symbol is now free ('' if
 * none, or if another plan holds it): a repeated release (a retried activity) still names whom to wake.
 */
const RELEASE_SYMBOL = `
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('DEL', KEYS[1])
elseif holder then
  return ''
end
return redis.call('ZRANGE', KEYS[2], 0, 0)[1] or ''
`;

/**
 * Drops a waiter that can no longer be woken (its workflow has ended) from the line.
 * KEYS: lock, line, last-asked. ARGV: plan id. Returns the plan now first in line when the symbol is free ('' if
 * none, or if it is held: the holder wakes the next when it lets go).
 */
const DROP_WAITER = `
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 1 then return '' end
return redis.call('ZRANGE', KEYS[2], 0, 0)[1] or ''
`;

/**
 * The line sweep's step for one symbol (workers/line-sweep.ts), for plans whose workflows Temporal has closed:
 * drops them from the line, frees the symbol if one of them holds it and may let go (it had not reached Execute, or
 * its order is settled), or keeps the hold of one whose order may still be going out for at least `keep ms`.
 * Forgets the symbol from the register when it has neither a holder nor a line (atomic with TAKE_SYMBOL's SADD).
 * KEYS: lock, line, last-asked, symbols register. ARGV: symbol, plan to free (''), plan to keep (''), keep ms, then
 * the plans to drop. Returns the plan now first in line when the symbol is free, to be woken ('' if none, or held).
 */
const SETTLE_ENDED = `
local lock, line, asked = KEYS[1], KEYS[2], KEYS[3]
for i = 5, #ARGV do
  redis.call('ZREM', line, ARGV[i])
  redis.call('HDEL', asked, ARGV[i])
end
local holder = redis.call('GET', lock)
if holder and holder == ARGV[2] then
  redis.call('DEL', lock)
  holder = false
end
if holder and holder == ARGV[3] and redis.call('PTTL', lock) < tonumber(ARGV[4]) then
  redis.call('PEXPIRE', lock, ARGV[4])
end
if holder then return '' end
local head = redis.call('ZRANGE', line, 0, 0)[1]
if not head then
  redis.call('SREM', KEYS[4], ARGV[1])
  return ''
end
return head
`;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    takeSymbol(
      lock: string,
      line: string,
      asked: string,
      arrivals: string,
      symbols: string,
      planId: string,
      leaseMs: string,
      now: string,
      staleMs: string,
      symbol: string,
    ): Result<[string, number, number], Context>;
    releaseSymbol(lock: string, line: string, asked: string, planId: string): Result<string, Context>;
    dropWaiter(lock: string, line: string, asked: string, planId: string): Result<string, Context>;
    settleEnded(
      lock: string,
      line: string,
      asked: string,
      symbols: string,
      symbol: string,
      free: string,
      keep: string,
      keepMs: string,
      ...drop: string[]
    ): Result<string, Context>;
  }
}

/** Who takes a symbol: a plan, or an operator's action that must not run inside a plan's chain (reconcile). */
export type SymbolHolder = Pick<Plan, 'plan_id' | 'symbol'>;

export type SymbolHold = { held: true } | { held: false; holder: string; leaseLeftMs: number; ahead: number };

/** The symbol line as a plain module over one Redis: its activities, and `reconcile`, which takes a symbol too. */
export function createSymbolLine(redis: Redis, keyPrefix: string, clock: () => number) {
  const keys = redisKeys(keyPrefix);
  redis.defineCommand('takeSymbol', { numberOfKeys: 5, lua: TAKE_SYMBOL });
  redis.defineCommand('releaseSymbol', { numberOfKeys: 3, lua: RELEASE_SYMBOL });
  redis.defineCommand('dropWaiter', { numberOfKeys: 3, lua: DROP_WAITER });
  const lockKeys = (symbol: string) =>
    [keys.symbolLock(symbol), keys.symbolLine(symbol), keys.symbolLineAsked(symbol)] as const;
  return {
    /**
     * Per-symbol serialization: one plan at a time runs P3.3 through the ledger update on a symbol, so the next
     * one evaluates against the updated ledger; the others wait their turn in arrival order.
     */
    async holdSymbol(plan: SymbolHolder, leaseMs: number): Promise<SymbolHold> {
      const [holder, left, ahead] = await redis.takeSymbol(
        ...lockKeys(plan.symbol),
        keys.symbolArrivals(plan.symbol),
        keys.symbolLines,
        plan.plan_id,
        String(Math.max(1, Math.round(leaseMs))),
        String(clock()),
        String(WAITER_STALE_MS),
        plan.symbol,
      );
      return holder === '' && ahead === 0 ? { held: true } : { held: false, holder, leaseLeftMs: left, ahead };
    },

    /** Lets go of the symbol; returns the plan next in line, to be woken ('' when none waits). */
    async releaseSymbol(plan: SymbolHolder): Promise<string> {
      return redis.releaseSymbol(...lockKeys(plan.symbol), plan.plan_id);
    },

    /** Drops a waiter whose workflow has ended; returns the plan to wake instead ('' when none, or the symbol is held). */
    async dropWaiter(waiter: SymbolHolder): Promise<string> {
      return redis.dropWaiter(...lockKeys(waiter.symbol), waiter.plan_id);
    },
  };
}

/** The symbol line's steps as the worker registers them. */
export function createSymbolLockActivities({ redis, config, clock }: ActivityDeps) {
  return createSymbolLine(redis, config.keyPrefix, clock);
}

/**
 * The line sweep's step (workers/line-sweep.ts), for plans Temporal has closed: drops `drop` from the symbol's line,
 * frees the symbol if `free` holds it, keeps `keep`'s hold for at least `keepMs`. Returns the plan to wake ('' when
 * none, or the symbol is held). Not an activity: it runs in the worker's sweep, never in a plan.
 */
export function createLineSettler(redis: Redis, keyPrefix: string) {
  const keys = redisKeys(keyPrefix);
  redis.defineCommand('settleEnded', { numberOfKeys: 4, lua: SETTLE_ENDED });
  return async function settleEnded(
    symbol: string,
    { drop = [], free = '', keep = '', keepMs = 0 }: { drop?: string[]; free?: string; keep?: string; keepMs?: number },
  ): Promise<string> {
    return redis.settleEnded(
      keys.symbolLock(symbol),
      keys.symbolLine(symbol),
      keys.symbolLineAsked(symbol),
      keys.symbolLines,
      symbol,
      free,
      keep,
      String(Math.max(0, Math.round(keepMs))),
      ...drop,
    );
  };
}
