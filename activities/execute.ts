import { AmountError, parseAmount } from '../lib/decimal';
import { redisKeys } from '../contract/keys';
import type { ExecuteRefusal, ExecuteResult, GovernorPermit, P33Permit, Plan } from '../contract/types';
import { auditFields } from './audit';
import type { ActivityDeps } from './deps';
import { killSwitchOn } from './kill-switch';
import { createLedger, executedAny, showAmount, type RecordedFill } from './ledger';
import { ExchangeUnknownError, isFinalStatus, type ExchangeOrder } from './exchange/port';
import { createSymbolLockActivities } from './symbol-lock';

/** How soon Execute looks again at an order that is still open (NEW, PARTIALLY_FILLED). */
const OPEN_ORDER_LOOK_AGAIN_MS = 1000;

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

export function createExecuteActivities(deps: ActivityDeps) {
  const { redis, config, exchange, clock } = deps;
  const keys = redisKeys(config.keyPrefix);
  const ledger = createLedger(redis, keys, clock);
  const symbolLine = createSymbolLockActivities(deps);
  const marginMs = config.permitMarginS * 1000;

  /** The gate and the ledger's raw amount, in one round trip. */
  async function readGate(planId: string, symbol: string): Promise<{ gate: ExecuteGate; ledgerRaw: string | null }> {
    const replies = await redis
      .pipeline()
      .get(keys.killSwitch)
      .get(keys.permit(planId))
      .pttl(keys.permit(planId))
      .get(keys.p33Permit(planId))
      .pttl(keys.p33Permit(planId))
      .hget(keys.position(symbol), 'ledger_amount')
      .exec();
    const value = (i: number) => {
      const [error, result] = replies?.[i] ?? [new Error('no reply'), null];
      if (error) throw error;
      return result;
    };
    return {
      gate: {
        killSwitch: killSwitchOn(value(0) as string | null),
        governor: { json: value(1) as string | null, pttlMs: Number(value(2)) },
        p33: { json: value(3) as string | null, pttlMs: Number(value(4)) },
      },
      ledgerRaw: value(5) as string | null,
    };
  }

  /**
   * Both amounts the order will move must be decimals before it is placed: a fill that the ledger cannot take would
   * be on the exchange with nowhere to go. `exchangeRead` is the exchange's position read alongside the gate.
   */
  function assertAmounts(plan: Plan, ledgerRaw: string | null, exchangeRead: unknown): void {
    const advice =
      `no order was placed. Set it (\`redis-cli HSET ${keys.position(plan.symbol)} ledger_amount AMOUNT\`) or run ` +
      `\`permit-chain reconcile ${plan.symbol} --by NAME\`, then \`permit-chain retry ${plan.plan_id}\``;
    try {
      parseAmount(ledgerRaw, `ledger_amount of ${plan.symbol}`);
    } catch (err) {
      if (err instanceof AmountError) throw new AmountError(`${err.message}; ${advice}`);
      throw err;
    }
    if (exchangeRead instanceof AmountError) {
      throw new AmountError(
        `${exchangeRead.message}; no order was placed: fix it, then \`permit-chain retry ${plan.plan_id}\``,
      );
    }
    if (exchangeRead instanceof Error) throw exchangeRead;
  }

  /** The fill is in the ledger: the plan lets go of its symbol in the same step, and learns whom to wake. */
  async function placed(plan: Plan, fill: RecordedFill): Promise<ExecuteResult> {
    const next = await symbolLine.releaseSymbol(plan);
    const filled = fill.execution.status === 'FILLED' ? 'all' : executedAny(fill.execution) ? 'part' : 'none';
    return {
      placed: true,
      execution: fill.execution,
      filled,
      ledger_amount: showAmount(fill.ledger),
      next_in_line: next,
    };
  }

  return {
    /**
     * Execute: places the plan's order (client order id = plan id) only while both permits hold, the kill switch is
     * off and both the ledger and the exchange's position are decimals, then moves the ledger by the fill exactly
     * once. A fill that finds the ledger changed under it is recorded unapplied and settled by the rule in
     * activities/ledger.ts, or the plan fails with what a person must do. Idempotent: a second call places nothing
     * and returns the first fill.
     */
    async executePlan(plan: Plan): Promise<ExecuteResult> {
      const recorded = await ledger.readFill(plan);
      if (recorded) return placed(plan, await ledger.settleFill(plan, recorded));
      const [{ gate, ledgerRaw }, found, exchangeRead] = await Promise.all([
        readGate(plan.plan_id, plan.symbol),
        exchange.findOrder(plan.symbol, plan.plan_id),
        exchange.getPosition(plan.symbol).catch((err: unknown) => err),
      ]);
      // An order already on the exchange (a crash after placing it) is recorded whatever its permits say now.
      let order: ExchangeOrder | null = found;
      if (!order) {
        const check = checkPermits(plan.plan_id, gate, marginMs);
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
        assertAmounts(plan, ledgerRaw, exchangeRead);
        order = await exchange.placeMarketOrder({
          symbol: plan.symbol,
          side: plan.side,
          qty: plan.qty,
          reduceOnly: plan.reduce_only,
          clientOrderId: plan.plan_id,
        });
      }
      // Only an order whose executed quantity can no longer change reaches the ledger.
      if (!isFinalStatus(order.status)) {
        throw new ExchangeUnknownError(
          `order ${order.client_order_id} of plan ${plan.plan_id} is still ${order.status} ` +
            `(filled ${order.filled_qty} of ${order.qty}); looking again`,
          OPEN_ORDER_LOOK_AGAIN_MS,
        );
      }
      return placed(plan, await ledger.settleFill(plan, await ledger.recordFill(plan, order, ledgerRaw)));
    },
  };
}
