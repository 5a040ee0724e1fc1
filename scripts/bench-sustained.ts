import { CHAIN_SHAPE, floorLanes } from './bench-floors';
import { TARGET, atMost, check, closingLines, latency, ms, round } from './bench-report';
import type { BenchReport, Measured } from './bench-report';
import {
  DRAIN_BOUND_MS,
  WARM_UP_RUNS,
  chainLanes,
  serialChains,
  setPositions,
  settle,
  symbolsOf,
  where,
} from './bench-runner';
import type { Bench, BenchOptions } from './bench-runner';

/** `--duration`: how long the empty workflow and the chain's shape run in the same lanes before the chain. */
const FLOOR_SUSTAINED_MS = 15_000;

/** `--duration`: as many plans as `concurrency` lanes start over the duration, on `symbols` symbols. */
export async function sustained(
  b: Bench,
  options: BenchOptions,
  durationMs: number,
  symbolCount: number,
): Promise<Measured> {
  const symbols = symbolsOf(symbolCount);
  await setPositions(b.redis, b.keys, symbols, { exchange: '0', ledger: '0' }, b.baseline);
  b.out.line(
    `bench: the empty workflow, then the chain's shape (no-op activities), ${options.concurrency} at a time for ` +
      `${Math.min(FLOOR_SUSTAINED_MS, durationMs) / 1000} s each; then plans ${options.concurrency} at a time over ${symbolCount} symbols ` +
      `for ${durationMs / 1000} s (then at most ${DRAIN_BOUND_MS / 1000} s for those in flight); ` +
      `${WARM_UP_RUNS} warm-up plans first`,
  );
  // What the server and the SDK give at this concurrency with nothing in the workflows: the ceiling the chain is under.
  const floorMs = Math.min(FLOOR_SUSTAINED_MS, durationMs);
  const emptyFloor = await floorLanes(b, options.concurrency, 'empty', floorMs);
  const shapeFloor = await floorLanes(b, options.concurrency, 'shape', floorMs);
  await serialChains(b, symbols[0]!, 'warm', WARM_UP_RUNS);
  const stopAt = performance.now() + durationMs;
  const deadline = Date.now() + durationMs + DRAIN_BOUND_MS;
  const lanes = await chainLanes(
    b,
    symbols,
    options.concurrency,
    () => performance.now() < stopAt,
    () => deadline,
  );
  const { latencies, wallMs } = lanes;
  const { integrity, measured, executed } = await settle(b);
  const lostOrDuplicated =
    measured.length -
    executed +
    integrity.apply_missing +
    integrity.apply_duplicated +
    integrity.apply_strangers +
    integrity.orders_missing +
    integrity.orders_unexpected +
    integrity.symbols_off.length;
  const plansPerS = (executed / wallMs) * 1000;
  const chainMs = latency(latencies);
  const checks = [
    check('plans/s sustained', plansPerS, '', `≥ ${TARGET.sustainedPlansPerS}`, plansPerS >= TARGET.sustainedPlansPerS),
    atMost('latency p99', chainMs.p99, TARGET.sustainedP99Ms, ' ms'),
    atMost('plans lost or duplicated (any kind)', lostOrDuplicated, 0, ''),
    // Not targets: the same lanes with nothing in the workflows.
    check('empty workflows/s, same lanes', round(emptyFloor.perS), '', 'for reference', null),
    check(`the chain's no-op shape/s, same lanes`, round(shapeFloor.perS), '', 'for reference', null),
  ];
  const floorLine = (name: string, f: typeof emptyFloor) =>
    `${name}${f.perS.toFixed(1)}/s  p50 ${ms(f.ms.p50)}  p99 ${ms(f.ms.p99)}  (${floorMs / 1000} s, same lanes)`;
  const text = [
    floorLine('empty workflow  ', emptyFloor),
    floorLine(`chain's shape   ${CHAIN_SHAPE.locals}L+${CHAIN_SHAPE.regulars}R no-op  `, shapeFloor),
    `sustained       ${measured.length} plans started in ${durationMs / 1000} s, ${executed} executed, ` +
      `${options.concurrency} at a time, ${symbolCount} symbols, ${Math.round(wallMs)} ms to the last result`,
    `                p50 ${ms(chainMs.p50)}  p95 ${ms(chainMs.p95)}  p99 ${ms(chainMs.p99)}  max ${ms(chainMs.max)}`,
    `                ${plansPerS.toFixed(1)} plans/s`,
    ...closingLines(integrity, checks),
  ];
  const report: BenchReport = {
    mode: 'sustained',
    ...where(b),
    ok: integrity.ok && executed === measured.length,
    duration_ms: durationMs,
    concurrency: options.concurrency,
    symbols: symbolCount,
    started: measured.length,
    executed,
    wall_ms: Math.round(wallMs),
    plans_per_s: round(plansPerS),
    latency_ms: chainMs,
    empty_workflow: { per_s: round(emptyFloor.perS), latency_ms: emptyFloor.ms },
    chain_shape: { ...CHAIN_SHAPE, per_s: round(shapeFloor.perS), latency_ms: shapeFloor.ms },
    integrity,
    checks,
  };
  return { text, report };
}
