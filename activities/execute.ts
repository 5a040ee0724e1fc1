import { CancelledFailure, Context } from '@temporalio/activity';
import type { Result } from 'ioredis';
import { boundText } from '../lib/bound';
import { AmountError, formatDec, parseAmount } from '../lib/decimal';
import { redisKeys } from '../contract/keys';
import type { ExecuteRefusal, ExecuteResult, GovernorPermit, P33Permit, Plan, PostTradeCheck } from '../contract/types';
import { auditFields } from './audit';
import type { ActivityDeps } from './deps';
import { createFillsRecord, type SendClaim } from './ledger/fills';
import { killSwitchOn } from './kill-switch';
import { createLedger, executedAny, showAmount, type RecordedFill } from './ledger';
import { checkOrderAnswer, ExchangeAnswerRefused, type SentOrder } from './exchange/answer';
import { ExchangeUnknownError, OrderNotSentError, isFinalStatus, type ExchangeOrder } from './exchange/port';
import { SEND_GUARD_LUA } from './exchange/send-guard';
import { readPositions } from './positions';
import { createSymbolLockActivities } from './symbol-lock';

/** How soon Execute looks again at an order that is still open (NEW, PARTIALLY_FILLED). */
const OPEN_ORDER_LOOK_AGAIN_MS = 1000;

/** How much of an exchange's answer a refusal shows (status, audit, fills record). */
const ANSWER_SHOWN_BYTES = 1024;
/** The send claim outlives any retry of a plan's Execute (a plan lives PLAN_MAX_AGE_S, an hour by default). */
const SEND_CLAIM_TTL_S = 86_400;

/**
 * The send claim: the kill switch and both permits checked (SEND_GUARD_LUA) and the claim written in one step, right
 * before the order goes out. A switch set or a permit gone after Execute's first look stops the order here.
 *
 * KEYS: kill switch, Governor permit, P3.3 permit, the plan's claim, the symbol's claims. ARGV: plan id, margin ms,
 * now, symbol, ttl s, the claims entry (JSON).
 * Returns 'ok', or the refusal (an ExecuteRefusal).
 */
const CLAIM_SEND = `${SEND_GUARD_LUA}
local refusal = sendRefusal(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2])
if refusal then return refusal end
redis.call('HSET', KEYS[4], 'claimed_at', ARGV[3], 'symbol', ARGV[4])
redis.call('EXPIRE', KEYS[4], ARGV[5])
redis.call('HSET', KEYS[5], ARGV[1], ARGV[6])
return 'ok'
`;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    executeClaimSend(killSwitch: string, ...args: string[]): Result<string, Context>;
  }
}

const CLAIM_REFUSALS: Record<ExecuteRefusal, string> = {
  kill_switch_active: 'the kill switch is on (found at the send claim)',
  permit_missing: 'a permit is missing (found at the send claim)',
  permit_denied: 'a permit is denied (found at the send claim)',
  permit_expiring: 'a permit has no more than the margin left (found at the send claim)',
};

/** Whether this activity's cancellation was requested (it is told through its heartbeats); false outside one. */
function activityCancelled(): boolean {
  try {
    return Context.current().cancellationSignal.aborted;
  } catch {
    return false;
  }
}

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
  const fills = createFillsRecord(redis, keys, clock);
  const symbolLine = createSymbolLockActivities(deps);
  const marginMs = config.permitMarginS * 1000;
  redis.defineCommand('executeClaimSend', { numberOfKeys: 5, lua: CLAIM_SEND });

  /** Claims the send (CLAIM_SEND): null when claimed, else why not. */
  async function claimSend(plan: Plan): Promise<ExecuteRefusal | null> {
    const now = clock();
    const claim: SendClaim = {
      plan_id: plan.plan_id,
      side: plan.side,
      qty: plan.qty,
      client_order_id: exchange.clientOrderIdOf?.(plan.plan_id) ?? plan.plan_id,
      claimed_at: now,
    };
    const answer = await redis.executeClaimSend(
      keys.killSwitch,
      keys.permit(plan.plan_id),
      keys.p33Permit(plan.plan_id),
      keys.executeClaim(plan.plan_id),
      keys.executeClaims(plan.symbol),
      plan.plan_id,
      String(marginMs),
      String(now),
      plan.symbol,
      String(SEND_CLAIM_TTL_S),
      JSON.stringify(claim),
    );
    return answer === 'ok' ? null : (answer as ExecuteRefusal);
  }

  async function refusedAudit(plan: Plan, reason: ExecuteRefusal): Promise<void> {
    await redis.xadd(
      keys.auditStream,
      '*',
      ...auditFields({ plan_id: plan.plan_id, layer: 'execute', decision: 'refused', reason, at: clock() }),
    );
  }

  /**
   * The order as the exchange answered, believed only when it passes `checkOrderAnswer` against what was sent. An
   * answer that fails is recorded `refused` in the fills record (never applied) and the order is looked up once
   * more: a lookup that passes is the order; one that fails too ends the plan (ExchangeAnswerRefused).
   */
  async function believed(plan: Plan, answer: ExchangeOrder): Promise<ExchangeOrder> {
    const sent: SentOrder = {
      symbol: plan.symbol,
      side: plan.side,
      qty: plan.qty,
      clientOrderId: exchange.clientOrderIdOf?.(plan.plan_id) ?? plan.plan_id,
    };
    const first = checkOrderAnswer(sent, answer);
    if (first.ok) return answer;
    const raw = (order: ExchangeOrder) => boundText(order.raw ?? JSON.stringify(order), ANSWER_SHOWN_BYTES);
    const field = await fills.refuse(plan, {
      orderId: answer.order_id,
      clientOrderId: sent.clientOrderId,
      raw: raw(answer),
      problems: first.problems,
    });
    const again = await exchange.findOrder(plan.symbol, plan.plan_id);
    const second = again ? checkOrderAnswer(sent, again) : null;
    if (again && second?.ok) return again;
    let looked = `the exchange has no order under client order id ${sent.clientOrderId}`;
    if (again && second && !second.ok) {
      await fills.refuse(plan, {
        orderId: again.order_id,
        clientOrderId: sent.clientOrderId,
        raw: raw(again),
        problems: second.problems,
      });
      looked = `${second.problems.join('; ')}; answer ${raw(again)}`;
    }
    throw new ExchangeAnswerRefused(
      `the exchange's answer about the order of plan ${plan.plan_id} was refused: ${first.problems.join('; ')}; ` +
        `answer ${raw(answer)}; looked up again: ${looked}. The ledger did not move; the order is recorded ` +
        `refused under ${field} in ${keys.fills(plan.symbol)}. Next: check the order on the exchange and ` +
        `\`permit-chain position ${plan.symbol}\`, then \`permit-chain reconcile ${plan.symbol} --by NAME\``,
    );
  }

  /**
   * The post-trade check: the exchange's position read back after a fill reached the ledger, compared with the
   * ledger (P3.3's rule and tolerance). A difference beyond the tolerance is audited `post_trade_mismatch`; it does
   * not undo the fill, it flags it for a person before the next plan finds it.
   */
  async function postTradeCheck(plan: Plan, fill: RecordedFill): Promise<PostTradeCheck | undefined> {
    if (!executedAny(fill.execution) || fill.applied === '0') return undefined;
    let positions: Awaited<ReturnType<typeof readPositions>>;
    try {
      positions = await readPositions({ redis, exchange, config, keys }, plan.symbol);
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      return { agrees: null, detail: `not checked: ${boundText(why, 256)}` };
    }
    const discrepancy = positions.exchangeAmount.sub(positions.ledgerAmount).abs();
    const check = {
      exchange_amount: formatDec(positions.exchangeAmount),
      ledger_amount: formatDec(positions.ledgerAmount),
      discrepancy: formatDec(discrepancy),
      tolerance: formatDec(positions.tolerance),
    };
    if (discrepancy.lte(positions.tolerance)) {
      return { agrees: true, ...check, detail: `exchange ${check.exchange_amount} agrees with the ledger` };
    }
    const detail =
      `exchange ${check.exchange_amount} vs ledger ${check.ledger_amount} after order ${fill.execution.order_id}: ` +
      `discrepancy ${check.discrepancy} beyond tolerance ${check.tolerance}; check the exchange, then ` +
      `\`permit-chain reconcile ${plan.symbol} --by NAME\``;
    await redis.xadd(
      keys.auditStream,
      '*',
      ...auditFields({
        plan_id: plan.plan_id,
        layer: 'execute',
        decision: 'post_trade_mismatch',
        reason: detail,
        at: clock(),
      }),
    );
    return { agrees: false, ...check, detail };
  }

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
    const postTrade = await postTradeCheck(plan, fill);
    const next = await symbolLine.releaseSymbol(plan);
    const filled = fill.execution.status === 'FILLED' ? 'all' : executedAny(fill.execution) ? 'part' : 'none';
    return {
      placed: true,
      execution: fill.execution,
      filled,
      ledger_amount: showAmount(fill.ledger),
      next_in_line: next,
      ...(postTrade ? { post_trade: postTrade } : {}),
    };
  }

  return {
    /**
     * Execute: places the plan's order (client order id = plan id) only while both permits hold, the kill switch is
     * off and both the ledger and the exchange's position are decimals, then moves the ledger by the fill exactly
     * once. Right before sending, a cancelled activity sends nothing, and the kill switch and the permits are checked
     * again in the step that claims the send. The exchange's answer moves the ledger only when it matches the order
     * sent (or a second look proves it); after the fill the exchange's position is read back (the post-trade check).
     * A fill that finds the ledger changed under it is recorded unapplied and settled by the rule in
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
          await refusedAudit(plan, check.reason);
          return { placed: false, reason: check.reason, detail: check.detail };
        }
        assertAmounts(plan, ledgerRaw, exchangeRead);
        // The last moment before the order goes out: a cancelled activity sends nothing (its plan has stopped).
        if (activityCancelled()) {
          throw new CancelledFailure(`execute: cancelled before the order of plan ${plan.plan_id} was sent; none sent`);
        }
        const refused = await claimSend(plan);
        if (refused) {
          await refusedAudit(plan, refused);
          return { placed: false, reason: refused, detail: CLAIM_REFUSALS[refused] };
        }
        try {
          order = await exchange.placeMarketOrder({
            symbol: plan.symbol,
            side: plan.side,
            qty: plan.qty,
            reduceOnly: plan.reduce_only,
            clientOrderId: plan.plan_id,
            guard: {
              killSwitchKey: keys.killSwitch,
              governorPermitKey: keys.permit(plan.plan_id),
              p33PermitKey: keys.p33Permit(plan.plan_id),
              marginMs,
            },
          });
        } catch (err) {
          if (!(err instanceof OrderNotSentError)) throw err;
          // Nothing went out under this claim: no order for position or reconcile to look for.
          await redis.hdel(keys.executeClaims(plan.symbol), plan.plan_id);
          await refusedAudit(plan, err.reason);
          return { placed: false, reason: err.reason, detail: `${CLAIM_REFUSALS[err.reason]}: ${err.message}` };
        }
      }
      order = await believed(plan, order);
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
