import { randomUUID } from 'node:crypto';
import { WorkflowNotFoundError, type Client, type WorkflowExecutionStatusName } from '@temporalio/client';
import type { Redis } from 'ioredis';
import { SEND_WINDOW_MARGIN_MS } from '../activities/exchange/binance';
import { isFinalStatus, type ExchangePort } from '../activities/exchange/port';
import { createLineSettler } from '../activities/symbol-lock';
import { redisKeys } from '../contract/keys';
import {
  PERMIT_CHAIN_WORKFLOW,
  chainStageKey,
  planWorkflowId,
  statusQuery,
  symbolFreeSignal,
} from '../contract/messages';
import type { GovernorPermit } from '../contract/types';
import type { ChainConfig } from '../lib/config';

/**
 * How often the worker sweeps the symbol lines for plans Temporal has closed from outside the chain (terminated, timed
 * out): a closed plan's place, or its hold when it had not reached Execute, is given up within about two sweeps.
 */
export const LINE_SWEEP_INTERVAL_MS = 1_000;
/** Plan ids asked about in one visibility query (`WorkflowId IN (…)`). */
const VISIBILITY_BATCH = 100;
/** Plan ids looked at per symbol and sweep, the line's head first: a longer line is worked through over sweeps. */
const LINE_SCAN_LIMIT = 1_000;
/** Plan ids asked about per sweep over all symbols: at most 50 visibility queries a second. */
const SWEEP_ID_LIMIT = 5_000;
/** Describes of closed candidates in flight at once. */
const DESCRIBE_CONCURRENCY = 16;
/** A free symbol whose first waiter has not asked for this long has lost its wake (its holder died): woken again. */
const STALLED_HEAD_MS = 2_000;
/** A plan closed with its order open on the exchange keeps its hold this much longer at each sweep. */
const OPEN_ORDER_KEEP_MS = 10_000;
/** Only a plan's id (16 hex) is asked about; an operator's hold (`reconcile-…`) is not a workflow. */
const PLAN_ID = /^[0-9a-f]{16}$/;
/** Closed by Temporal, not by the chain: the chain's own end (letting go, waking the next) never ran. */
const CLOSED_FROM_OUTSIDE: ReadonlySet<WorkflowExecutionStatusName> = new Set(['TERMINATED', 'TIMED_OUT', 'CANCELLED']);
const CLOSED_STATUSES = "ExecutionStatus IN ('Completed', 'Failed', 'Canceled', 'Terminated', 'TimedOut')";

/**
 * How long after a permit's end an order sent under it may still reach the exchange: Binance takes a signed request
 * until its timestamp plus recvWindow (and our estimate of its clock is off by up to the adapter's margin); the paper
 * exchange places an order in the Redis step that sends it.
 */
export function exchangeReceiveWindowMs(config: Pick<ChainConfig, 'exchange' | 'binance'>): number {
  if (config.exchange === 'paper' || !config.binance) return 0;
  return config.binance.recvWindowMs + SEND_WINDOW_MARGIN_MS;
}

export interface LineSweepDeps {
  redis: Redis;
  client: Client;
  config: ChainConfig;
  exchange: ExchangePort;
  /** What the sweep did (info) and what it could not do (warn). */
  log: (line: string, level: 'info' | 'warn') => void;
  /** Counts the plans the sweep took out of a line or a hold (workers/metrics.ts). */
  onEnded?: (role: 'waiter' | 'holder') => void;
  /** Default: exchangeReceiveWindowMs(config). */
  receiveWindowMs?: number;
}

interface SymbolState {
  symbol: string;
  holder: string | null;
  line: string[];
}

interface EndedPlan {
  status: WorkflowExecutionStatusName;
  /** Its last `ChainStage`: `execute` means Execute was scheduled, its order may be on the exchange. */
  stage: string;
}

/** What becomes of a closed holder's hold. */
type HolderVerdict = { free: true; why: string } | { free: false; keepMs: number; why: string };

/**
 * Keeps the symbol lines true to Temporal: every {@link LINE_SWEEP_INTERVAL_MS}, for each symbol with a holder or a
 * line, asks Temporal which of those plans are closed (one visibility query per 100 plans; a candidate is confirmed by
 * describe, which reads the latest run: a reset or continued plan is not closed), drops the closed ones from the line
 * in one Lua step, frees a closed holder that had not reached Execute, and wakes the plan then first in line.
 *
 * A holder closed in Execute keeps the symbol until its order is found final on the exchange (looked up by plan id),
 * or, when the exchange has no order, until its permit's end plus the exchange's receive window: an order sent under
 * the permit may still be going out until then. One worker sweeps per interval however many run (a SET NX).
 */
export class LineSweeper {
  private readonly keys;
  private readonly settleEnded;
  private readonly receiveWindowMs: number;
  private readonly token = randomUUID();
  /** Send deadlines of closed holders, by plan id: computed once (from the permit), kept until the hold is let go. */
  private readonly deadlines = new Map<string, number>();
  /** What was logged about a closed holder, so that each hold is told once per verdict. */
  private readonly told = new Map<string, string>();
  private timer?: NodeJS.Timeout;
  private sweeping = false;
  /** Whether the last sweep failed: a failure is told once, and again when the sweep works again. */
  private failing = false;

  constructor(private readonly deps: LineSweepDeps) {
    this.keys = redisKeys(deps.config.keyPrefix);
    this.settleEnded = createLineSettler(deps.redis, deps.config.keyPrefix);
    this.receiveWindowMs = deps.receiveWindowMs ?? exchangeReceiveWindowMs(deps.config);
  }

  start(): void {
    this.timer = setInterval(() => void this.tick(), LINE_SWEEP_INTERVAL_MS);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  private async tick(): Promise<void> {
    if (this.sweeping) return;
    this.sweeping = true;
    try {
      const mine = await this.deps.redis.set(
        this.keys.symbolLinesSweep,
        this.token,
        'PX',
        LINE_SWEEP_INTERVAL_MS - 50,
        'NX',
      );
      if (mine) await this.sweep();
      if (this.failing) this.deps.log('line sweep: working again', 'info');
      this.failing = false;
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      if (!this.failing) this.deps.log(`line sweep: failed (${why.slice(0, 300)}); trying every second`, 'warn');
      this.failing = true;
    } finally {
      this.sweeping = false;
    }
  }

  /** One sweep over every symbol with a holder or a line. Returns how many closed plans it took out. */
  async sweep(): Promise<number> {
    const states = await this.readLines();
    const ids = new Set<string>();
    for (const { holder, line } of states) {
      if (holder && PLAN_ID.test(holder)) ids.add(holder);
      for (const id of line) if (PLAN_ID.test(id)) ids.add(id);
    }
    const ended = await this.endedPlans([...ids].slice(0, SWEEP_ID_LIMIT));
    let taken = 0;
    for (const state of states) taken += await this.settle(state, ended);
    // A closed holder no longer holding (its lease ran out, or it was freed) is forgotten.
    const holders = new Set(states.map((state) => state.holder));
    for (const planId of this.deadlines.keys()) if (!holders.has(planId)) this.deadlines.delete(planId);
    for (const planId of this.told.keys()) if (!holders.has(planId)) this.told.delete(planId);
    return taken;
  }

  private async readLines(): Promise<SymbolState[]> {
    const { redis } = this.deps;
    const symbols = await redis.smembers(this.keys.symbolLines);
    const pipeline = redis.pipeline();
    for (const symbol of symbols) {
      pipeline.get(this.keys.symbolLock(symbol)).zrange(this.keys.symbolLine(symbol), 0, LINE_SCAN_LIMIT - 1);
    }
    const replies = (await pipeline.exec()) ?? [];
    return symbols.map((symbol, i) => {
      const [lockErr, holder] = replies[2 * i] ?? [new Error('no reply'), null];
      const [lineErr, line] = replies[2 * i + 1] ?? [new Error('no reply'), []];
      if (lockErr) throw lockErr;
      if (lineErr) throw lineErr;
      return { symbol, holder: holder as string | null, line: line as string[] };
    });
  }

  /** The plans among `ids` whose workflow Temporal has closed (latest run), with how and where. */
  private async endedPlans(ids: string[]): Promise<Map<string, EndedPlan>> {
    const { client } = this.deps;
    const found = new Set<string>();
    for (let i = 0; i < ids.length; i += VISIBILITY_BATCH) {
      const batch = ids.slice(i, i + VISIBILITY_BATCH);
      const query =
        `WorkflowType = '${PERMIT_CHAIN_WORKFLOW}' AND ` +
        `WorkflowId IN (${batch.map((id) => `'${planWorkflowId(id)}'`).join(', ')}) AND ${CLOSED_STATUSES}`;
      for await (const info of client.workflow.list({ query, pageSize: VISIBILITY_BATCH })) {
        found.add(info.workflowId.replace(/^plan-/, ''));
      }
    }
    const candidates = [...found];
    const ended = new Map<string, EndedPlan>();
    let next = 0;
    const describeNext = async (): Promise<void> => {
      while (next < candidates.length) {
        const id = candidates[next++] as string;
        try {
          const description = await client.workflow.getHandle(planWorkflowId(id)).describe();
          const status = description.status.name;
          if (status === 'RUNNING' || status === 'CONTINUED_AS_NEW') continue;
          ended.set(id, { status, stage: description.typedSearchAttributes.get(chainStageKey) ?? '' });
        } catch (err) {
          if (!(err instanceof WorkflowNotFoundError)) throw err;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(DESCRIBE_CONCURRENCY, candidates.length) }, describeNext));
    return ended;
  }

  /** Takes one symbol's closed plans out of its line and hold, and wakes the plan then first. */
  private async settle({ symbol, holder, line }: SymbolState, ended: Map<string, EndedPlan>): Promise<number> {
    const drop = line.filter((id) => ended.has(id));
    const closedHolder = holder ? ended.get(holder) : undefined;
    let verdict: HolderVerdict | undefined;
    if (holder && closedHolder) {
      verdict = await this.holderVerdict(symbol, holder, closedHolder);
      if (this.told.get(holder) !== verdict.why) {
        this.told.set(holder, verdict.why);
        const how = closedHolder.status.toLowerCase();
        this.deps.log(`line sweep: plan ${holder} (${how}) held ${symbol}: ${verdict.why}`, 'info');
      }
    }
    const empty = !holder && line.length === 0;
    if (drop.length === 0 && !verdict && !empty) {
      if (!holder && line[0]) await this.wakeIfStalled(symbol, line[0]);
      return 0;
    }
    const freed = verdict?.free ? (holder ?? '') : '';
    const kept = verdict && !verdict.free ? { keep: holder ?? '', keepMs: verdict.keepMs } : {};
    const head = await this.settleEnded(symbol, { drop, free: freed, ...kept });
    if (drop.length > 0) {
      this.deps.log(`line sweep: dropped ${drop.length} closed plan(s) from ${symbol}'s line`, 'info');
      for (let i = 0; i < drop.length; i++) this.deps.onEnded?.('waiter');
    }
    if (freed) {
      this.deps.onEnded?.('holder');
      this.deadlines.delete(freed);
      this.told.delete(freed);
    }
    if (head) await this.wake(head);
    return drop.length + (freed ? 1 : 0);
  }

  /**
   * A closed holder lets go unless its order may be on its way: closed from outside in Execute, with no final order
   * on the exchange and its permit's send window not yet over (or with an order still open).
   */
  private async holderVerdict(symbol: string, planId: string, plan: EndedPlan): Promise<HolderVerdict> {
    if (!CLOSED_FROM_OUTSIDE.has(plan.status) || plan.stage !== 'execute') {
      return { free: true, why: `closed in stage ${plan.stage || 'unknown'}, before any order: symbol freed` };
    }
    let order;
    try {
      order = await this.deps.exchange.findOrder(symbol, planId);
    } catch (err) {
      const why = err instanceof Error ? err.message.slice(0, 200) : String(err).slice(0, 200);
      return { free: false, keepMs: OPEN_ORDER_KEEP_MS, why: `closed in Execute, order lookup failed (${why}): kept` };
    }
    if (order && isFinalStatus(order.status)) {
      return { free: true, why: `closed in Execute, its order is ${order.status} on the exchange: symbol freed` };
    }
    if (order) {
      return { free: false, keepMs: OPEN_ORDER_KEEP_MS, why: `closed in Execute, its order is ${order.status}: kept` };
    }
    const until = await this.sendDeadline(planId);
    const left = until - Date.now();
    if (left <= 0) {
      return { free: true, why: 'closed in Execute, no order by its permit end plus the receive window: symbol freed' };
    }
    return {
      free: false,
      keepMs: left,
      why: `closed in Execute, no order yet: kept until ${new Date(until).toISOString()} (permit end + receive window)`,
    };
  }

  /** The permit's end plus the receive window: from the permit in Redis, else the plan's status, else from now. */
  private async sendDeadline(planId: string): Promise<number> {
    const known = this.deadlines.get(planId);
    if (known !== undefined) return known;
    let end: number | undefined;
    const raw = await this.deps.redis.get(this.keys.permit(planId));
    try {
      const permit = raw ? (JSON.parse(raw) as Partial<GovernorPermit>) : undefined;
      if (permit?.plan_id === planId && typeof permit.expires_at === 'number') end = permit.expires_at;
    } catch {
      // Not the Governor's JSON: the plan's own status says when its permit ended.
    }
    if (end === undefined) {
      const status = await this.deps.client.workflow
        .getHandle(planWorkflowId(planId))
        .query(statusQuery)
        .catch(() => undefined);
      end = status?.governor?.expires_at;
    }
    const until = (end ?? Date.now()) + this.receiveWindowMs;
    this.deadlines.set(planId, until);
    return until;
  }

  /** Wakes the first waiter of a free symbol if it has not asked for a while: the wake meant for it was lost. */
  private async wakeIfStalled(symbol: string, head: string): Promise<void> {
    const asked = Number((await this.deps.redis.hget(this.keys.symbolLineAsked(symbol), head)) ?? 0);
    if (Date.now() - asked > STALLED_HEAD_MS) await this.wake(head);
  }

  /** Signals the plan first in line that the symbol is free; a plan that has closed is dropped at the next sweep. */
  private async wake(planId: string): Promise<void> {
    if (!PLAN_ID.test(planId)) return;
    await this.deps.client.workflow
      .getHandle(planWorkflowId(planId))
      .signal(symbolFreeSignal)
      .catch(() => undefined);
  }
}
