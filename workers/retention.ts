import type { temporal } from '@temporalio/proto';
import { applyRecordTtlS } from '../activities/apply';
import type { ChainConfig } from '../lib/config';

type DescribeNamespace = Pick<temporal.api.workflowservice.v1.WorkflowService, 'describeNamespace'>;

/** What the worker learnt at start about how long Temporal keeps a closed plan, and so how long Apply remembers. */
export interface ApplyRecordLife {
  /** The namespace's retention of closed workflows, in seconds; null: unbounded, or not readable (see `line`). */
  retentionS: number | null;
  /** Apply's once-only record's TTL, in seconds; null: it never expires. */
  ttlS: number | null;
  /** One line for the worker's log, saying both and why. */
  line: string;
}

/** A Duration's whole seconds, or null when absent or not positive (no bound). */
function durationSeconds(duration: { seconds?: { toString(): string } | number | null } | null | undefined) {
  const seconds = Number(duration?.seconds?.toString() ?? 0);
  return Number.isFinite(seconds) && seconds > 0 ? seconds : null;
}

/**
 * The namespace's retention (DescribeNamespace `config.workflowExecutionRetentionTtl`) and, from it, how long Apply's
 * once-only record lives: retention + PLAN_MAX_AGE_S + a margin. A retention that cannot be read (the API key may not
 * describe the namespace, the call fails) is not guessed: the record then never expires, and the line says why.
 */
export async function applyRecordLife(
  service: DescribeNamespace,
  config: Pick<ChainConfig, 'temporalNamespace' | 'planMaxAgeS'>,
): Promise<ApplyRecordLife> {
  const namespace = config.temporalNamespace;
  let retentionS: number | null;
  let why: string;
  try {
    const described = await service.describeNamespace({ namespace });
    retentionS = durationSeconds(described.config?.workflowExecutionRetentionTtl);
    why = retentionS === null ? `namespace ${namespace} has no retention bound` : '';
  } catch (err) {
    retentionS = null;
    const message = (err instanceof Error ? err.message : String(err)).split('\n')[0] ?? '';
    why = `the retention of namespace ${namespace} cannot be read (${message.slice(0, 200)})`;
  }
  const ttlS = applyRecordTtlS(retentionS, config.planMaxAgeS);
  const line =
    ttlS === null
      ? `worker: Apply's once-only records never expire: ${why}`
      : `worker: Apply's once-only records live ${ttlS}s: namespace ${namespace}'s retention ${retentionS}s + PLAN_MAX_AGE_S ${config.planMaxAgeS}s + a day`;
  return { retentionS, ttlS, line };
}
