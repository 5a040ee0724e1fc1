import type { GovernorPermit, Plan, TradingMode } from '../lib/types';
import { redisKeys } from '../lib/keys';
import { writePermit } from './audit';
import type { ActivityDeps } from './deps';

export type GovernorDecision =
  | { granted: true; reason: 'testnet_auto_approved'; approvedBy: string }
  | { granted: false; reason: 'kill_switch_active' | 'approval_required' };

export interface GovernorState {
  killSwitch: boolean;
}

/** The Governor's (P3.2) decision for one plan: a pure function of the plan, the mode and the shared state. */
export function decidePermit(_plan: Plan, policy: { mode: TradingMode }, state: GovernorState): GovernorDecision {
  if (state.killSwitch) return { granted: false, reason: 'kill_switch_active' };
  if (policy.mode === 'production') return { granted: false, reason: 'approval_required' };
  return { granted: true, reason: 'testnet_auto_approved', approvedBy: 'auto:testnet' };
}

export function createGovernorActivities({ redis, config, clock }: ActivityDeps) {
  const keys = redisKeys(config.keyPrefix);
  return {
    /**
     * Decides and writes the Governor's permit at `quantum:permit:{plan_id}` (EX PERMIT_TTL_S), with its audit
     * entry in the same MULTI. A retry issues a fresh permit over the old one.
     */
    async requestPermit(plan: Plan): Promise<GovernorPermit> {
      const killSwitch = (await redis.get(keys.killSwitch)) === '1';
      const decision = decidePermit(plan, { mode: config.tradingMode }, { killSwitch });
      const issuedAt = clock();
      const permit: GovernorPermit = {
        plan_id: plan.plan_id,
        symbol: plan.symbol,
        granted: decision.granted,
        mode: config.tradingMode,
        reason: decision.reason,
        approved_by: decision.granted ? decision.approvedBy : null,
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
          decision: decision.granted ? 'granted' : 'denied',
          reason: decision.reason,
          at: issuedAt,
        },
      );
      return permit;
    },
  };
}
