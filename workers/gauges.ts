import type { Client } from '@temporalio/client';
import type { Redis } from 'ioredis';
import { Gauge, type Registry } from 'prom-client';
import { PERMIT_CHAIN_WORKFLOW } from '../contract/messages';
import { redisKeys } from '../contract/keys';
import type { ChainConfig } from '../lib/config';
import type { Logger } from '../lib/log';
import type { ChainMetrics } from './metrics';
import { readRedisMemory } from './redis-store';

/**
 * The gauges of state every process shares (blocked plans, the intake's pending entries, Redis memory), read at
 * scrape time from Temporal's visibility and Redis, so every process reports the same value: aggregate them with
 * max(), not sum().
 */

/** Gauges read at most this often, however many scrapes ask: each reading is a query to Temporal or Redis. */
const GAUGE_REFRESH_MS = 5_000;
/** A scrape does not wait longer than this for a gauge's source. */
const GAUGE_TIMEOUT_MS = 2_000;

function within<T>(ms: number, what: string, work: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, fail) => {
    timer = setTimeout(() => fail(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([work, late]).finally(() => clearTimeout(timer));
}

/**
 * A gauge read at scrape time from a shared source, remembered for {@link GAUGE_REFRESH_MS}. When the source does
 * not answer, the series is left out of the scrape (an alert on `absent()` sees it) and the failure logged once.
 */
function sharedGauge(
  registry: Registry,
  spec: { name: string; help: string },
  read: () => Promise<number>,
  logger: Logger,
): void {
  let cached: { at: number; value: number } | undefined;
  let failing = false;
  new Gauge({
    ...spec,
    registers: [registry],
    async collect() {
      if (cached && Date.now() - cached.at < GAUGE_REFRESH_MS) {
        this.set(cached.value);
        return;
      }
      try {
        const value = await within(GAUGE_TIMEOUT_MS, spec.name, read());
        cached = { at: Date.now(), value };
        this.set(value);
        if (failing) logger.info(`metrics: ${spec.name} readable again`);
        failing = false;
      } catch (err) {
        cached = undefined;
        this.reset();
        if (!failing)
          logger.warn(`metrics: cannot read ${spec.name} (${err instanceof Error ? err.message : String(err)})`);
        failing = true;
      }
    },
  });
}

/**
 * The plans at rest, counted from Temporal's visibility (the search attribute `ChainStage` of running plans on this
 * task queue): the same number from every worker, true whichever worker last ran them.
 */
export function watchPlans(metrics: ChainMetrics, client: Client, config: ChainConfig, logger: Logger): void {
  const running = (stage: string) =>
    `WorkflowType = '${PERMIT_CHAIN_WORKFLOW}' AND ExecutionStatus = 'Running' AND TaskQueue = '${config.taskQueue}' ` +
    `AND ChainStage = '${stage}'`;
  const count = async (stage: string) => (await client.workflow.count(running(stage))).count;
  sharedGauge(
    metrics.registry,
    {
      name: 'permit_chain_plans_blocked',
      help: 'Running plans blocked by P3.3 now (the same value from every process).',
    },
    () => count('blocked'),
    logger,
  );
  // Closed by Temporal rather than by the chain (`temporal workflow terminate`, an execution timeout): no outcome of
  // their own, so they are counted here. Within the namespace's retention.
  const closedOutside = `WorkflowType = '${PERMIT_CHAIN_WORKFLOW}' AND TaskQueue = '${config.taskQueue}' AND ExecutionStatus IN ('Terminated', 'TimedOut', 'Canceled')`;
  sharedGauge(
    metrics.registry,
    {
      name: 'permit_chain_plans_terminated',
      help: 'Plans Temporal terminated (or timed out) before the chain ended them, within retention (the same value from every process).',
    },
    async () => (await client.workflow.count(closedOutside)).count,
    logger,
  );
  sharedGauge(
    metrics.registry,
    {
      name: 'permit_chain_plans_terminated_in_execute',
      help: "Of those, plans whose last stage was execute: their order may be on the exchange without the chain's record.",
    },
    async () => (await client.workflow.count(`${closedOutside} AND ChainStage = 'execute'`)).count,
    logger,
  );
  sharedGauge(
    metrics.registry,
    {
      name: 'permit_chain_plans_awaiting_approval',
      help: 'Running plans awaiting a signed approval now (production mode; the same value from every process).',
    },
    () => count('awaiting_approval'),
    logger,
  );
}

/** The exit.plan stream as the intake's consumer group sees it, and its dead letters: from Redis, at scrape time. */
export function watchIntake(
  metrics: ChainMetrics,
  redis: Redis,
  config: ChainConfig,
  group: string,
  logger: Logger,
): void {
  const keys = redisKeys(config.keyPrefix);
  sharedGauge(
    metrics.registry,
    {
      name: 'permit_chain_intake_pending_entries',
      help: 'Entries read by an intake and not yet acknowledged (XPENDING of the group).',
    },
    async () => {
      const reply = (await redis.xpending(keys.exitPlanStream, group).catch(noGroup([0]))) as [number, ...unknown[]];
      return Number(reply[0] ?? 0);
    },
    logger,
  );
  sharedGauge(
    metrics.registry,
    {
      name: 'permit_chain_intake_unread_entries',
      help: 'Entries on the exit.plan stream that no intake has read yet (the consumer group lag).',
    },
    async () => {
      const groups = (await redis.xinfo('GROUPS', keys.exitPlanStream).catch(noGroup([]))) as unknown[][];
      for (const fields of groups) {
        const info: Record<string, unknown> = {};
        for (let i = 0; i + 1 < fields.length; i += 2) info[String(fields[i])] = fields[i + 1];
        if (info.name === group) return Number(info.lag ?? 0);
      }
      return await redis.xlen(keys.exitPlanStream);
    },
    logger,
  );
  sharedGauge(
    metrics.registry,
    {
      name: 'permit_chain_intake_dead_letters',
      help: 'Entries on the exit.plan.dead stream (plans refused at intake).',
    },
    () => redis.xlen(keys.exitPlanDeadStream),
    logger,
  );
}

/**
 * Redis's memory, from `INFO memory` at scrape time: under `noeviction` a full Redis refuses every write, the ledger's
 * included, so the alert (deploy/prometheus/alerts.yml) fires well before; and whether its policy may evict keys,
 * should it be changed after the worker's check at start. The same values from every process.
 */
export function watchRedisMemory(metrics: ChainMetrics, redis: Redis, logger: Logger): void {
  sharedGauge(
    metrics.registry,
    { name: 'permit_chain_redis_used_memory_bytes', help: "Redis's used_memory (INFO memory), bytes." },
    async () => (await readRedisMemory(redis)).usedBytes,
    logger,
  );
  sharedGauge(
    metrics.registry,
    {
      name: 'permit_chain_redis_max_memory_bytes',
      help: "Redis's maxmemory (INFO memory), bytes; 0: no limit set (the machine's memory is the limit).",
    },
    async () => (await readRedisMemory(redis)).maxBytes,
    logger,
  );
  sharedGauge(
    metrics.registry,
    {
      name: 'permit_chain_redis_may_evict',
      help: "1 when Redis's maxmemory-policy is not noeviction (it may evict the chain's records), else 0.",
    },
    async () => ((await readRedisMemory(redis)).policy === 'noeviction' ? 0 : 1),
    logger,
  );
}

/** A stream or group that does not exist yet is an empty one. */
function noGroup<T>(empty: T) {
  return (err: unknown): T => {
    if (/NOGROUP|no such key/i.test(String(err))) return empty;
    throw err;
  };
}
