import type { Redis, Result } from 'ioredis';
import { redisKeys } from '../contract/keys';
import type { ApplyResult, Plan } from '../contract/types';
import { auditFields } from './audit';
import type { ActivityDeps } from './deps';

/**
 * Life beyond the namespace's retention and PLAN_MAX_AGE_S: a run that ends a little past its deadline, workers' and
 * servers' clocks apart, the time a reset itself takes.
 */
export const APPLY_RECORD_MARGIN_S = 24 * 60 * 60;

/** How long the existing system's dedupe key lives (`quantum:apply:dedupe:{plan_id}`, EX 1 day): other services read it. */
export const APPLY_DEDUPE_TTL_S = 24 * 60 * 60;

/**
 * How long the Apply layer remembers a plan's stream id in its once-only record (`quantum:apply:published:{plan_id}`),
 * in seconds; null: for ever. Temporal can reset or replay a plan's run as long as it keeps it: while it runs (PLAN_MAX_AGE_S at most) and
 * for the namespace's retention after it closes. The record outlives both, so that a reset of any run finds it; with
 * the retention unknown or unbounded, it never expires.
 */
export function applyRecordTtlS(retentionS: number | null, planMaxAgeS: number): number | null {
  if (retentionS === null || !Number.isFinite(retentionS) || retentionS <= 0) return null;
  return Math.ceil(retentionS) + planMaxAgeS + APPLY_RECORD_MARGIN_S;
}

/**
 * Publishes a plan to the Apply stream once: the first call XADDs and remembers the entry id in the once-only record
 * (and, for the services that read it, the one-day dedupe key), with its audit entry; every later call, concurrent,
 * after a crash or in a reset run, gets the same id back, adds nothing, and makes the record live at least the full
 * TTL from now (never shorter than it was): a reset run may itself be reset until the retention after its own close.
 * Only the once-only record decides: the dedupe key may be long gone.
 *
 * KEYS: once-only record, dedupe key, apply stream, audit stream
 * ARGV: record ttl seconds (0: never expires), dedupe ttl seconds, n entry args, entry args..., audit args...
 * Returns [stream id, 1 if published now else 0].
 */
const PUBLISH_PLAN_ONCE = `
local ttl = tonumber(ARGV[1])
local existing = redis.call('GET', KEYS[1])
if existing then
  local left = redis.call('TTL', KEYS[1])
  if ttl == 0 then
    redis.call('PERSIST', KEYS[1])
  elseif left >= 0 and left < ttl then
    redis.call('EXPIRE', KEYS[1], ttl)
  end
  return {existing, 0}
end
local n = tonumber(ARGV[3])
local id = redis.call('XADD', KEYS[3], '*', unpack(ARGV, 4, 3 + n))
if ttl == 0 then
  redis.call('SET', KEYS[1], id)
else
  redis.call('SET', KEYS[1], id, 'EX', ttl)
end
redis.call('SET', KEYS[2], id, 'EX', tonumber(ARGV[2]))
redis.call('XADD', KEYS[4], '*', unpack(ARGV, 4 + n, #ARGV))
return {id, 1}
`;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    publishPlanOnce(
      record: string,
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
  redis.defineCommand('publishPlanOnce', { numberOfKeys: 4, lua: PUBLISH_PLAN_ONCE });
}

export function createApplyActivities({ redis, config, clock, applyRecordTtlS: recordTtlS = null }: ActivityDeps) {
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
        keys.applyPublished(plan.plan_id),
        keys.applyDedupe(plan.plan_id),
        keys.applyStream,
        keys.auditStream,
        String(recordTtlS ?? 0),
        String(APPLY_DEDUPE_TTL_S),
        String(entry.length),
        ...entry,
        ...audit,
      );
      return { stream_id: streamId, published: published === 1 };
    },
  };
}
