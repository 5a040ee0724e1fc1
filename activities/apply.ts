import type { Redis, Result } from 'ioredis';
import { redisKeys } from '../contract/keys';
import type { ApplyResult, Plan } from '../contract/types';
import { auditFields } from './audit';
import type { ActivityDeps } from './deps';

/** How long the Apply layer remembers a plan's stream id; longer than any plan may live (PLAN_MAX_AGE_S). */
export const APPLY_DEDUPE_TTL_S = 24 * 60 * 60;

/**
 * Publishes a plan to the Apply stream once: the first call XADDs and remembers the entry id under the dedupe key,
 * with its audit entry; every later call, concurrent or after a crash, gets the same id back and adds nothing.
 *
 * KEYS: dedupe key, apply stream, audit stream
 * ARGV: dedupe ttl seconds, n entry args, entry args..., audit args...
 * Returns [stream id, 1 if published now else 0].
 */
const PUBLISH_PLAN_ONCE = `
local existing = redis.call('GET', KEYS[1])
if existing then return {existing, 0} end
local n = tonumber(ARGV[2])
local id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3, 2 + n))
redis.call('SET', KEYS[1], id, 'EX', tonumber(ARGV[1]))
redis.call('XADD', KEYS[3], '*', unpack(ARGV, 3 + n, #ARGV))
return {id, 1}
`;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    publishPlanOnce(
      dedupeKey: string,
      applyStream: string,
      auditStream: string,
      ...args: string[]
    ): Result<[string, number], Context>;
  }
}

/** The Apply stream entry of a plan, field by field as the existing consumers read it. */
export function applyEntry(plan: Plan, workflowId: string, publishedAt: number): string[] {
  return [
    'plan_id',
    plan.plan_id,
    'symbol',
    plan.symbol,
    'action',
    plan.action,
    'side',
    plan.side,
    'qty',
    plan.qty,
    'reduce_only',
    String(plan.reduce_only),
    'source',
    plan.source,
    'workflow_id',
    workflowId,
    'published_at',
    new Date(publishedAt).toISOString(),
  ];
}

function defineApplyScript(redis: Redis): void {
  redis.defineCommand('publishPlanOnce', { numberOfKeys: 3, lua: PUBLISH_PLAN_ONCE });
}

export function createApplyActivities({ redis, config, clock }: ActivityDeps) {
  const keys = redisKeys(config.keyPrefix);
  defineApplyScript(redis);
  return {
    /** The Apply layer (P3): publishes the plan to `quantum:stream:apply.plan` exactly once. */
    async publishPlan(plan: Plan, workflowId: string): Promise<ApplyResult> {
      const now = clock();
      const entry = applyEntry(plan, workflowId, now);
      const audit = auditFields({
        plan_id: plan.plan_id,
        layer: 'apply',
        decision: 'published',
        reason: 'ok',
        at: now,
      });
      const [streamId, published] = await redis.publishPlanOnce(
        keys.applyDedupe(plan.plan_id),
        keys.applyStream,
        keys.auditStream,
        String(APPLY_DEDUPE_TTL_S),
        String(entry.length),
        ...entry,
        ...audit,
      );
      return { stream_id: streamId, published: published === 1 };
    },
  };
}
