/**
 * The chain's data, as it crosses from client to workflow to activities and back. Pure types only: the workflow
 * bundle imports this module. Quantities are decimal strings; times are ms since epoch.
 */

export type Side = 'BUY' | 'SELL';
export type TradingMode = 'testnet' | 'production';

export interface Plan {
  plan_id: string;
  action: 'EXECUTE';
  symbol: string;
  side: Side;
  /** Canonical decimal string, > 0, at most 8 decimals. */
  qty: string;
  reduce_only: boolean;
  source: string;
  reason?: string;
  created_at: number;
}

/** The settings a plan runs under, fixed when its workflow starts so that a config change never alters history. */
export interface ChainSettings {
  mode: TradingMode;
  permitTtlS: number;
  permitMarginS: number;
  recheckIntervalS: number;
  planMaxAgeS: number;
  approvalTimeoutS: number;
  /** Who may approve or reject (production mode); empty means anyone. */
  approvers: string[];
}

export interface ChainInput {
  plan: Plan;
  settings: ChainSettings;
}

/** The Governor's permit, as stored at `quantum:permit:{plan_id}`. */
export interface GovernorPermit {
  plan_id: string;
  symbol: string;
  granted: boolean;
  mode: TradingMode;
  reason: string;
  approved_by: string | null;
  issued_at: number;
  expires_at: number;
}

/** P3.3's permit, as stored at `quantum:permit:p33:{plan_id}`. */
export interface P33Permit {
  plan_id: string;
  symbol: string;
  allow: boolean;
  reason: string;
  exchange_amount: string;
  ledger_amount: string;
  discrepancy: string;
  tolerance: string;
  evaluated_at: number;
}

export interface ApplyResult {
  stream_id: string;
  /** False when an earlier call had already published the plan. */
  published: boolean;
}

/** The executed order, as stored at `quantum:execution:{plan_id}`. */
export interface ExecutionRecord {
  order_id: string;
  client_order_id: string;
  status: string;
  side: Side;
  filled_qty: string;
  avg_price: string;
  executed_at: number;
}

export type ExecuteResult =
  | { placed: true; execution: ExecutionRecord; ledger_amount: string }
  | { placed: false; reason: ExecuteRefusal; detail: string };

export type ExecuteRefusal = 'permit_missing' | 'permit_denied' | 'permit_expiring' | 'kill_switch_active';

export type ChainStage = 'governor' | 'awaiting_approval' | 'apply' | 'p33' | 'blocked' | 'execute' | 'done';
export type ChainOutcome = 'executed' | 'denied' | 'rejected' | 'expired' | 'cancelled' | 'failed';

export interface TimelineEntry {
  stage: ChainStage;
  at: number;
  detail: string;
}

/** What the `status` query answers, and what the workflow returns when it ends. */
export interface ChainStatus {
  plan_id: string;
  stage: ChainStage;
  outcome?: ChainOutcome;
  mode: TradingMode;
  /** How many times the Governor was asked for a permit. */
  attempts: number;
  governor?: GovernorPermit;
  apply?: ApplyResult;
  p33?: P33Permit;
  execution?: ExecutionRecord;
  /** The approval the plan holds (production mode). */
  approval?: Approval;
  /** While awaiting approval: what the approver is shown. */
  awaiting?: PositionSnapshot;
  timeline: TimelineEntry[];
  last_error?: string;
}

/** The positions a person saw when asked to approve: P3.3's view at that time. */
export interface PositionSnapshot {
  exchange_amount: string;
  ledger_amount: string;
  tolerance: string;
  taken_at: number;
}

/** A person's approval, bound to the plan and to the positions they saw. */
export interface Approval {
  by: string;
  at: number;
  note?: string;
  snapshot: PositionSnapshot;
}

/** What the Governor answers: a permit (granted or denied), a request for a person, or a wait for a rate slot. */
export type GovernorAnswer =
  | { kind: 'permit'; permit: GovernorPermit }
  | { kind: 'approval_required'; reason: 'approval_required' | 'approval_stale'; snapshot: PositionSnapshot }
  | { kind: 'rate_limited'; retry_at: number; detail: string };

export interface GovernorRequest {
  plan: Plan;
  /** The workflow's time of the request: rate-limit windows are counted on it. */
  at: number;
  approval?: Approval;
}

export interface RetryRequest {
  by?: string;
}

export interface ApproveRequest {
  by: string;
  note?: string;
}

export interface RejectRequest {
  by: string;
  reason: string;
}

export interface CancelRequest {
  by: string;
  reason: string;
}

/** What an operator's update returns: accepted, or refused with the reason (also recorded). */
export interface OperatorReply {
  accepted: boolean;
  detail: string;
}

/** An operator's decision as the audit stream records it. */
export interface OperatorDecision {
  plan_id: string;
  decision: string;
  reason: string;
}
