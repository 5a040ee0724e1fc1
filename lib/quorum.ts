import type { Dec } from './decimal';
import type { ApprovalQuorum, PositionSnapshot } from '../contract/types';

/**
 * Four eyes: how many distinct approvers must sign before the Governor grants, and which signatures count towards
 * it. Pure functions of plain values (no Node built-ins): the Governor, the workflow, `what-if` and the CLI use them.
 */

/** The worker's quorum rule (`APPROVAL_QUORUM`, `APPROVAL_QUORUM_ABOVE_NOTIONAL`); a count of 1 is one signature. */
export type QuorumRule = ApprovalQuorum;

/** One signature as the quorum counts it: who, with which key, over which positions. */
export interface QuorumSignature {
  by: string;
  /** The fingerprint of the key that verified it (`SHA256:…`). */
  key_fingerprint: string;
  snapshot: PositionSnapshot;
}

/** Whether the rule needs the plan's notional (and so the price) to say how many must sign. */
export function quorumNeedsPrice(rule: QuorumRule | undefined): boolean {
  return rule !== undefined && rule.count > 1 && rule.aboveNotional !== undefined;
}

/**
 * How many distinct approvers a plan needs: the rule's count when it applies (no threshold, or a notional above the
 * threshold), else 1. A notional exactly at the threshold needs 1. Throws when the rule needs the notional and it is
 * not given.
 */
export function requiredApprovals(rule: QuorumRule | undefined, notional: Dec | undefined): number {
  if (!rule || rule.count <= 1) return 1;
  if (rule.aboveNotional === undefined) return rule.count;
  if (!notional) throw new Error('requiredApprovals: a quorum with a notional threshold needs the notional');
  return notional.gt(rule.aboveNotional) ? rule.count : 1;
}

/** Whether two snapshots are the same positions shown at the same time. */
export function sameSnapshot(a: PositionSnapshot, b: PositionSnapshot): boolean {
  return (
    a.exchange_amount === b.exchange_amount &&
    a.ledger_amount === b.ledger_amount &&
    a.tolerance === b.tolerance &&
    a.taken_at === b.taken_at
  );
}

export interface Tally<S extends QuorumSignature> {
  /** The signatures that count, in signing order: distinct names, distinct keys, one snapshot. */
  counted: S[];
  /** The positions the counted signatures cover (the first signature's); undefined when none counts. */
  snapshot?: PositionSnapshot;
  /** Signatures that do not count, and why. */
  refused: { by: string; why: string }[];
}

/**
 * Counts signatures in signing order: each approver once, each key once, and only over the positions the first one
 * covers (signatures over other positions do not combine with it).
 */
export function tallySignatures<S extends QuorumSignature>(signatures: readonly S[]): Tally<S> {
  const counted: S[] = [];
  const refused: { by: string; why: string }[] = [];
  for (const signature of signatures) {
    const first = counted[0];
    const sameName = counted.find((c) => c.by === signature.by);
    const sameKey = counted.find((c) => c.key_fingerprint === signature.key_fingerprint);
    if (sameName)
      refused.push({ by: signature.by, why: `${signature.by} has already signed: each approver counts once` });
    else if (sameKey) {
      refused.push({
        by: signature.by,
        why: `signed with the key ${sameKey.by} signed with (${sameKey.key_fingerprint}): each key counts once`,
      });
    } else if (first && !sameSnapshot(first.snapshot, signature.snapshot)) {
      refused.push({
        by: signature.by,
        why: `signed other positions (${positions(signature.snapshot)}) than ${first.by} (${positions(first.snapshot)})`,
      });
    } else counted.push(signature);
  }
  return { counted, ...(counted[0] ? { snapshot: counted[0].snapshot } : {}), refused };
}

function positions(snapshot: PositionSnapshot): string {
  return `exchange ${snapshot.exchange_amount}, ledger ${snapshot.ledger_amount}`;
}

/** The rule as the worker's start line and `what-if` say it: `quorum 2 above notional 10000`. */
export function quorumRuleText(rule: QuorumRule | undefined): string {
  if (!rule || rule.count <= 1) return 'one signature per plan';
  return `quorum ${rule.count}${rule.aboveNotional !== undefined ? ` above notional ${rule.aboveNotional}` : ''}`;
}

/** `approved_by` for a grant: the names that counted, comma-separated in signing order (`alice,bob`). */
export function approvedByOf(names: readonly string[]): string {
  return names.join(',');
}

/**
 * Who has signed and who is still needed, as the Web UI's details and `status` say it:
 * `approved by alice (SHA256:…); 1 more of bob, carol needed`, or `2 of alice, bob, carol needed` before anyone.
 */
export function quorumProgressLine(
  required: number,
  signed: readonly { by: string; key_fingerprint?: string }[],
  approvers: readonly string[],
): string {
  const names = signed.map((s) => `${s.by}${s.key_fingerprint ? ` (${s.key_fingerprint})` : ''}`);
  const missing = Math.max(0, required - signed.length);
  const others = approvers.filter((name) => !signed.some((s) => s.by === name));
  const from = others.length > 0 ? ` of ${others.join(', ')}` : '';
  const still = signed.length === 0 ? `${missing}${from} needed` : `${missing} more${from} needed`;
  if (signed.length === 0) return still;
  return missing === 0 ? `approved by ${names.join(', ')}` : `approved by ${names.join(', ')}; ${still}`;
}
