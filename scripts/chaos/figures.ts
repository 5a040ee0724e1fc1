/** The chaos run's figures: what was fed and how it ended, the faults and the recovery after each, the violations. */
import type { Violation } from './chaos-check';
import { involvedPlans } from './chaos-check';
import type { ChaosEnd } from './ending';
import type { FaultKind } from './fault-kinds';
import type { InjectedFault } from './fault-schedule';
import type { Feed } from './feed';

/** When the run's phases ended (ms since the epoch). */
export interface ChaosTimes {
  fedAt: number;
  drainedAt: number;
}

/**
 * Says the run's figures, each fault's recovery (ms to the next order after it ended, set on the fault) and the
 * violations, the money first (sorted in place); returns the plans involved.
 */
export function sayFigures(
  feed: Feed,
  faults: InjectedFault[],
  end: ChaosEnd,
  times: ChaosTimes,
  say: (line: string) => void,
): string[] {
  const { outcomes, orders, deadLettered, violations } = end;
  const { fedAt, drainedAt } = times;
  const orderTimes = orders.map((order) => order.time).sort((a, b) => a - b);
  for (const fault of faults) {
    const next = orderTimes.find((time) => time >= fault.endedAt);
    if (next !== undefined) fault.recoveryMs = next - fault.endedAt;
  }
  const byOutcome = new Map<string, number>();
  for (const outcome of outcomes.values())
    byOutcome.set(outcome ?? 'not ended', (byOutcome.get(outcome ?? 'not ended') ?? 0) + 1);
  const executed = byOutcome.get('executed') ?? 0;
  const feedS = (fedAt - feed.from) / 1000;
  say('chaos: figures');
  say(
    `  plans ${feed.plans.size} (${[...byOutcome].map(([o, n]) => `${n} ${o}`).join(', ')}); entries ${feed.counts.entries}: ` +
      `${feed.counts.repeats} repeats, ${feed.counts.malformed} malformed (${deadLettered.length} dead-lettered), ` +
      `${feed.counts.bursts} bursts of 8, ${feed.counts.blocked} blocked until reconcile, ${feed.counts.denied} over the size limit`,
  );
  say(
    `  throughput ${(executed / ((drainedAt - feed.from) / 1000)).toFixed(2)} executed plans/s over ` +
      `${((drainedAt - feed.from) / 1000).toFixed(0)} s (fed for ${feedS.toFixed(0)} s, drained in ` +
      `${((drainedAt - fedAt) / 1000).toFixed(1)} s); ${orders.length} orders on the exchange`,
  );
  const byKind = new Map<FaultKind, InjectedFault[]>();
  for (const fault of faults) byKind.set(fault.kind, [...(byKind.get(fault.kind) ?? []), fault]);
  say(`  faults ${faults.length}: ${[...byKind].map(([kind, list]) => `${kind} ×${list.length}`).join(', ')}`);
  for (const [kind, list] of byKind) {
    const recoveries = list.map((f) => f.recoveryMs).filter((ms): ms is number => ms !== undefined);
    const s = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
    say(
      `  recovery after ${kind}: ${recoveries.length > 0 ? `median ${s(median(recoveries))}, max ${s(Math.max(...recoveries))}` : 'no order followed'}` +
        ` (${list.map((f) => (f.recoveryMs === undefined ? '–' : s(f.recoveryMs))).join(', ')})`,
    );
  }
  // The money first: orders, deadlines and positions, then the Apply stream and the intake, then plans not ended
  // (which a broken build leaves by the dozen, blocked on the drift its extra orders made).
  const rank = (v: Violation) =>
    /order|deadline|exchange|ledger/.test(v.text) ? 0 : /has not ended|designed to end/.test(v.text) ? 2 : 1;
  violations.sort((a, b) => rank(a) - rank(b));
  const planIds = involvedPlans(violations);
  say(`  violations ${violations.length}`);
  for (const violation of violations.slice(0, 50)) say(`  VIOLATION ${violation.text}`);
  if (violations.length > 50) say(`  … and ${violations.length - 50} more`);
  const ordered = involvedPlans(violations.filter((v) => rank(v) === 0));
  if (ordered.length > 0) say(`  plans with an order wrong: ${ordered.join(' ')}`);
  return planIds;
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? 0;
}
