import { checkIntegrity } from './bench-integrity';
import { TARGET, atMost, closingLines, latency, ms, round } from './bench-report';
import type { BenchReport, Measured } from './bench-report';
import {
  DRAIN_BOUND_MS,
  WARM_UP_RUNS,
  benchPlan,
  endOpen,
  serialChains,
  setPositions,
  timedChain,
  where,
} from './bench-runner';
import type { Bench } from './bench-runner';

/** `--burst`: the serial chain's p50 its targets are derived from, measured first in the same run. */
const BURST_SERIAL_PLANS = 10;

/**
 * `--burst`: for each size N, N plans on one symbol started at once; the drain time (first start to last result)
 * against N × the serial chain's p50 (measured first, same run) + 5 s, and each size against the one before it.
 */
export async function bursts(b: Bench, sizes: readonly number[]): Promise<Measured> {
  const serialSymbol = 'BENCHSERIALUSDT';
  const burstSymbols = sizes.map((_, k) => `BENCHBURST${k}USDT`);
  await setPositions(b.redis, b.keys, [serialSymbol, ...burstSymbols], { exchange: '0', ledger: '0' }, b.baseline);
  b.out.line(
    `bench: ${BURST_SERIAL_PLANS} serial plans (after ${WARM_UP_RUNS} warm-up), then bursts of ${sizes.join(', ')}`,
  );
  await serialChains(b, serialSymbol, 'warm', WARM_UP_RUNS);
  const serial = latency(await serialChains(b, serialSymbol, 'serial', BURST_SERIAL_PLANS));
  const serialP50 = serial.p50 ?? Infinity;
  const results: {
    size: number;
    target_ms: number;
    drain_ms: number | null;
    executed: number;
    latency_ms: ReturnType<typeof latency>;
  }[] = [];
  for (const [k, size] of sizes.entries()) {
    const symbol = burstSymbols[k]!;
    const targetMs = size * serialP50 + TARGET.burstSlackMs;
    // Ten times the target, and never less than the drain bound: a slow chain is reported, not waited for forever.
    const deadline = Date.now() + Math.max(DRAIN_BOUND_MS, 10 * targetMs);
    b.out.line(`bench: burst of ${size} on ${symbol} (target ${Math.round(targetMs)} ms)`);
    const plans = Array.from({ length: size }, (_, i) => benchPlan(b, symbol, `burst${size}-${i}`));
    const t0 = performance.now();
    const runs = await Promise.all(plans.map((plan) => timedChain(b, plan, deadline)));
    const executed = runs.filter((run) => run.outcome === 'executed').length;
    const drain = runs.every((run) => run.outcome !== 'unfinished') ? performance.now() - t0 : null;
    results.push({
      size,
      target_ms: round(targetMs) ?? Infinity,
      drain_ms: round(drain ?? NaN),
      executed,
      latency_ms: latency(runs.map((r) => r.ms)),
    });
  }
  await endOpen(b, { cancelFirst: false, waitMs: 0 });
  const integrity = await checkIntegrity(b.redis, b.keys, b.plans, b.baseline);
  const checks = results.map((r) => atMost(`burst ${r.size}: drain time`, r.drain_ms, Math.round(r.target_ms), ' ms'));
  for (let k = 1; k < results.length; k++) {
    const [before, now] = [results[k - 1]!, results[k]!];
    const ratio = before.drain_ms && now.drain_ms ? now.drain_ms / before.drain_ms : null;
    const limit = TARGET.burstLinearity * (now.size / before.size);
    checks.push(atMost(`burst ${now.size} / burst ${before.size} (linear)`, ratio, Math.round(limit * 100) / 100, '×'));
  }
  const text = [
    `serial chain    ${BURST_SERIAL_PLANS} plans  p50 ${ms(serial.p50)}  p99 ${ms(serial.p99)}`,
    ...results.map(
      (r) =>
        `burst ${String(r.size).padEnd(9)} ${r.executed}/${r.size} executed, drain ${r.drain_ms === null ? 'unfinished' : `${r.drain_ms} ms`}` +
        `  (plan p50 ${ms(r.latency_ms.p50)}, max ${ms(r.latency_ms.max)})`,
    ),
    ...closingLines(integrity, checks),
  ];
  const executed = b.plans.filter((plan) => plan.outcome === 'executed').length;
  const report: BenchReport = {
    mode: 'burst',
    ...where(b),
    ok: integrity.ok && executed === b.plans.length,
    serial_ms: { runs: BURST_SERIAL_PLANS, p50: serial.p50, p99: serial.p99 },
    bursts: results,
    integrity,
    checks,
  };
  return { text, report };
}
