/**
 * The chaos run's feed: plans through the upstream stream at a steady rate, with repeats, malformed entries, bursts
 * on one symbol and plans over the size limit; and, beside it, rounds of plans blocked until `reconcile`.
 */
import type { Client } from '@temporalio/client';
import type { Redis } from 'ioredis';
import type { RedisKeys } from '../../contract/keys';
import { planWorkflowId } from '../../contract/messages';
import type { ChainOutcome } from '../../contract/types';
import { Dec, formatDec } from '../../lib/decimal';
import { parsePlan } from '../../lib/plan';
import { runCli } from '../stack/cli-runner';
import { BLOCKED_SYMBOL, SYMBOLS } from './chaos-stack';
import type { FedPlan } from './chaos-check';

/** The reason of every malformed entry: the check finds them by it in the exit stream. */
export const MALFORMED_REASON = 'chaos malformed';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export interface FeedOptions {
  db: Redis;
  keys: RedisKeys;
  seed: number;
  /** When the run began: plans' reasons and created_at are drawn from it. */
  t0: number;
  /** Plans fed per second (bursts aside). */
  feedPerS: number;
  /** Feed for this long (ms)... */
  durationMs?: number;
  /** ...or until this many plans are fed. */
  plans?: number;
  /** The feed's seeded generator. */
  random: () => number;
}

export class Feed {
  /** Every plan fed, by plan id, with how it was designed to end. */
  readonly plans = new Map<string, FedPlan>();
  readonly counts = { entries: 0, repeats: 0, malformed: 0, bursts: 0, blocked: 0, denied: 0 };
  /** When feeding began. */
  readonly from = Date.now();
  private readonly until: number;
  private readonly fedFields: Record<string, string>[] = [];
  private planNo = 0;

  constructor(private readonly o: FeedOptions) {
    this.until = o.durationMs !== undefined ? this.from + o.durationMs : Number.POSITIVE_INFINITY;
  }

  /** Whether the feed is still on: within its duration and short of its plan count. */
  on(): boolean {
    return Date.now() < this.until && (this.o.plans === undefined || this.plans.size < this.o.plans);
  }

  private pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.o.random() * items.length)] as T;
  }

  private async xadd(fields: Record<string, string>): Promise<void> {
    await this.o.db.xadd(this.o.keys.exitPlanStream, '*', ...Object.entries(fields).flat());
    this.counts.entries += 1;
  }

  private qty(): string {
    return (0.001 * (1 + Math.floor(this.o.random() * 50))).toFixed(3);
  }

  private async plan(symbol: string, outcome: ChainOutcome, qty = this.qty(), sell = this.o.random() < 0.5) {
    const { seed, t0 } = this.o;
    this.planNo += 1;
    const fields = {
      action: 'EXECUTE',
      symbol,
      side: sell ? 'SELL' : 'BUY',
      qty,
      reduce_only: sell ? 'true' : 'false',
      source: 'chaos',
      reason: `chaos plan ${this.planNo} of seed ${seed} at ${t0}`,
      created_at: String(t0 + this.planNo),
    };
    this.plans.set(parsePlan(fields).plan_id, { planId: parsePlan(fields).plan_id, symbol, outcome });
    this.fedFields.push(fields);
    await this.xadd(fields);
  }

  private async malformed(): Promise<void> {
    this.counts.malformed += 1;
    const reason = `${MALFORMED_REASON} ${this.counts.malformed}`;
    const base = { action: 'EXECUTE', symbol: this.pick(SYMBOLS), side: 'SELL', qty: '0.01', reason };
    const broken = this.pick([
      { ...base, qty: '-1' },
      { ...base, qty: '0.123456789' },
      { ...base, side: 'HOLD' },
      { ...base, symbol: 'not a symbol' },
      { ...base, action: 'CANCEL' },
      { action: 'EXECUTE', symbol: base.symbol, reason },
    ]);
    await this.xadd(broken);
  }

  /** Feeds while the feed is on: mostly plans designed to execute, some repeats, malformed, bursts, and denials. */
  async run(): Promise<void> {
    while (this.on()) {
      const r = this.o.random();
      if (r < 0.06) await this.malformed();
      else if (r < 0.14 && this.fedFields.length > 0) {
        this.counts.repeats += 1;
        await this.xadd(this.pick(this.fedFields));
      } else if (r < 0.17) {
        this.counts.bursts += 1;
        const symbol = this.pick(SYMBOLS);
        for (let i = 0; i < 8; i++) await this.plan(symbol, 'executed');
      } else if (r < 0.19) {
        this.counts.denied += 1;
        await this.plan(this.pick(SYMBOLS), 'denied', '7', true);
      } else await this.plan(this.pick(SYMBOLS), 'executed');
      await sleep(1000 / this.o.feedPerS);
    }
  }

  /**
   * Blocked plans: the ledger of BLOCKED_SYMBOL moved off the exchange's, two plans fed (P3.3 blocks them), then
   * `permit-chain reconcile` after a while; the next round only once both have ended.
   */
  async blockedRounds(
    temporal: Client,
    env: Record<string, string>,
    blockedRandom: () => number,
    say: (line: string) => void,
  ): Promise<void> {
    const { db, keys } = this.o;
    const ended = (planId: string): Promise<boolean> =>
      temporal.workflow
        .getHandle(planWorkflowId(planId))
        .describe()
        .then((d) => d.status.name !== 'RUNNING')
        .catch(() => false);
    while (this.on()) {
      await sleep(5_000 + blockedRandom() * 10_000);
      if (!this.on()) return;
      const ledger = new Dec((await db.hget(keys.position(BLOCKED_SYMBOL), 'ledger_amount')) ?? '0');
      await db.hset(keys.position(BLOCKED_SYMBOL), 'ledger_amount', formatDec(ledger.add(1)));
      const before = new Set(this.plans.keys());
      for (let i = 0; i < 2; i++) await this.plan(BLOCKED_SYMBOL, 'executed', this.qty(), blockedRandom() < 0.5);
      this.counts.blocked += 2;
      const round = [...this.plans.keys()].filter((planId) => !before.has(planId));
      await sleep(8_000 + blockedRandom() * 10_000);
      for (;;) {
        const fixed = await runCli(['reconcile', BLOCKED_SYMBOL, '--by', 'chaos', '--yes'], env, 60_000).catch(
          (err: unknown) => ({ code: 1, stdout: '', stderr: String(err) }),
        );
        if (fixed.code === 0) break;
        say(`chaos: reconcile ${BLOCKED_SYMBOL} failed (${fixed.stderr.trim().split('\n')[0]}); again in 2 s`);
        await sleep(2_000);
      }
      // Bounded by the feed: a plan that never ends is the drain's to report, not a reason to run on.
      for (const planId of round) while (this.on() && !(await ended(planId))) await sleep(1_000);
    }
  }
}
