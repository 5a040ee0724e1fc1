import type { Client } from '@temporalio/client';
import type { ChainStatus } from '../contract/types';
import { planStatus } from './plans';

/** A plan a retry moved: it left `blocked` (its positions agree again, or it ended meanwhile). */
export interface MovedPlan {
  plan_id: string;
  stage: string;
  outcome?: string;
}

/** A plan still blocked after the retry's look, and why: the positions that look saw. */
export interface StillBlockedPlan {
  plan_id: string;
  symbol: string;
  exchange: string;
  ledger: string;
  tolerance: string;
  reason: string;
  /** When the plan looks by itself next (ISO time), if it says. */
  next_look_at?: string;
  /** False when the plan had not looked since the retry when the wait ran out: what it shows is from before. */
  looked: boolean;
}

/** A plan that was not blocked when the wait ran out, and had not looked after the retry: the retry did nothing yet. */
export interface NotBlockedPlan {
  plan_id: string;
  stage: string;
}

export interface RetryReport {
  moved: MovedPlan[];
  stillBlocked: StillBlockedPlan[];
  notBlocked: NotBlockedPlan[];
  /** Plans whose status could not be read (ended and gone, or the server did not answer). */
  unknown: { plan_id: string; why: string }[];
}

export interface RetryReportOptions {
  /** How long to wait for the plans' looks, at most (ms). */
  waitMs?: number;
  /** How long between two rounds of reads (ms). */
  roundMs?: number;
  /** How many plans are read at once in a round. */
  concurrency?: number;
}

/** A few seconds: a look is one read of the positions (P3.3's peek), done within a second when the worker is up. */
export const RETRY_REPORT_WAIT_MS = 8_000;
const ROUND_MS = 500;
const CONCURRENCY = 20;

type Seen =
  | { kind: 'moved'; plan: MovedPlan }
  | { kind: 'blocked'; plan: StillBlockedPlan }
  | { kind: 'not_blocked'; plan: NotBlockedPlan };

/**
 * What a plan's status says about the retry `retryId`, and whether that is final: it ended, or it looked after the
 * retry (moved when its positions agree, still blocked when not). Until then it is shown as it stands.
 */
function verdict(planId: string, status: ChainStatus, retryId: string): { seen: Seen; final: boolean } {
  // Ended: by the chain (its outcome) or by Temporal (terminated, timed out).
  const outcome = status.outcome ?? status.closed?.status;
  if (outcome) {
    return {
      seen: { kind: 'moved', plan: { plan_id: planId, stage: status.stage, outcome } },
      final: true,
    };
  }
  const looked = status.last_retry?.retry_id === retryId && status.last_retry.looked;
  const p33 = status.p33;
  if (looked && (status.stage !== 'blocked' || p33?.allow)) {
    return { seen: { kind: 'moved', plan: { plan_id: planId, stage: status.stage } }, final: true };
  }
  if (status.stage !== 'blocked') {
    // A plan awaiting a person does not look until they decide: nothing to wait for.
    const final = status.stage === 'awaiting_approval';
    return { seen: { kind: 'not_blocked', plan: { plan_id: planId, stage: status.stage } }, final };
  }
  const plan: StillBlockedPlan = {
    plan_id: planId,
    symbol: p33?.symbol ?? '',
    exchange: p33?.exchange_amount ?? '',
    ledger: p33?.ledger_amount ?? '',
    tolerance: p33?.tolerance ?? '',
    reason: p33?.reason ?? '',
    ...(status.next_look_at !== undefined ? { next_look_at: new Date(status.next_look_at).toISOString() } : {}),
    looked,
  };
  return { seen: { kind: 'blocked', plan }, final: looked };
}

async function inBatches<T, R>(items: T[], size: number, read: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = [];
  for (let i = 0; i < items.length; i += size) out.push(...(await Promise.all(items.slice(i, i + size).map(read))));
  return out;
}

/**
 * Waits, at most `waitMs`, for the plans signalled with the retry `retryId` to look at their positions, and reports
 * which moved and which are still blocked, with the positions each saw. Reads are the plans' statuses (planStatus:
 * the `status` query of a running plan, the result of an ended one, which needs no worker of its build), in rounds:
 * each round reads every plan not yet settled (`concurrency` at a time), then sleeps `roundMs`; a plan is settled
 * once it ended or has looked since the retry. The number of rounds is bounded by waitMs / roundMs. A plan
 * not blocked (in line, awaiting approval) does not look: it is reported `notBlocked` once the wait runs out.
 */
export async function reportRetries(
  client: Client,
  planIds: readonly string[],
  retryId: string,
  options: RetryReportOptions = {},
): Promise<RetryReport> {
  const deadline = Date.now() + (options.waitMs ?? RETRY_REPORT_WAIT_MS);
  const settled = new Map<string, Seen>();
  const latest = new Map<string, Seen>();
  const unknown = new Map<string, string>();
  let pending = [...planIds];
  for (;;) {
    await inBatches(pending, options.concurrency ?? CONCURRENCY, async (planId) => {
      try {
        const status = await planStatus(client, planId);
        const { seen, final } = verdict(planId, status, retryId);
        unknown.delete(planId);
        latest.set(planId, seen);
        if (final) settled.set(planId, seen);
      } catch (err) {
        unknown.set(planId, (err instanceof Error ? err.message : String(err)).slice(0, 200));
      }
    });
    pending = pending.filter((planId) => !settled.has(planId));
    if (pending.length === 0 || Date.now() + (options.roundMs ?? ROUND_MS) > deadline) break;
    await new Promise((resolve) => setTimeout(resolve, options.roundMs ?? ROUND_MS));
  }
  const report: RetryReport = { moved: [], stillBlocked: [], notBlocked: [], unknown: [] };
  for (const planId of planIds) {
    const seen = settled.get(planId) ?? latest.get(planId);
    if (!seen) report.unknown.push({ plan_id: planId, why: unknown.get(planId) ?? 'no answer' });
    else if (seen.kind === 'moved') report.moved.push(seen.plan);
    else if (seen.kind === 'blocked') report.stillBlocked.push(seen.plan);
    else report.notBlocked.push(seen.plan);
  }
  return report;
}

/** The report as an operator reads it: counts, then what is still blocked per symbol, with both positions. */
export function formatRetryReport(report: RetryReport): string {
  const lines = [`${report.moved.length} moved, ${report.stillBlocked.length} still blocked`];
  for (const plan of report.moved) {
    lines.push(`  moved    ${plan.plan_id}  now ${plan.outcome ?? plan.stage}`);
  }
  // Grouped by what the plans saw: one line per symbol and positions.
  const groups = new Map<string, StillBlockedPlan[]>();
  for (const plan of report.stillBlocked) {
    const key = [plan.symbol, plan.reason, plan.exchange, plan.ledger, plan.tolerance].join('|');
    groups.set(key, [...(groups.get(key) ?? []), plan]);
  }
  for (const plans of groups.values()) {
    const first = plans[0];
    if (!first) continue;
    lines.push(
      `  blocked  ${plans.length} on ${first.symbol || '?'}: ${first.reason}, exchange ${first.exchange} vs ledger ` +
        `${first.ledger}, tolerance ${first.tolerance}: ${plans.map((p) => p.plan_id).join(', ')}`,
    );
    const notYet = plans.filter((p) => !p.looked).length;
    if (notYet > 0) lines.push(`           ${notYet} of them had not looked again within the wait: shown as before`);
  }
  for (const plan of report.notBlocked) {
    lines.push(`  waiting  ${plan.plan_id}  ${plan.stage}: not blocked, the retry changes nothing yet`);
  }
  for (const plan of report.unknown) lines.push(`  unknown  ${plan.plan_id}: ${plan.why}`);
  return lines.join('\n');
}
