import type { Result } from 'ioredis';
import { claimedDecision, decisionRefusal, keyFingerprint } from '../lib/approval';
import { chainRules, sizeLimitsFor } from '../lib/config';
import type { Dec } from '../lib/decimal';
import type { QuorumSignature } from '../lib/quorum';
import { redisKeys } from '../contract/keys';
import { PlanError, admitInput } from '../lib/plan';
import type {
  Admission,
  Approval,
  ApproveRequest,
  DecisionVerdict,
  GovernorAnswer,
  GovernorPermit,
  GovernorRequest,
  Plan,
  PositionSnapshot,
  RejectRequest,
} from '../contract/types';
import { auditFields, writePermit } from './audit';
import type { ActivityDeps } from './deps';
import { killSwitchOn } from './kill-switch';
import { UnknownSymbolError, type SymbolRules } from './exchange/port';
import { readPositions, snapshotOf } from './positions';
import { decidePermit, needsPrice, type GovernorPolicy, type GovernorState } from './governor-policy';

export * from './governor-policy';

/**
 * The per-symbol rate window, check-and-consume in one step. A plan that already holds a slot in the window (a
 * re-issued permit) keeps it. Its pure twin, {@link takeRateSlot}, re-decides the past (`permit-chain what-if`).
 *
 * KEYS: the symbol's rate set. ARGV: now ms, window ms, limit, plan id.
 * Returns [1, 0] when the plan has a slot, [0, ms when the next slot frees] when not.
 */
export const TAKE_RATE_SLOT = `
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZSCORE', KEYS[1], ARGV[4]) then return {1, 0} end
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], window)
  return {1, 0}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, tonumber(oldest[2]) + window}
`;

/** One symbol's rate window: plan id → the time its slot was taken (ms), as the sorted set holds it. */
export type RateWindow = Map<string, number>;

/**
 * The rate window's step in memory, exactly as {@link TAKE_RATE_SLOT} takes it in Redis (a test runs both on the same
 * requests): slots taken at or before `now - windowMs` leave, a plan that holds a slot keeps it, a free slot is taken,
 * else the answer is when the oldest slot frees. Mutates `window`.
 */
export function takeRateSlot(
  window: RateWindow,
  now: number,
  rule: { count: number; windowMs: number },
  planId: string,
): { ok: true } | { ok: false; freeAt: number } {
  for (const [id, at] of window) if (at <= now - rule.windowMs) window.delete(id);
  if (window.has(planId)) return { ok: true };
  if (window.size < rule.count) {
    window.set(planId, now);
    return { ok: true };
  }
  // ZRANGE 0 0: the lowest score, ties broken by the member's bytes.
  const [oldest] = [...window].sort(([a, x], [b, y]) => x - y || (a < b ? -1 : a > b ? 1 : 0));
  return { ok: false, freeAt: (oldest?.[1] ?? now) + rule.windowMs };
}

declare module 'ioredis' {
  interface RedisCommander<Context> {
    takeRateSlot(
      key: string,
      now: string,
      windowMs: string,
      limit: string,
      planId: string,
    ): Result<[number, number], Context>;
  }
}

/**
 * Why an approval cannot count towards a quorum that `signed` have signed already: the same approver again, or the
 * same key under another name (the key folder refuses that at start; checked here as well).
 */
function quorumRefusal(
  by: string,
  fingerprint: string | undefined,
  signed: readonly { by: string }[],
  fingerprintOf: (name: string) => string | undefined,
): string | undefined {
  if (signed.some((s) => s.by === by)) return `${by} has already signed: each approver counts once`;
  const sameKey = signed.find((s) => fingerprint !== undefined && fingerprintOf(s.by) === fingerprint);
  if (sameKey) return `signed with the key ${sameKey.by} signed with (${fingerprint ?? ''}): each key counts once`;
  return undefined;
}

/** The plan id a workflow id names, for audit lines about an input that may not even be a plan. */
function planIdOf(workflowId: string): string {
  return /^plan-[0-9a-f]{16}$/.test(workflowId) ? workflowId.slice('plan-'.length) : '-';
}

export function createGovernorActivities({ redis, config, exchange, clock, approverKeys }: ActivityDeps) {
  const keys = redisKeys(config.keyPrefix);
  redis.defineCommand('takeRateSlot', { numberOfKeys: 1, lua: TAKE_RATE_SLOT });
  const approvalRules = { mode: config.tradingMode, approvers: config.approvers, keys: approverKeys };
  const fingerprints = new Map([...approverKeys].map(([name, key]) => [name, keyFingerprint(key)]));

  /**
   * The approvals the plan holds that still count: each only while its signature holds (expiry aside: it was answered
   * in time), with the fingerprint of this worker's key for its name (whatever the plan's copy says).
   */
  function verifiedApprovals(planId: string, approvals: readonly Approval[]): (Approval & QuorumSignature)[] {
    return approvals.flatMap((approval) => {
      const decision = claimedDecision(planId, 'approve', approval, approval.snapshot);
      const fingerprint = fingerprints.get(approval.by);
      if (decisionRefusal(decision, approval.signature, approvalRules, undefined) || !fingerprint) return [];
      return [{ ...approval, key_fingerprint: fingerprint }];
    });
  }

  /** The exchange's rules for the symbol: null when it sets none, 'unknown' when it does not list the symbol. */
  async function readRules(symbol: string): Promise<SymbolRules | 'unknown' | null> {
    try {
      return await exchange.getRules(symbol);
    } catch (err) {
      if (err instanceof UnknownSymbolError) return 'unknown';
      throw err;
    }
  }

  /** The price now, or null for a symbol the exchange does not list (the rules say so: a denial, not a failure). */
  async function readPrice(symbol: string): Promise<Dec | null> {
    try {
      return await exchange.getPrice(symbol);
    } catch (err) {
      if (err instanceof UnknownSymbolError) return null;
      throw err;
    }
  }

  /** Reads only what the decision needs: the rules, the price for a notional rule or limit, production's positions. */
  async function readState(
    plan: Plan,
    approvals: (Approval & QuorumSignature)[],
    limits: GovernorPolicy,
  ): Promise<GovernorState> {
    const production = config.tradingMode === 'production';
    // A notional limit needs the price whatever the rules say: read alongside them, not after.
    const [killSwitch, rules, positions, limitPrice] = await Promise.all([
      redis.get(keys.killSwitch),
      readRules(plan.symbol),
      production ? readPositions({ redis, exchange, config, keys }, plan.symbol) : undefined,
      limits.maxNotional !== undefined ? readPrice(plan.symbol) : undefined,
    ]);
    const price =
      limitPrice ??
      (rules !== 'unknown' && needsPrice(plan, limits, rules ?? undefined)
        ? await exchange.getPrice(plan.symbol)
        : null);
    return {
      killSwitch: killSwitchOn(killSwitch),
      ...(rules ? { rules } : {}),
      ...(price ? { price } : {}),
      ...(positions ? { positions: snapshotOf(positions, clock()) } : {}),
      ...(approvals.length > 0 ? { approvals } : {}),
    };
  }

  return {
    /**
     * The Governor's admission: the workflow's input checked where it runs (the plan alone, valid, the workflow's
     * own), and the rules it runs under, which are this worker's configuration and nobody else's. A refused input
     * is audited; nothing else is written.
     */
    async admitPlan({ input, workflowId }: { input: unknown; workflowId: string }): Promise<Admission> {
      const rules = chainRules(config);
      try {
        return { admitted: true, plan: admitInput(input, workflowId), rules };
      } catch (err) {
        if (!(err instanceof PlanError)) throw err;
        await redis.xadd(
          keys.auditStream,
          '*',
          ...auditFields({
            plan_id: planIdOf(workflowId),
            layer: 'governor',
            decision: 'denied',
            reason: `invalid_plan: ${err.message} (workflow ${workflowId})`,
            at: clock(),
          }),
        );
        return { admitted: false, error: err.message, rules };
      }
    },

    /**
     * A person's approval or rejection, checked by the Governor: an approver of this worker, signing with their
     * key over this plan, this decision, the positions shown and an unexpired expiry. Either way it is audited
     * (`approved`/`rejected` with the `key_fingerprint` that verified it, or `approval_refused`/`rejection_refused`
     * with the reason).
     */
    async verifyDecision({
      plan_id,
      kind,
      request,
      snapshot,
      signed = [],
    }: {
      plan_id: string;
      kind: 'approve' | 'reject';
      request: Partial<ApproveRequest & RejectRequest>;
      snapshot: PositionSnapshot;
      /** Who has signed an approval of this plan already (a quorum): each approver and each key counts once. */
      signed?: { by: string }[];
    }): Promise<DecisionVerdict> {
      const decision = claimedDecision(plan_id, kind, request, snapshot);
      const fingerprint = fingerprints.get(decision.by);
      const refusal =
        decisionRefusal(decision, request.signature, approvalRules, clock()) ??
        (kind === 'approve'
          ? quorumRefusal(decision.by, fingerprint, signed, (name) => fingerprints.get(name))
          : undefined);
      const by = decision.by || '(nobody)';
      const said = kind === 'approve' ? (decision.note ?? '') : (decision.reason ?? '');
      await redis.xadd(
        keys.auditStream,
        '*',
        ...auditFields({
          plan_id,
          layer: 'operator',
          decision: refusal
            ? `${kind === 'approve' ? 'approval' : 'rejection'}_refused`
            : kind === 'approve'
              ? 'approved'
              : 'rejected',
          reason: refusal ? `${by}: ${refusal}` : `${by}${said ? `: ${said}` : ''}`,
          at: clock(),
          ...(refusal === undefined ? { key_fingerprint: fingerprint ?? '' } : {}),
        }),
      );
      return refusal ? { valid: false, why: refusal } : { valid: true, key_fingerprint: fingerprint ?? '' };
    },

    /**
     * The Governor: decides, and for a decision writes the permit at `quantum:permit:{plan_id}` (EX PERMIT_TTL_S)
     * with its audit entry in one MULTI. It may instead ask for a person (production mode), with the positions to
     * show them, or say when the symbol's next rate slot frees. A retry issues a fresh permit over the old one.
     */
    async requestPermit({ plan, at, approvals = [] }: GovernorRequest): Promise<GovernorAnswer> {
      const policy: GovernorPolicy = {
        mode: config.tradingMode,
        ...sizeLimitsFor(config, plan.symbol),
        quorum: config.approvalQuorum,
      };
      const state = await readState(plan, verifiedApprovals(plan.plan_id, approvals), policy);
      const decision = decidePermit(plan, policy, state);
      if (decision.kind === 'ask') {
        // Asking happens in production mode only, where the positions were read: they are what the person sees.
        // An approval short of its quorum keeps showing what it covers, so that the next signatures combine with it.
        const snapshot = decision.shown ?? state.positions;
        if (!snapshot) throw new Error('governor: asked for approval without the positions to show');
        await redis.xadd(
          keys.auditStream,
          '*',
          ...auditFields({
            plan_id: plan.plan_id,
            layer: 'governor',
            decision: 'approval_requested',
            reason: decision.reason,
            at: clock(),
          }),
        );
        return {
          kind: 'approval_required',
          reason: decision.reason,
          snapshot,
          required: decision.required,
          counted: decision.counted,
        };
      }
      if (decision.kind === 'grant' && config.rateLimit) {
        const { count, windowMs } = config.rateLimit;
        const [ok, freeAt] = await redis.takeRateSlot(
          keys.governorRate(plan.symbol),
          String(at),
          String(windowMs),
          String(count),
          plan.plan_id,
        );
        if (ok !== 1) {
          return {
            kind: 'rate_limited',
            retry_at: freeAt,
            detail: `rate limit ${count}/${windowMs / 1000}s on ${plan.symbol}`,
          };
        }
      }
      const issuedAt = clock();
      const permit: GovernorPermit = {
        plan_id: plan.plan_id,
        symbol: plan.symbol,
        granted: decision.kind === 'grant',
        mode: config.tradingMode,
        reason: decision.reason,
        ...(decision.kind === 'deny' ? { detail: decision.detail } : {}),
        approved_by: decision.kind === 'grant' ? decision.approvedBy : null,
        issued_at: issuedAt,
        expires_at: issuedAt + config.permitTtlS * 1000,
      };
      await writePermit(
        redis,
        { key: keys.permit(plan.plan_id), value: permit, ttlS: config.permitTtlS },
        keys.auditStream,
        {
          plan_id: plan.plan_id,
          layer: 'governor',
          decision: permit.granted ? 'granted' : 'denied',
          reason:
            decision.kind === 'grant' && decision.reason === 'approved'
              ? `approved by ${decision.approvedBy}`
              : decision.reason,
          at: issuedAt,
        },
      );
      return { kind: 'permit', permit };
    },

    /** Records an operator's decision on a plan (approve, reject, refused, cancel) in the audit stream. */
    async recordOperatorDecision(entry: { plan_id: string; decision: string; reason: string }): Promise<void> {
      await redis.xadd(keys.auditStream, '*', ...auditFields({ ...entry, layer: 'operator', at: clock() }));
    },
  };
}
