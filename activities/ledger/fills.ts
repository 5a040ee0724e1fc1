import type { Redis, Result } from 'ioredis';
import type { RedisKeys } from '../../contract/keys';
import type { ExecutionRecord, Plan } from '../../contract/types';
import { auditFields } from '../audit';

/**
 * The fills record: one hash per symbol, `quantum:ledger:fills:{symbol}`, field = the exchange's order id, value =
 * JSON of one order's fill and how it stands with the ledger. It never expires: the ledger's once-only rule rests on
 * it (activities/ledger.ts RECORD_FILL), for as long as Temporal can replay or reset a plan. `trimFills` is the one
 * way an entry leaves it.
 *
 * `applied`: `1` the ledger moved by it (or it filled nothing), `0` not yet (the symbol's set of unapplied fills names
 * its plan), `hand_set` a person's value already counts it, `reconcile` a reconcile set the ledger to the exchange's
 * amount, which includes it, `refused` Execute did not believe the exchange's answer about it (never applied; the
 * raw answer, bounded, is in `answer`, and what was wrong in `problems`).
 */
export type FillsApplied = '1' | '0' | 'hand_set' | 'reconcile' | 'refused';

export interface FillsEntry {
  plan_id: string;
  client_order_id: string;
  order_id: string;
  side: string;
  /** The quantity the plan asked for (what was sent). */
  requested_qty: string;
  /** Present only on an entry whose answer was believed. */
  filled_qty?: string;
  avg_price?: string;
  status?: string;
  executed_at?: string;
  reject_reason?: string;
  applied?: FillsApplied;
  ledger_before?: string;
  ledger_after?: string;
  recorded_at: string;
  answer?: string;
  problems?: string;
}

/** A send Execute claimed, in the symbol's claims (`quantum:execute:claims:{symbol}`) until its fill is recorded. */
export interface SendClaim {
  plan_id: string;
  side: string;
  qty: string;
  client_order_id: string;
  claimed_at: number;
}

/** A believed fill's entry (the Lua script adds `applied`, `ledger_before` and `ledger_after`). Values are strings. */
export function fillsEntry(plan: Plan, execution: ExecutionRecord, now: number): FillsEntry {
  return {
    plan_id: plan.plan_id,
    client_order_id: execution.client_order_id,
    order_id: execution.order_id,
    side: execution.side,
    requested_qty: execution.requested_qty ?? plan.qty,
    filled_qty: execution.filled_qty,
    avg_price: execution.avg_price,
    status: execution.status,
    executed_at: String(execution.executed_at),
    ...(execution.reject_reason ? { reject_reason: execution.reject_reason } : {}),
    recorded_at: String(now),
  };
}

/** Entries in these states are done with: the ledger counts them, and nothing will move it by them again. */
export const TRIMMABLE_STATES: readonly FillsApplied[] = ['1', 'hand_set', 'reconcile'];

/**
 * Records an answer Execute refused, under the order id it names: never over an entry that is not itself `refused`
 * (an answer cannot overwrite a fill that was believed).
 *
 * KEYS: the fills record, the audit stream. ARGV: order id, entry JSON, audit fields...
 * Returns 1 when recorded, 0 when the order id holds a believed fill.
 */
const REFUSE_ANSWER = `
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if raw and cjson.decode(raw).applied ~= 'refused' then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3, #ARGV))
return 1
`;

/**
 * Removes the entries recorded before a cutoff whose state is done with (TRIMMABLE_STATES), and writes the checkpoint.
 *
 * KEYS: the fills record, its checkpoint. ARGV: cutoff (ms), now (ms), trimmable states...
 * Returns how many entries it removed.
 */
const TRIM_FILLS = `
local cutoff = tonumber(ARGV[1])
local done = {}
for i = 3, #ARGV do done[ARGV[i]] = true end
local all = redis.call('HGETALL', KEYS[1])
local removed = 0
for i = 1, #all, 2 do
  local e = cjson.decode(all[i + 1])
  local at = tonumber(e.recorded_at)
  if at and at < cutoff and done[e.applied] then
    redis.call('HDEL', KEYS[1], all[i])
    removed = removed + 1
  end
end
redis.call('HSET', KEYS[2], 'trimmed_before', ARGV[1], 'at', ARGV[2])
redis.call('HINCRBY', KEYS[2], 'trimmed', removed)
return removed
`;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    refuseAnswer(fills: string, audit: string, ...args: string[]): Result<number, Context>;
    trimFills(fills: string, checkpoint: string, ...args: string[]): Result<number, Context>;
  }
}

/** The field an answer is recorded under: its order id when it has a plausible one, else `client:` and the plan's. */
export function refusedOrderKey(orderId: string, clientOrderId: string): string {
  return /^[A-Za-z0-9_.:-]{1,64}$/.test(orderId) ? orderId : `client:${clientOrderId}`;
}

export function createFillsRecord(redis: Redis, keys: RedisKeys, clock: () => number) {
  redis.defineCommand('refuseAnswer', { numberOfKeys: 2, lua: REFUSE_ANSWER });
  redis.defineCommand('trimFills', { numberOfKeys: 2, lua: TRIM_FILLS });

  return {
    /** Every entry of the symbol's fills record, by order id. */
    async read(symbol: string): Promise<Map<string, FillsEntry>> {
      const hash = await redis.hgetall(keys.fills(symbol));
      return new Map(Object.entries(hash).map(([orderId, json]) => [orderId, JSON.parse(json) as FillsEntry]));
    },

    /**
     * Records an exchange answer Execute did not believe (`refused`, never applied), with the bounded raw answer and
     * what was wrong with it, audited `exchange_answer_refused`. Returns the field it used.
     */
    async refuse(
      plan: Plan,
      answer: { orderId: string; clientOrderId: string; raw: string; problems: string[] },
    ): Promise<string> {
      const field = refusedOrderKey(answer.orderId, answer.clientOrderId);
      const now = clock();
      const entry: FillsEntry = {
        plan_id: plan.plan_id,
        client_order_id: answer.clientOrderId,
        order_id: answer.orderId,
        side: plan.side,
        requested_qty: plan.qty,
        applied: 'refused',
        recorded_at: String(now),
        answer: answer.raw,
        problems: answer.problems.join('; '),
      };
      await redis.refuseAnswer(
        keys.fills(plan.symbol),
        keys.auditStream,
        field,
        JSON.stringify(entry),
        ...auditFields({
          plan_id: plan.plan_id,
          layer: 'execute',
          decision: 'exchange_answer_refused',
          reason: `order ${field}: ${answer.problems.join('; ')}; answer ${answer.raw}`,
          at: now,
        }),
      );
      return field;
    },

    /**
     * Trims the symbol's fills record. The rule: an entry may go once it is done with (applied, hand-set or
     * reconciled) and older than `keepMs`, which must be at least the Temporal namespace's retention plus
     * PLAN_MAX_AGE_S: no plan can then be running, replayed or reset that could meet its order again. Unapplied and
     * refused entries stay until a reconcile accounts for them. Writes the checkpoint
     * `quantum:ledger:checkpoint:{symbol}` (`trimmed_before`, `trimmed` in all, `at`): entries older than
     * `trimmed_before` may be missing. Returns how many entries it removed.
     */
    async trim(symbol: string, keepMs: number): Promise<number> {
      if (!Number.isFinite(keepMs) || keepMs <= 0) {
        throw new Error(`trimFills: keepMs must be a positive number of ms, got ${keepMs}`);
      }
      const now = clock();
      return redis.trimFills(
        keys.fills(symbol),
        keys.fillsCheckpoint(symbol),
        String(now - keepMs),
        String(now),
        ...TRIMMABLE_STATES,
      );
    },
  };
}
