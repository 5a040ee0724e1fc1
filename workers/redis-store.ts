import type { Redis } from 'ioredis';
import { redisKeys } from '../contract/keys';
import { ConfigError, type ChainConfig } from '../lib/config';

/** What `INFO memory` says about the Redis the chain's state lives in. */
export interface RedisMemory {
  /** `maxmemory_policy`, e.g. `noeviction`, `allkeys-lru`. */
  policy: string;
  /** `used_memory`, bytes. */
  usedBytes: number;
  /** `maxmemory`, bytes; 0: no limit but the machine's. */
  maxBytes: number;
}

/** A value Redis reported, as it goes into a log line or an error: one short line. */
function bounded(value: string, max = 64): string {
  const line = value.replace(/[^\x20-\x7e]/g, '?');
  return line.length > max ? `${line.slice(0, max)}…` : line;
}

/**
 * Reads the memory policy and use from `INFO memory`: an ACL user and a managed Redis (which refuse CONFIG GET)
 * may run it. Throws when a field is missing.
 */
export async function readRedisMemory(redis: Redis): Promise<RedisMemory> {
  const fields = new Map<string, string>();
  for (const line of (await redis.info('memory')).split(/\r?\n/)) {
    const colon = line.indexOf(':');
    if (colon > 0) fields.set(line.slice(0, colon), line.slice(colon + 1).trim());
  }
  const policy = fields.get('maxmemory_policy');
  const usedBytes = Number(fields.get('used_memory'));
  const maxBytes = Number(fields.get('maxmemory'));
  if (policy === undefined || !Number.isFinite(usedBytes) || !Number.isFinite(maxBytes)) {
    throw new Error('INFO memory has no maxmemory_policy, used_memory or maxmemory');
  }
  return { policy: bounded(policy), usedBytes, maxBytes };
}

/**
 * The worker's check at start: a Redis that may evict keys could drop the records that keep each plan once-only
 * (Apply's record, the ledger's) and the ledger itself. Anything but `noeviction`, or a policy that cannot be read,
 * stops the worker with a {@link ConfigError} (exit 2) naming the policy and the fix, unless REDIS_ALLOW_EVICTION
 * allows it: then the risk, in one line, is returned for the log and `/readyz`. Undefined: no risk.
 */
export async function evictionRisk(
  redis: Redis,
  config: Pick<ChainConfig, 'redisAllowEviction'>,
): Promise<string | undefined> {
  let what: string;
  let fix: string;
  try {
    const { policy } = await readRedisMemory(redis);
    if (policy === 'noeviction') return undefined;
    what = `maxmemory-policy is ${policy}`;
    fix = 'set maxmemory-policy noeviction on the Redis server';
  } catch (err) {
    const message = (err instanceof Error ? err.message : String(err)).split('\n')[0] ?? '';
    what = `maxmemory-policy cannot be read from INFO memory (${bounded(message, 200)})`;
    fix = "allow the INFO command to the worker's Redis user (ACL +info) on a noeviction Redis";
  }
  const risk = 'Redis may evict the keys that keep each plan once-only and the ledger';
  if (!config.redisAllowEviction) {
    throw new ConfigError(`redis: ${what}: ${risk}; ${fix}, or REDIS_ALLOW_EVICTION=true to run with that risk`);
  }
  return `${what}, allowed by REDIS_ALLOW_EVICTION: ${risk}`;
}

/** How often the worker trims the chain's streams: each trim is a few cheap calls, and a minute's entries are few. */
export const STREAM_TRIM_INTERVAL_MS = 60_000;
/** XTRIM calls per stream per trim at most (each removes whole stream nodes, up to 10,000 entries by default). */
const TRIM_CALLS_MAX = 100;

/** The streams the chain writes and the worker trims, by the `stream` label of their metric. */
export type TrimmedStream = 'audit' | 'apply';

/**
 * Keeps the streams the chain writes (the audit stream, `apply.plan`) near their caps (AUDIT_STREAM_MAXLEN,
 * APPLY_STREAM_MAXLEN) with `XTRIM … MAXLEN ~`, from one place, whichever layer or command added the entries: at start
 * and every {@link STREAM_TRIM_INTERVAL_MS}. Under `noeviction` a full Redis refuses every write, the ledger's
 * included; streams that only grow would fill it. `~` trims whole stream nodes, so a stream stays at its cap or up to
 * one node (100 entries by default) above it. Every worker trims; trims of one stream by two workers are harmless.
 */
export class StreamTrimmer {
  private timer: NodeJS.Timeout | undefined;
  private failing = false;
  private readonly streams: [TrimmedStream, string, number][];

  constructor(
    private readonly options: {
      redis: Redis;
      config: Pick<ChainConfig, 'keyPrefix' | 'streamCaps'>;
      /** Called with what each trim removed from a stream (the metric). */
      trimmed?: (stream: TrimmedStream, entries: number) => void;
      /** A trim that fails (Redis away) is said once per run of failures. */
      log?: (line: string) => void;
    },
  ) {
    const keys = redisKeys(options.config.keyPrefix);
    const caps = options.config.streamCaps;
    this.streams = [
      ['audit', keys.auditStream, caps.audit],
      ['apply', keys.applyStream, caps.apply],
    ];
  }

  /** Trims each stream to about its cap; returns the entries removed, by stream. */
  async trimOnce(): Promise<Record<TrimmedStream, number>> {
    const removed: Record<TrimmedStream, number> = { audit: 0, apply: 0 };
    for (const [name, key, cap] of this.streams) {
      for (let call = 0; call < TRIM_CALLS_MAX; call++) {
        const count = await this.options.redis.xtrim(key, 'MAXLEN', '~', cap);
        if (count === 0) break;
        removed[name] += count;
        this.options.trimmed?.(name, count);
      }
    }
    return removed;
  }

  /** Trims now and then every interval, until {@link stop}. */
  start(intervalMs = STREAM_TRIM_INTERVAL_MS): void {
    const tick = () => {
      this.trimOnce().then(
        () => (this.failing = false),
        (err: unknown) => {
          if (!this.failing) {
            const message = (err instanceof Error ? err.message : String(err)).split('\n')[0] ?? '';
            this.options.log?.(`worker: cannot trim the chain's streams (${bounded(message, 200)}); trying again`);
          }
          this.failing = true;
        },
      );
    };
    tick();
    this.timer = setInterval(tick, intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }
}
