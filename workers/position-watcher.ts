import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import type { Redis, Result } from 'ioredis';
import type { ExchangePort } from '../activities/exchange/port';
import { positionsAgree } from '../activities/p33';
import { readPositions } from '../activities/positions';
import type { ChainConfig } from '../lib/config';
import { redisKeys } from '../contract/keys';
import { SYMBOL_PATTERN } from '../lib/plan';
import { planWorkflowId, positionsChangedSignal } from '../contract/messages';

/** Changes to one symbol that arrive this close together wake its blocked plans once. */
const DEBOUNCE_MS = 20;
/** The keyspace events the watcher needs: keyspace channel (K), hash commands (h), generic ones such as DEL (g). */
const NEEDED_EVENTS = ['K', 'h', 'g'];

/** Forgets a symbol with no blocked plans, unless a plan was blocked on it meanwhile. KEYS: symbols set, blocked set. */
const FORGET_IF_EMPTY = `
if redis.call('ZCARD', KEYS[2]) == 0 then return redis.call('SREM', KEYS[1], ARGV[1]) end
return 0
`;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    forgetIfEmpty(symbols: string, blocked: string, symbol: string): Result<number, Context>;
  }
}

export interface PositionWatcherDeps {
  /** A connection of its own: a subscribed connection can do nothing else. */
  subscriber: Redis;
  redis: Redis;
  client: Client;
  config: ChainConfig;
  exchange: ExchangePort;
  log: (line: string) => void;
}

/**
 * Wakes blocked plans when their symbol's positions change, so that a blocked plan rests (no timers, no activities)
 * until there is something to look at: the one-command ledger fix (`redis-cli HSET quantum:position:BTCUSDT
 * ledger_amount 0.062`) reaches the plan within milliseconds. Two sources: Redis keyspace notifications on the ledger
 * and paper-exchange position keys, and a sweep every RECHECK_INTERVAL_S over the symbols P3.3 has blocked plans
 * on, which reads their positions through the exchange port (an exchange outside Redis sends no notification) and
 * wakes a symbol's plans once its positions agree.
 */
export class PositionWatcher {
  private readonly keys;
  private readonly pending = new Map<string, NodeJS.Timeout>();
  private sweeper?: NodeJS.Timeout;
  private sweeping = false;

  constructor(private readonly deps: PositionWatcherDeps) {
    this.keys = redisKeys(deps.config.keyPrefix);
    deps.redis.defineCommand('forgetIfEmpty', { numberOfKeys: 2, lua: FORGET_IF_EMPTY });
  }

  async start(): Promise<void> {
    const { subscriber, config, log } = this.deps;
    const db = subscriber.options.db ?? 0;
    const prefix = `__keyspace@${db}__:`;
    const patterns = [`${prefix}${this.keys.position('*')}`, `${prefix}${this.keys.paperPosition('*')}`];
    const ledgerAt = prefix + this.keys.position('');
    const exchangeAt = prefix + this.keys.paperPosition('');
    subscriber.on('pmessage', (_pattern: string, channel: string) => {
      const symbol = channel.startsWith(ledgerAt)
        ? channel.slice(ledgerAt.length)
        : channel.startsWith(exchangeAt)
          ? channel.slice(exchangeAt.length)
          : '';
      if (SYMBOL_PATTERN.test(symbol)) this.soon(symbol);
    });
    try {
      await subscriber.psubscribe(...patterns);
    } catch (err) {
      // A Redis user without PSUBSCRIBE: the sweep alone wakes blocked plans, later but surely.
      log(
        `position watcher: cannot subscribe to keyspace notifications (${err instanceof Error ? err.message : String(err)}): ` +
          `blocked plans are woken by the sweep every ${config.recheckIntervalS}s`,
      );
    }
    const events = await this.keyspaceEvents();
    if (events !== undefined && NEEDED_EVENTS.some((flag) => !events.includes(flag))) {
      log(
        `position watcher: Redis keyspace notifications are off (notify-keyspace-events '${events}'): blocked ` +
          `plans are woken by the sweep every ${config.recheckIntervalS}s; for at once, ` +
          `CONFIG SET notify-keyspace-events ${NEEDED_EVENTS.join('')}`,
      );
    }
    this.sweeper = setInterval(() => void this.sweep(), config.recheckIntervalS * 1000);
  }

  stop(): void {
    if (this.sweeper) clearInterval(this.sweeper);
    for (const timer of this.pending.values()) clearTimeout(timer);
    this.pending.clear();
    this.deps.subscriber.disconnect();
  }

  /** The server's notify-keyspace-events, or undefined where CONFIG is not allowed (a managed Redis). */
  private async keyspaceEvents(): Promise<string | undefined> {
    try {
      const reply = (await this.deps.redis.config('GET', 'notify-keyspace-events')) as string[];
      return reply[1] ?? '';
    } catch {
      return undefined;
    }
  }

  private soon(symbol: string): void {
    if (this.pending.has(symbol)) return;
    this.pending.set(
      symbol,
      setTimeout(() => {
        this.pending.delete(symbol);
        void this.wake(symbol).catch((err: unknown) => this.deps.log(`position watcher: ${String(err)}`));
      }, DEBOUNCE_MS),
    );
  }

  /** Signals every plan blocked on the symbol; a plan that has ended leaves the register. Returns how many woke. */
  async wake(symbol: string): Promise<number> {
    const { redis, client } = this.deps;
    const blocked = this.keys.p33Blocked(symbol);
    const plans = await redis.zrange(blocked, 0, -1);
    let woken = 0;
    await Promise.all(
      plans.map(async (planId) => {
        try {
          await client.workflow.getHandle(planWorkflowId(planId)).signal(positionsChangedSignal);
          woken += 1;
        } catch (err) {
          if (!(err instanceof WorkflowNotFoundError)) throw err;
          await redis.zrem(blocked, planId);
        }
      }),
    );
    return woken;
  }

  /** The fallback for what sends no notification: wakes the plans of every blocked symbol whose positions agree. */
  async sweep(): Promise<void> {
    if (this.sweeping) return;
    this.sweeping = true;
    const { redis, exchange, config } = this.deps;
    try {
      for (const symbol of await redis.smembers(this.keys.p33BlockedSymbols)) {
        if ((await redis.forgetIfEmpty(this.keys.p33BlockedSymbols, this.keys.p33Blocked(symbol), symbol)) === 1) {
          continue;
        }
        const positions = await readPositions({ redis, exchange, config, keys: this.keys }, symbol).catch(
          () => undefined,
        );
        if (!positions) continue;
        if (positionsAgree(positions)) await this.wake(symbol);
      }
    } catch (err) {
      this.deps.log(`position watcher: sweep failed (${err instanceof Error ? err.message : String(err)})`);
    } finally {
      this.sweeping = false;
    }
  }
}
