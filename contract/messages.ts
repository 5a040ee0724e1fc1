import { defineSearchAttributeKey } from '@temporalio/common';
import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type { ApproveRequest, CancelRequest, ChainStatus, OperatorReply, RejectRequest, RetryRequest } from './types';

/** The workflow type every plan runs as; its id is {@link planWorkflowId}. */
export const PERMIT_CHAIN_WORKFLOW = 'permitChain';

/** The business key: one workflow per plan, ever. */
export function planWorkflowId(planId: string): string {
  return `plan-${planId}`;
}

export const statusQuery = defineQuery<ChainStatus>('status');
export const retrySignal = defineSignal<[RetryRequest?]>('retry');
export const approveSignal = defineSignal<[ApproveRequest]>('approve');
export const rejectSignal = defineSignal<[RejectRequest]>('reject');
export const cancelSignal = defineSignal<[CancelRequest]>('cancel');
/** Internal: a plan letting go of its symbol wakes the plan next in line. */
export const symbolFreeSignal = defineSignal('symbolFree');
/** Internal: the position watcher wakes a blocked plan when its symbol's positions change or agree again. */
export const positionsChangedSignal = defineSignal('positionsChanged');
/** Sent after a deploy: wakes a waiting plan so that it sees a new build is current; changes nothing else. */
export const wakeSignal = defineSignal('wake');

/** The same decisions as updates: the caller learns at once whether it was accepted, and why not. */
export const approvePlanUpdate = defineUpdate<OperatorReply, [ApproveRequest]>('approvePlan');
export const rejectPlanUpdate = defineUpdate<OperatorReply, [RejectRequest]>('rejectPlan');
export const cancelPlanUpdate = defineUpdate<OperatorReply, [CancelRequest]>('cancelPlan');

export const planIdKey = defineSearchAttributeKey('PlanId', 'KEYWORD');
export const symbolKey = defineSearchAttributeKey('Symbol', 'KEYWORD');
export const chainStageKey = defineSearchAttributeKey('ChainStage', 'KEYWORD');
export const chainOutcomeKey = defineSearchAttributeKey('ChainOutcome', 'KEYWORD');
export const tradingModeKey = defineSearchAttributeKey('TradingMode', 'KEYWORD');

/** Registered by the dev server at start and by `permit-chain register-search-attributes` on a cluster. */
export const CHAIN_SEARCH_ATTRIBUTES = [planIdKey, symbolKey, chainStageKey, chainOutcomeKey, tradingModeKey];
