import type { Result } from 'ioredis';
import { redisKeys } from '../lib/keys';
import type { Plan } from '../lib/types';
import type { ActivityDeps } from './deps';

/**
 * Takes the symbol for a plan, or extends the plan's own hold: a lease, so that a worker that crashes while holding
 * a symbol frees it when the lease runs out.
 *
 * KEYS: the symbol's lock. ARGV: plan id, lease ms. Returns ['', 0] when the plan holds it, else [holder, ms left].
 */
const TAKE_SYMBOL = `
local holder = redis.call('GET', KEYS[1])
if (not holder) or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
  return {'', 0}
end
return {holder, redis.call('PTTL', KEYS[1])}
`;

/** Lets go of the symbol only if the plan still holds it. KEYS: the lock. ARGV: plan id. */
const RELEASE_SYMBOL = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    takeSymbol(key: string, planId: string, leaseMs: string): Result<[string, number], Context>;
    releaseSymbol(key: string, planId: string): Result<number, Context>;
  }
}

export type SymbolHold = { held: true } | { held: false; holder: string; leaseLeftMs: number };

export function createSymbolLockActivities({ redis, config }: ActivityDeps) {
  const keys = redisKeys(config.keyPrefix);
  redis.defineCommand('takeSymbol', { numberOfKeys: 1, lua: TAKE_SYMBOL });
  redis.defineCommand('releaseSymbol', { numberOfKeys: 1, lua: RELEASE_SYMBOL });
  return {
    /**
     * Per-symbol serialization: one plan at a time runs P3.3 through the ledger update on a symbol, so the next
     * one evaluates against the updated ledger.
     */
    async holdSymbol(plan: Plan, leaseMs: number): Promise<SymbolHold> {
      const [holder, left] = await redis.takeSymbol(
        keys.symbolLock(plan.symbol),
        plan.plan_id,
        String(Math.max(1, Math.round(leaseMs))),
      );
      return holder === '' ? { held: true } : { held: false, holder, leaseLeftMs: left };
    },

    async releaseSymbol(plan: Plan): Promise<void> {
      await redis.releaseSymbol(keys.symbolLock(plan.symbol), plan.plan_id);
    },
  };
}
