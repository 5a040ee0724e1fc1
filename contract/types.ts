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

/**
 * The rules a plan runs under: the worker's configuration, never the caller's. The Governor hands them to the
 * workflow through an activity, so they are recorded in its history and replay reads the same rules.
 */
export interface ChainRules {
  mode: TradingMode;
  permitTtlS: number;
  permitMarginS: number;
  recheckIntervalS: number;
  planMaxAgeS: number;
  approvalTimeoutS: number;
  /** Who may approve or reject (production mode); empty means nobody. */
  approvers: string[];
  /** The Redis-only layers as local activities (the default) or as regular ones (`LAYER_ACTIVITIES`). */
  layerActivities: 'local' | 'regular';
  /**
   * A waiting plan continues as a new run before its history reaches this many events (`CONTINUE_AS_NEW_EVENTS`).
   * Absent in the rules recorded by workers from before continue-as-new: the workflow's default then.
   */
  continueAsNewEvents?: number;
  /**
   * A waiting plan whose build is no longer the deployment's current one continues as new onto the current build
   * (`UPGRADE_ON_CONTINUE_AS_NEW`). Absent in rules recorded by workers from before it: false.
   */
  upgradeOnContinueAsNew?: boolean;
  /** Four eyes (`APPROVAL_QUORUM`): absent in the rules recorded by workers from before it, which is one signature. */
  approvalQuorum?: ApprovalQuorum;
}

/** How many distinct approvers must sign a plan before the Governor grants (production mode). */
export interface ApprovalQuorum {
  /** Distinct approvers (distinct names and keys) needed. */
  count: number;
  /** The quorum applies to plans whose qty × price is above this (decimal string); absent: to every plan. */
  aboveNotional?: string;
}

/** The workflow's input: the plan alone. Anything else a starter sends is refused by the Governor's admission. */
export interface ChainInput {
  plan: Plan;
}

/**
 * What a plan's run hands to the run it continues as (continue-as-new), at a point where it holds nothing: blocked
 * at rest, or awaiting a person. It travels through Redis, never in the workflow's input (that is the plan alone), and
 * the next run takes it only from the record its predecessor wrote (activities/carry.ts). Nothing in it can grant: the
 * Governor verifies an approval again, the plan's age limit and the approval's deadline can only move earlier.
 */
export interface CarriedState {
  /** When the plan's first run started: PLAN_MAX_AGE_S counts from there. */
  started_at: number;
  /** The status so far: attempts, permits, the approval held, a summary of the timeline (its first and last lines). */
  status: ChainStatus;
  /** Where the plan waits. */
  waiting:
    | { stage: 'blocked'; denial: P33Permit }
    | { stage: 'awaiting_approval'; shown: PositionSnapshot; until: number; stale: boolean; required?: number };
}

/** The Governor's admission of a workflow's input: the validated plan and the worker's rules, or why not. */
export type Admission =
  { admitted: true; plan: Plan; rules: ChainRules } | { admitted: false; error: string; rules: ChainRules };

/** The Governor's permit, as stored at `quantum:permit:{plan_id}`. */
export interface GovernorPermit {
  plan_id: string;
  symbol: string;
  granted: boolean;
  mode: TradingMode;
  reason: string;
  /** A denial's particulars, e.g. `qty 0.0625 is not a multiple of the step 0.001`. */
  detail?: string;
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
  /** The quantity ordered (records from before it was kept lack it: the plan's qty). */
  requested_qty?: string;
  /** Why the exchange refused or ended the order, when it did. */
  reject_reason?: string;
}

export type ExecuteResult =
  | {
      placed: true;
      execution: ExecutionRecord;
      /**
       * How much of the order executed: all of it (FILLED), a part (then EXPIRED or CANCELED: the ledger moved by
       * that part), or none (REJECTED, EXPIRED). Results recorded before it was kept lack it: read `execution.status`.
       */
      filled?: 'all' | 'part' | 'none';
      ledger_amount: string;
      /** Execute lets go of the symbol once the fill is in the ledger: the plan to wake next ('' when none). */
      next_in_line: string;
      /** The exchange's position read back after a fill reached the ledger; absent when nothing filled. */
      post_trade?: PostTradeCheck;
    }
  | { placed: false; reason: ExecuteRefusal; detail: string };

/**
 * The post-trade check: after a fill reached the ledger, the exchange's position compared with the ledger within the
 * symbol's tolerance. `agrees` null: the exchange or the ledger could not be read (`detail` says why).
 */
export interface PostTradeCheck {
  agrees: boolean | null;
  exchange_amount?: string;
  ledger_amount?: string;
  discrepancy?: string;
  tolerance?: string;
  detail: string;
}

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
  /** The worker's trading mode, known once the Governor has admitted the plan. */
  mode?: TradingMode;
  /** How many times the Governor was asked for a permit. */
  attempts: number;
  governor?: GovernorPermit;
  apply?: ApplyResult;
  p33?: P33Permit;
  execution?: ExecutionRecord;
  /** The approval the plan holds (production mode): the first signature when a quorum needs several. */
  approval?: Approval;
  /** Every signed approval the plan holds, in signing order (production mode). */
  approvals?: Approval[];
  /** While it applies: how many distinct approvers must sign, and who may (the worker's APPROVERS). */
  quorum?: { required: number; approvers: string[] };
  /** While awaiting approval: what the approver is shown. */
  awaiting?: PositionSnapshot;
  timeline: TimelineEntry[];
  last_error?: string;
  /** What a person can do about the plan where it waits (the Web UI's details show it as "Next:"); none once it moves on. */
  next_step?: string;
  /** While blocked: when the plan looks at the positions by itself next (ms since epoch). */
  next_look_at?: number;
  /**
   * The last `retry` the plan took while blocked: who sent it, its `retry_id`, and whether the plan has looked at the
   * positions since (`p33` then holds what that look saw).
   */
  last_retry?: { by: string; retry_id?: string; looked: boolean };
  /**
   * Added by the client (`status`), never by the workflow: Temporal closed the plan before the chain ended it
   * (`temporal workflow terminate`, an execution timeout). `stage` is then the last stage it reached.
   */
  closed?: ClosedByTemporal;
}

/** How Temporal closed a plan that the chain had not ended, and what that leaves to check. */
export interface ClosedByTemporal {
  status: 'terminated' | 'timed_out' | 'canceled';
  /** When (ms since epoch). */
  at: number;
  /** The reason given to Temporal (a terminate's), bounded. */
  reason?: string;
  /** It was in Execute without a recorded order: its order may be on the exchange with no record of the chain's. */
  order_may_be_on_exchange: boolean;
  /** What a person does about it, ready to copy. */
  next_step: string;
}

/** The positions a person saw when asked to approve: P3.3's view at that time. */
export interface PositionSnapshot {
  exchange_amount: string;
  ledger_amount: string;
  tolerance: string;
  taken_at: number;
}

/** A person's approval, bound by their signature to the plan and to the positions they saw. */
export interface Approval {
  by: string;
  at: number;
  note?: string;
  snapshot: PositionSnapshot;
  /** The signed decision's expiry and the Ed25519 signature, kept so the Governor can verify it again. */
  expires_at: number;
  signature: string;
  /** The fingerprint of the key that verified it, for people to read; the Governor checks with its own keys. */
  key_fingerprint?: string;
}

/** What the Governor answers: a permit (granted or denied), a request for a person, or a wait for a rate slot. */
export type GovernorAnswer =
  | { kind: 'permit'; permit: GovernorPermit }
  | {
      kind: 'approval_required';
      reason: 'approval_required' | 'approval_stale';
      snapshot: PositionSnapshot;
      /** How many distinct approvers must sign (absent: 1). */
      required?: number;
      /** The approvers whose signatures still count, over `snapshot`, in signing order (absent: none). */
      counted?: string[];
    }
  | { kind: 'rate_limited'; retry_at: number; detail: string };

export interface GovernorRequest {
  plan: Plan;
  /** The workflow's time of the request: rate-limit windows are counted on it. */
  at: number;
  /** The signed approvals the plan holds, in signing order. */
  approvals?: Approval[];
}

export interface RetryRequest {
  by?: string;
  /** Names this retry, so that whoever sent it can tell when the plan has looked after it (`last_retry`). */
  retry_id?: string;
}

/**
 * An approval as an approver sends it: signed with their Ed25519 key over {@link SignedDecision} (see
 * lib/approval.ts). The Governor checks the signature; until then it is only a claim.
 */
export interface ApproveRequest {
  by: string;
  note?: string;
  /** ms since epoch; the Governor refuses a decision past it. */
  expires_at: number;
  /** base64 Ed25519 signature. */
  signature: string;
}

/** A rejection, signed like an approval: an unsigned rejection would let anyone stop a plan. */
export interface RejectRequest {
  by: string;
  reason: string;
  expires_at: number;
  signature: string;
}

/** What an approver signs: the plan, the decision, the positions they were shown, and an expiry. */
export interface SignedDecision {
  plan_id: string;
  decision: 'approve' | 'reject';
  by: string;
  snapshot: PositionSnapshot;
  expires_at: number;
  note?: string;
  reason?: string;
}

/** The Governor's verdict on a person's decision. */
export type DecisionVerdict = { valid: true; key_fingerprint?: string } | { valid: false; why: string };

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
