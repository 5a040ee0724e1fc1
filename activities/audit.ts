import type { ChainableCommander, Redis } from 'ioredis';

export type Layer = 'governor' | 'apply' | 'p33' | 'execute' | 'operator';

/** One entry of `quantum:stream:permit.audit`: one per decision, as the existing services write it. */
export interface AuditEntry {
  plan_id: string;
  layer: Layer;
  decision: string;
  reason: string;
  at: number;
  /** A verified approval or rejection: the fingerprint of the approver's key that verified its signature. */
  key_fingerprint?: string;
}

/** The stream fields of an audit entry, in the contract's order; `key_fingerprint` last, when there is one. */
export function auditFields(entry: AuditEntry): string[] {
  return [
    'plan_id',
    entry.plan_id,
    'layer',
    entry.layer,
    'decision',
    entry.decision,
    'reason',
    entry.reason,
    'at',
    new Date(entry.at).toISOString(),
    ...(entry.key_fingerprint !== undefined ? ['key_fingerprint', entry.key_fingerprint] : []),
  ];
}

/**
 * Writes a layer's permit (JSON, with its TTL) and the audit entry of the decision in one MULTI: the operators never
 * see a permit without its audit line, or the reverse. `alongside` adds the layer's own bookkeeping to the same MULTI.
 */
export async function writePermit(
  redis: Redis,
  permit: { key: string; value: object; ttlS: number },
  auditStream: string,
  entry: AuditEntry,
  alongside?: (multi: ChainableCommander) => void,
): Promise<void> {
  const multi = redis
    .multi()
    .set(permit.key, JSON.stringify(permit.value), 'EX', permit.ttlS)
    .xadd(auditStream, '*', ...auditFields(entry));
  alongside?.(multi);
  await multi.exec();
}
