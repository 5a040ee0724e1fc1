import type { ChainPipeline } from './redis-scripts';

export type Layer = 'governor' | 'apply' | 'p33' | 'execute' | 'operator';

/** One entry of `quantum:stream:permit.audit`: one per decision, as the existing services write it. */
export interface AuditEntry {
  plan_id: string;
  layer: Layer;
  decision: string;
  reason: string;
  at: number;
}

/** The stream fields of an audit entry, in the contract's order. */
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
  ];
}

/** Queues the audit entry on a MULTI, so it lands together with the decision it records. */
export function queueAudit(multi: ChainPipeline, auditStream: string, entry: AuditEntry): void {
  multi.xadd(auditStream, '*', ...auditFields(entry));
}
