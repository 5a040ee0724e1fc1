import { Dec, formatDec, parseAmount } from '../lib/decimal';
import { redisKeys } from '../lib/keys';
import type { ExecuteRefusal, ExecuteResult, ExecutionRecord, GovernorPermit, P33Permit, Plan } from '../lib/types';
import { auditFields } from './audit';
import type { ActivityDeps } from './deps';
import { killSwitchOn } from './kill-switch';
import type { ExchangeOrder } from './exchange/port';
import { defineChainScripts } from './redis-scripts';

/** Ledger compare-and-set conflicts only happen under contention on one symbol; this many tries is far beyond it. */
const MAX_LEDGER_TRIES = 100;

/** A permit as Execute finds it in Redis: its JSON and its remaining life (PTTL: -2 missing, -1 no expiry). */
export interface StoredPermit {
  json: string | null;
  pttlMs: number;
}

export type PermitCheck = { ok: true } | { ok: false; reason: ExecuteRefusal; detail: string };

/** What Execute's gate reads from Redis, in one round trip. */
export interface ExecuteGate {
  killSwitch: boolean;
  governor: StoredPermit;
  p33: StoredPermit;
}

function parsePermit<T>(json: string): T | null {
  try {
    return JSON.parse(json) as T;
  } catch {
    return null;
  }
}

/**
 * Execute's gate, pure: the kill switch off, and both permits present, for this plan, granted, and with more than
 * the margin left. A permit with no expiry (PTTL -1) was not written by this chain and does not count.
 */
export function checkPermits(planId: string, gate: ExecuteGate, marginMs: number): PermitCheck {
  if (gate.killSwitch) return { ok: false, reason: 'kill_switch_active', detail: 'the kill switch is on' };
  const { governor, p33 } = gate;
  const layers = [
    { name: 'governor', stored: governor, granted: (p: GovernorPermit) => p.granted },
    { name: 'p33', stored: p33, granted: (p: P33Permit) => p.allow },
  ] as const;
  for (const { name, stored, granted } of layers) {
    const permit = stored.json === null ? null : parsePermit<GovernorPermit & P33Permit>(stored.json);
    if (permit === null || permit.plan_id !== planId || stored.pttlMs < 0) {
      return { ok: false, reason: 'permit_missing', detail: `${name} permit missing` };
    }
    if (!granted(permit))
      return { ok: false, reason: 'permit_denied', detail: `${name} permit denied: ${permit.reason}` };
    if (stored.pttlMs <= marginMs) {
      return {
        ok: false,
        reason: 'permit_expiring',
        detail: `${name} permit has ${stored.pttlMs} ms left, margin is ${marginMs} ms`,
      };
    }
  }
  return { ok: true };
}

/** The ledger amount after a fill: BUY adds, SELL subtracts, a rejected order moves nothing. */
export function ledgerAfterFill(ledger: Dec, order: Pick<ExchangeOrder, 'side' | 'status' | 'filled_qty'>): Dec {
  if (order.status !== 'FILLED') return ledger;
  const filled = new Dec(order.filled_qty);
  return order.side === 'BUY' ? ledger.add(filled) : ledger.sub(filled);
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
  };
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
  };
}

export function createExecuteActivities({ redis, config, exchange, clock }: ActivityDeps) {
  const keys = redisKeys(config.keyPrefix);
  defineChainScripts(redis);
  const marginMs = config.permitMarginS * 1000;

  async function readGate(planId: string): Promise<ExecuteGate> {
    const replies = await redis
      .pipeline()
      .get(keys.killSwitch)
      .get(keys.permit(planId))
      .pttl(keys.permit(planId))
      .get(keys.p33Permit(planId))
      .pttl(keys.p33Permit(planId))
      .exec();
    const value = (i: number) => {
      const [error, result] = replies?.[i] ?? [new Error('no reply'), null];
      if (error) throw error;
      return result;
    };
    return {
      killSwitch: killSwitchOn(value(0) as string | null),
      governor: { json: value(1) as string | null, pttlMs: Number(value(2)) },
      p33: { json: value(3) as string | null, pttlMs: Number(value(4)) },
    };
  }

  /**
   * Moves the ledger by the order's fill and writes `quantum:execution:{plan_id}` in one atomic step, once: the
   * execution record is the guard, so a retry after a crash finds it and moves nothing.
   */
  async function recordFill(plan: Plan, order: ExchangeOrder): Promise<{ execution: ExecutionRecord; ledger: string }> {
    for (let tries = 0; tries < MAX_LEDGER_TRIES; tries++) {
      const rawLedger = await redis.hget(keys.position(plan.symbol), 'ledger_amount');
      const ledger = ledgerAfterFill(parseAmount(rawLedger, `ledger_amount of ${plan.symbol}`), order);
      const now = clock();
      const execution = executionRecord(order, now);
      const fields = Object.entries(execution).flatMap(([k, v]) => [k, String(v)]);
      const audit = auditFields({
        plan_id: plan.plan_id,
        layer: 'execute',
        decision: order.status === 'FILLED' ? 'executed' : 'order_rejected',
        reason: order.reject_reason ?? `filled ${order.filled_qty} @ ${order.avg_price}`,
        at: now,
      });
      const written = await redis.casAmountOnce(
        keys.execution(plan.plan_id),
        keys.position(plan.symbol),
        keys.auditStream,
        'ledger_amount',
        rawLedger ?? '',
        formatDec(ledger),
        String(now),
        String(fields.length),
        ...fields,
        ...audit,
      );
      if (written === 1) return { execution, ledger: formatDec(ledger) };
      if (written === 0) {
        const existing = await existingExecution(plan);
        if (!existing) throw new Error(`execute: execution record of ${plan.plan_id} vanished`);
        return existing;
      }
    }
    throw new Error(`execute: ledger of ${plan.symbol} kept changing; fill of ${plan.plan_id} not yet recorded`);
  }

  /** The plan's recorded execution and the ledger now, or undefined when nothing is recorded yet. */
  async function existingExecution(plan: Plan): Promise<{ execution: ExecutionRecord; ledger: string } | undefined> {
    const [hash, rawLedger] = await Promise.all([
      redis.hgetall(keys.execution(plan.plan_id)),
      redis.hget(keys.position(plan.symbol), 'ledger_amount'),
    ]);
    const execution = readExecution(hash);
    if (!execution) return undefined;
    return { execution, ledger: formatDec(parseAmount(rawLedger, `ledger_amount of ${plan.symbol}`)) };
  }

  return {
    /**
     * Execute: places the plan's order (client order id = plan id) only while both permits hold and the kill switch
     * is off, then moves the ledger by the fill exactly once. Idempotent: a second call places nothing and returns
     * the first fill.
     */
    async executePlan(plan: Plan): Promise<ExecuteResult> {
      const recorded = await existingExecution(plan);
      if (recorded) return { placed: true, execution: recorded.execution, ledger_amount: recorded.ledger };
      // An order already on the exchange (a crash after placing it) is recorded whatever its permits say now.
      let order = await exchange.findOrder(plan.plan_id);
      if (!order) {
        const check = checkPermits(plan.plan_id, await readGate(plan.plan_id), marginMs);
        if (!check.ok) {
          await redis.xadd(
            keys.auditStream,
            '*',
            ...auditFields({
              plan_id: plan.plan_id,
              layer: 'execute',
              decision: 'refused',
              reason: check.reason,
              at: clock(),
            }),
          );
          return { placed: false, reason: check.reason, detail: check.detail };
        }
        order = await exchange.placeMarketOrder({
          symbol: plan.symbol,
          side: plan.side,
          qty: plan.qty,
          reduceOnly: plan.reduce_only,
          clientOrderId: plan.plan_id,
        });
      }
      const { execution, ledger } = await recordFill(plan, order);
      return { placed: true, execution, ledger_amount: ledger };
    },
  };
}
