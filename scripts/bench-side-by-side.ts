import type { ChainConfig } from '../lib/config';
import { createActivities } from '../activities';
import { createPaperExchange } from '../activities/exchange/paper';
import { redisKeys } from '../contract/keys';
import { directChain } from './bench-direct';
import { CHAIN_SHAPE, timedFloor } from './bench-floors';
import { TARGET, atMost, check, closingLines, latency, ms, round } from './bench-report';
import type { BenchReport, Measured } from './bench-report';
import {
  DRAIN_BOUND_MS,
  WARM_UP_RUNS,
  benchPlan,
  chainLanes,
  serialChains,
  setPositions,
  settle,
  symbolsOf,
  timedChain,
  where,
} from './bench-runner';
import type { Bench, BenchOptions } from './bench-runner';

/**
 * The default mode: the empty workflow, the same Redis work as direct calls, and the chain, in the same run on the
 * same server; the chain's latency as a ratio to both.
 */
export async function sideBySide(b: Bench, options: BenchOptions, symbolCount: number): Promise<Measured> {
  const symbols = symbolsOf(symbolCount);
  await setPositions(b.redis, b.keys, symbols, { exchange: '0', ledger: '0' }, b.baseline);
  const serial = options.concurrency === 1;
  b.out.line(
    `bench: ${options.plans} direct chains (serial), then ${options.plans} each of the empty workflow, the chain's ` +
      `shape (${CHAIN_SHAPE.locals} local + ${CHAIN_SHAPE.regulars} regular no-op activities) and plans ` +
      (serial ? `in turn, one at a time` : `(the floors serial, then the plans ${options.concurrency} at a time)`) +
      ` over ${symbolCount} symbols; ${WARM_UP_RUNS} warm-up runs of each first`,
  );

  // The same activities with the same deps as the worker, over a key prefix of their own.
  const directConfig: ChainConfig = { ...b.config, keyPrefix: `${b.config.keyPrefix}:direct` };
  const directKeys = redisKeys(directConfig.keyPrefix);
  await setPositions(b.redis, directKeys, symbols, { exchange: '0', ledger: '0' });
  const layers = createActivities({
    redis: b.redis,
    config: directConfig,
    exchange: createPaperExchange(b.redis, directKeys, Date.now),
    clock: Date.now,
    approverKeys: new Map(),
  });
  const direct: number[] = [];
  for (let i = -WARM_UP_RUNS; i < options.plans; i++) {
    const plan = benchPlan(b, symbols[(i + WARM_UP_RUNS) % symbols.length]!, `direct-${i}`);
    const t0 = performance.now();
    await directChain(layers, plan);
    if (i >= 0) direct.push(performance.now() - t0);
  }

  for (let i = 0; i < WARM_UP_RUNS; i++) {
    await timedFloor(b, `warm-${i}`);
    await timedFloor(b, `warm-${i}`, 'shape');
  }
  await serialChains(b, symbols[0]!, 'warm', WARM_UP_RUNS);
  const floor: number[] = [];
  const shape: number[] = [];
  let chain: number[];
  let wallMs: number;
  if (serial) {
    // In turn, one of each: the machine's noise falls on the three alike.
    chain = [];
    for (let i = 0; i < options.plans && !chain.includes(Infinity); i++) {
      floor.push(await timedFloor(b, String(i)));
      shape.push(await timedFloor(b, String(i), 'shape'));
      const plan = benchPlan(b, symbols[i % symbols.length]!, String(i));
      chain.push((await timedChain(b, plan, Date.now() + DRAIN_BOUND_MS)).ms);
    }
    wallMs = chain.reduce((sum, one) => sum + one, 0);
  } else {
    for (let i = 0; i < options.plans && !floor.includes(Infinity); i++) floor.push(await timedFloor(b, String(i)));
    for (let i = 0; i < options.plans && !shape.includes(Infinity); i++) {
      shape.push(await timedFloor(b, String(i), 'shape'));
    }
    const lanes = await chainLanes(
      b,
      symbols,
      options.concurrency,
      (i) => i < options.plans,
      () => Date.now() + DRAIN_BOUND_MS,
    );
    ({ latencies: chain, wallMs } = lanes);
  }
  const { integrity, executed } = await settle(b);
  const floorMs = latency(floor);
  const shapeMs = latency(shape);
  const directMs = latency(direct);
  const chainMs = latency(chain);
  const ratio = (a: number | null, z: number | null) =>
    a === null || z === null || z === 0 ? null : Math.round((a / z) * 100) / 100;
  const ratios = {
    chain_to_empty: { p50: ratio(chainMs.p50, floorMs.p50), p99: ratio(chainMs.p99, floorMs.p99) },
    shape_to_empty: { p50: ratio(shapeMs.p50, floorMs.p50), p99: ratio(shapeMs.p99, floorMs.p99) },
    chain_to_shape: { p50: ratio(chainMs.p50, shapeMs.p50), p99: ratio(chainMs.p99, shapeMs.p99) },
    chain_to_direct: { p50: ratio(chainMs.p50, directMs.p50), p99: ratio(chainMs.p99, directMs.p99) },
  };
  // The targets are for a serial chain: plans in flight at once wait for each other's workflow tasks.
  const ratioCheck = (figure: string, value: number | null, limit: number) =>
    serial ? atMost(figure, value, limit, '×') : check(figure, value, '×', `≤ ${limit}× at --concurrency 1`, null);
  const checks = [
    ratioCheck('chain / empty workflow, p50', ratios.chain_to_empty.p50, TARGET.chainToEmptyP50),
    ratioCheck('chain / empty workflow, p99', ratios.chain_to_empty.p99, TARGET.chainToEmptyP99),
    // Not a target: how much of the first ratio is the SDK's and the server's hand-offs, with nothing in them.
    check(`the chain's no-op shape / empty, p50`, ratios.shape_to_empty.p50, '×', 'for reference', null),
  ];
  const plansPerS = (executed / wallMs) * 1000;
  const x = (r: number | null) => (r === null ? '—' : `${r.toFixed(1)}×`);
  const text = [
    `empty workflow  ${floor.length} serial                p50 ${ms(floorMs.p50)}  p99 ${ms(floorMs.p99)}`,
    `chain's shape   ${shape.length} serial, no-op ${CHAIN_SHAPE.locals}L+${CHAIN_SHAPE.regulars}R   p50 ${ms(shapeMs.p50)}  p99 ${ms(shapeMs.p99)}`,
    `direct calls    ${options.plans} serial, one process   p50 ${ms(directMs.p50)}  p99 ${ms(directMs.p99)}`,
    `chain           ${executed}/${options.plans} executed, ${options.concurrency} at a time, ${symbolCount} symbols, ` +
      `${Math.round(wallMs)} ms`,
    `                p50 ${ms(chainMs.p50)}  p95 ${ms(chainMs.p95)}  p99 ${ms(chainMs.p99)}  max ${ms(chainMs.max)}`,
    `                ${plansPerS.toFixed(1)} plans/s`,
    `chain / empty   p50 ${x(ratios.chain_to_empty.p50)}  p99 ${x(ratios.chain_to_empty.p99)}`,
    `shape / empty   p50 ${x(ratios.shape_to_empty.p50)}  p99 ${x(ratios.shape_to_empty.p99)}`,
    `chain / shape   p50 ${x(ratios.chain_to_shape.p50)}  p99 ${x(ratios.chain_to_shape.p99)}`,
    `chain / direct  p50 ${x(ratios.chain_to_direct.p50)}  p99 ${x(ratios.chain_to_direct.p99)}`,
    ...closingLines(integrity, checks),
  ];
  const report: BenchReport = {
    mode: 'side-by-side',
    ...where(b),
    ok: integrity.ok && executed === options.plans,
    plans: options.plans,
    concurrency: options.concurrency,
    symbols: symbolCount,
    executed,
    wall_ms: Math.round(wallMs),
    plans_per_s: round(plansPerS),
    empty_workflow_ms: { runs: floor.length, p50: floorMs.p50, p99: floorMs.p99 },
    chain_shape_ms: { runs: shape.length, ...CHAIN_SHAPE, p50: shapeMs.p50, p99: shapeMs.p99 },
    direct_calls_ms: { runs: direct.length, p50: directMs.p50, p99: directMs.p99 },
    latency_ms: chainMs,
    ratios,
    integrity,
    checks,
  };
  return { text, report };
}
