import type { Redis } from 'ioredis';
import { AmountError, formatDec, type Dec } from '../../lib/decimal';
import type { RedisKeys } from '../../contract/keys';
import type { ExecutionRecord, Plan } from '../../contract/types';
import { auditFields } from '../audit';
import type { ExchangeOrder } from '../exchange/port';
import { fillsEntry, type FillsEntry } from './fills';
import {
  decimalOrNull,
  executedAny,
  ledgerAfterFill,
  orderAudit,
  settleUnappliedFill,
  showAmount,
  type LedgerApplied,
  type ReconcileState,
  LedgerConflict,
  ReconcileStale,
} from './rules';

export * from './rules';
import { RECONCILE_LEDGER, RECORD_FILL, SETTLE_FILL } from './scripts';

/** Conflicts only arise under contention on one symbol or a person editing the ledger meanwhile: far beyond this. */
const MAX_LEDGER_TRIES = 100;

/** A plan's recorded fill and the ledger now, as stored. */
export interface RecordedFill {
  execution: ExecutionRecord;
  applied: string;
  /** `ledger_amount` as Execute read it before the order ('' = absent). */
  ledgerBefore: string;
  /** `ledger_amount` now, raw. */
  ledger: string | null;
}

function readExecution(hash: Record<string, string>): ExecutionRecord | null {
  if (!hash.order_id) return null;
  return {
    order_id: hash.order_id,
    client_order_id: hash.client_order_id ?? '',
    status: hash.status ?? '',
    side: hash.side === 'BUY' ? 'BUY' : 'SELL',
    filled_qty: hash.filled_qty ?? '0',
    avg_price: hash.avg_price ?? '0',
    executed_at: Number(hash.executed_at ?? 0),
    ...(hash.requested_qty ? { requested_qty: hash.requested_qty } : {}),
    ...(hash.reject_reason ? { reject_reason: hash.reject_reason } : {}),
  };
}

function executionRecord(order: ExchangeOrder, executedAt: number): ExecutionRecord {
  return {
    order_id: order.order_id,
    client_order_id: order.client_order_id,
    status: order.status,
    side: order.side,
    filled_qty: order.filled_qty,
    avg_price: order.avg_price,
    executed_at: executedAt,
    requested_qty: order.qty,
    ...(order.reject_reason ? { reject_reason: order.reject_reason } : {}),
  };
}

/**
 * What an operator does about a fill that is on the exchange but not in the ledger: part of the plan's error. Setting
 * the ledger back to its value before the fill is not offered: the rerun's P3.3 would then see this very fill as a
 * mismatch and block the plan.
 */
function unappliedAdvice(plan: Plan, fill: RecordedFill): string {
  const what = `the fill of plan ${plan.plan_id} (${fill.execution.side} ${fill.execution.filled_qty} ${plan.symbol})`;
  const reconcile =
    `run \`permit-chain reconcile ${plan.symbol} --by NAME\` (the ledger becomes the exchange's amount, which ` +
    `includes the fill)`;
  const retry = `then \`permit-chain retry ${plan.plan_id}\``;
  const before = decimalOrNull(fill.ledgerBefore);
  if (before === null) {
    return (
      `${what} is on the exchange but not in the ledger, and the ledger's value before it is unknown ` +
      `(${showAmount(fill.ledgerBefore)}): ${reconcile}, ${retry}`
    );
  }
  const after = formatDec(ledgerAfterFill(before, fill.execution));
  return (
    `${what} is on the exchange but not in the ledger, which was ${formatDec(before)} before it: ${reconcile} ` +
    `or set ledger_amount to ${after} (${formatDec(before)} moved by the fill), ${retry}`
  );
}

/**
 * The ledger (`quantum:position:{symbol}` field `ledger_amount`) as the chain writes it: each fill moves it exactly
 * once, whatever crashes, corrupt values, hand-set values, reconciles and retries come in between.
 */
export function createLedger(redis: Redis, keys: RedisKeys, clock: () => number) {
  redis.defineCommand('recordFill', { numberOfKeys: 6, lua: RECORD_FILL });
  redis.defineCommand('settleFill', { numberOfKeys: 5, lua: SETTLE_FILL });
  // Its keys include one execution record per unapplied fill: their number is the call's first argument.
  redis.defineCommand('reconcileLedger', { lua: RECONCILE_LEDGER });

  function fillKeys(plan: Plan): [string, string, string, string, string] {
    return [
      keys.execution(plan.plan_id),
      keys.position(plan.symbol),
      keys.auditStream,
      keys.unappliedFills(plan.symbol),
      keys.fills(plan.symbol),
    ];
  }

  function executeAudit(plan: Plan, decision: string, reason: string, at: number): string[] {
    return auditFields({ plan_id: plan.plan_id, layer: 'execute', decision, reason, at });
  }

  /** The plan's recorded fill and the ledger now (one round trip), or undefined when nothing is recorded yet. */
  async function readFill(plan: Plan): Promise<RecordedFill | undefined> {
    const [[hashError, hash], [ledgerError, ledger]] = ((await redis
      .pipeline()
      .hgetall(keys.execution(plan.plan_id))
      .hget(keys.position(plan.symbol), 'ledger_amount')
      .exec()) ?? []) as [[Error | null, Record<string, string>], [Error | null, string | null]];
    if (hashError) throw hashError;
    if (ledgerError) throw ledgerError;
    const execution = readExecution(hash);
    if (!execution) return undefined;
    return { execution, applied: hash.ledger_applied ?? '1', ledgerBefore: hash.ledger_before ?? '', ledger };
  }

  async function mustReadFill(plan: Plan): Promise<RecordedFill> {
    const recorded = await readFill(plan);
    if (!recorded) throw new Error(`ledger: execution record of ${plan.plan_id} vanished`);
    return recorded;
  }

  /** The symbol's ledger as stored (null when absent) and as an operator reads it, and its unapplied fills, sorted. */
  async function readReconcile(symbol: string): Promise<ReconcileState> {
    const [[ledgerError, raw], [setError, members]] = ((await redis
      .pipeline()
      .hget(keys.position(symbol), 'ledger_amount')
      .smembers(keys.unappliedFills(symbol))
      .exec()) ?? []) as [[Error | null, string | null], [Error | null, string[]]];
    if (ledgerError) throw ledgerError;
    if (setError) throw setError;
    return { raw, before: showAmount(raw), fills: [...members].sort() };
  }

  return {
    readFill,

    /**
     * Records the order's fill, moving the ledger by it when the ledger still holds `ledgerBefore`, the value read
     * before the order; otherwise records it unapplied (in the symbol's set of unapplied fills) for `settleFill`.
     */
    async recordFill(plan: Plan, order: ExchangeOrder, ledgerBefore: string | null): Promise<RecordedFill> {
      let before = ledgerBefore;
      for (let tries = 0; tries < MAX_LEDGER_TRIES; tries++) {
        const base = decimalOrNull(before);
        const mode = !executedAny(order) ? 'none' : base === null ? 'unapplied' : 'move';
        const after = base === null ? '' : formatDec(ledgerAfterFill(base, order));
        const now = clock();
        const execution = executionRecord(order, now);
        const fields = Object.entries(execution).flatMap(([k, v]) => [k, String(v)]);
        const filled = `filled ${order.filled_qty} @ ${order.avg_price}`;
        const ended = orderAudit(order);
        const applied = executeAudit(plan, ended.decision, ended.reason, now);
        const unapplied = executeAudit(
          plan,
          'fill_unapplied',
          base === null
            ? `${filled}, not in the ledger: ledger_amount was ${showAmount(before)}`
            : `${filled}, not in the ledger: ledger_amount was ${formatDec(base)} before the order and changed ` +
                `before the fill was recorded`,
          now,
        );
        const rebuilt = executeAudit(
          plan,
          'execution_rebuilt',
          `order ${order.order_id} is in the fills record of ${plan.symbol}: the execution record is rebuilt from ` +
            'it, the ledger not moved again',
          now,
        );
        const written = await redis.recordFill(
          ...fillKeys(plan),
          keys.executeClaims(plan.symbol),
          mode,
          before ?? '',
          after,
          String(now),
          plan.plan_id,
          order.order_id,
          JSON.stringify(fillsEntry(plan, execution, now)),
          String(fields.length),
          ...fields,
          String(applied.length),
          ...applied,
          String(unapplied.length),
          ...unapplied,
          ...rebuilt,
        );
        if (written === -3) {
          throw new LedgerConflict(
            `order ${order.order_id} of ${plan.symbol} is another plan's in the fills record ` +
              `(${keys.fills(plan.symbol)}): not recording it for plan ${plan.plan_id}; check the order on the ` +
              `exchange, then \`permit-chain reconcile ${plan.symbol} --by NAME\``,
          );
        }
        if (written === 1) {
          return { execution, applied: '1', ledgerBefore: before ?? '', ledger: mode === 'move' ? after : before };
        }
        if (written === -1) {
          before = await redis.hget(keys.position(plan.symbol), 'ledger_amount');
          continue;
        }
        return mustReadFill(plan);
      }
      throw new Error(`execute: ledger of ${plan.symbol} kept changing; fill of ${plan.plan_id} not yet recorded`);
    },

    /**
     * Brings a recorded fill into the ledger by `settleUnappliedFill`, or says what a person must do: a corrupt
     * ledger throws AmountError, one that cannot be read either way throws LedgerConflict. An applied fill is
     * returned as it is.
     */
    async settleFill(plan: Plan, recorded: RecordedFill): Promise<RecordedFill> {
      let fill = recorded;
      for (let tries = 0; tries < MAX_LEDGER_TRIES; tries++) {
        if (fill.applied !== '0') return fill;
        const settlement = settleUnappliedFill(fill.ledgerBefore, fill.execution, fill.ledger);
        if (settlement.kind === 'corrupt') {
          throw new AmountError(
            `ledger_amount of ${plan.symbol} is not a decimal number: ${showAmount(fill.ledger)}; ` +
              unappliedAdvice(plan, fill),
          );
        }
        if (settlement.kind === 'conflict') {
          const before = decimalOrNull(fill.ledgerBefore);
          const expected =
            before === null
              ? ''
              : `, neither ${formatDec(before)} (before the fill) nor ` +
                `${formatDec(ledgerAfterFill(before, fill.execution))} (after it)`;
          throw new LedgerConflict(
            `ledger_amount of ${plan.symbol} is ${showAmount(fill.ledger)}${expected}: not guessing which fills ` +
              `it counts; ${unappliedAdvice(plan, fill)}`,
          );
        }
        const now = clock();
        const filled = `filled ${fill.execution.filled_qty} @ ${fill.execution.avg_price}`;
        const moves = settlement.kind === 'apply';
        const applied: LedgerApplied = moves ? '1' : 'hand_set';
        const audit = moves
          ? executeAudit(
              plan,
              'fill_applied',
              `${filled}, ledger ${showAmount(fill.ledger)} -> ${settlement.ledger}`,
              now,
            )
          : executeAudit(
              plan,
              'fill_already_in_ledger',
              `${filled}, already counted in ledger ${showAmount(fill.ledger)}`,
              now,
            );
        const settled = await redis.settleFill(
          ...fillKeys(plan),
          plan.plan_id,
          fill.ledger ?? '',
          moves ? settlement.ledger : '',
          applied,
          String(now),
          ...audit,
        );
        if (settled === 1) {
          return { ...fill, applied, ledger: moves ? settlement.ledger : fill.ledger };
        }
        fill = await mustReadFill(plan);
      }
      throw new Error(`execute: ledger of ${plan.symbol} kept changing; fill of ${plan.plan_id} not yet settled`);
    },

    readReconcile,

    /**
     * Sets the symbol's ledger to the exchange's amount and accounts for its unapplied fills, audited, in one step;
     * returns the ledger before (as an operator reads it), after, and the plans whose fills it accounted for. The
     * caller holds the symbol, like a plan does. With `expected` (what a person was shown and said yes to), a ledger
     * or a set of unapplied fills that differs from it changes nothing and throws ReconcileStale.
     */
    async reconcile(
      symbol: string,
      exchangeAmount: Dec,
      by: string,
      expected?: ReconcileState,
      found: readonly FillsEntry[] = [],
    ): Promise<{ before: string; after: string; fills: string[] }> {
      const after = formatDec(exchangeAmount);
      for (let tries = 0; tries < MAX_LEDGER_TRIES; tries++) {
        const { raw, before, fills } = await readReconcile(symbol);
        if (expected && (raw !== expected.raw || fills.join() !== expected.fills.join())) {
          throw new ReconcileStale(
            `reconcile: ${symbol} changed since it was shown (ledger ${before}, ${fills.length} unapplied fill(s)); ` +
              'nothing changed, look again',
          );
        }
        const now = clock();
        const counted =
          (fills.length > 0 ? `; accounts for ${fills.length} unapplied fill(s): ${fills.join(', ')}` : '') +
          (found.length > 0
            ? `; accounts for ${found.length} order(s) with no execution record: ` +
              found.map((entry) => `${entry.order_id} of plan ${entry.plan_id}`).join(', ')
            : '');
        const reconcile = auditFields({
          plan_id: '-',
          layer: 'operator',
          decision: 'reconcile',
          reason: `${symbol} ledger ${before} -> ${after} by ${by}${counted}`,
          at: now,
        });
        // Each accounted fill gets its own entry; Lua puts the plan id in front of the fields after `plan_id`.
        const perFill = auditFields({
          plan_id: '',
          layer: 'operator',
          decision: 'fill_reconciled',
          reason: `by ${by}: ledger set to the exchange's ${after}, which includes this fill`,
          at: now,
        }).slice(2);
        const execKeys = fills.map((planId) => keys.execution(planId));
        const orders = found.flatMap((entry) => [
          entry.plan_id,
          entry.order_id,
          JSON.stringify({ ...entry, applied: 'reconcile' }),
        ]);
        const written = await redis.reconcileLedger(
          String(5 + execKeys.length),
          keys.position(symbol),
          keys.auditStream,
          keys.unappliedFills(symbol),
          keys.fills(symbol),
          keys.executeClaims(symbol),
          ...execKeys,
          raw ?? '',
          after,
          String(now),
          String(fills.length),
          ...fills,
          String(found.length),
          ...orders,
          String(reconcile.length),
          ...reconcile,
          ...perFill,
        );
        if (written >= 0) return { before, after, fills };
      }
      throw new Error(`reconcile: ledger of ${symbol} kept changing; nothing changed, try again`);
    },
  };
}
