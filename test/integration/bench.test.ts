import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../lib/config';
import { runTool } from '../../scripts/stack/cli-runner';
import { chainHarness, eventually, testEnv, type ChainHarness } from '../helpers';

// Sanity, not speed: the figures are there and hang together, plans end, keys go. The targets are for the README.
const env = testEnv();
let h: ChainHarness;
beforeAll(async () => {
  h = await chainHarness(loadConfig(env));
});
afterAll(() => h.close());

interface Check {
  figure: string;
  value: number | null;
  target: string;
  pass: boolean | null;
}

interface Report {
  mode: string;
  ok: boolean;
  task_queue: string;
  key_prefix: string;
  checks: Check[];
  [figure: string]: unknown;
}

async function bench(args: string[], extraEnv: Record<string, string> = {}): Promise<Report> {
  const run = await runTool('bench', [...args, '--json'], { ...env, ...extraEnv }, 120_000);
  expect(run.stderr).toBe('');
  expect(run.code).toBe(0);
  return JSON.parse(run.stdout) as Report;
}

/** Nothing of the run is left: no running workflow on its task queue, no key under its prefix. */
async function leftNothing(report: Report) {
  expect(await h.redis.keys(`${report.key_prefix}:*`)).toEqual([]);
  const running = `TaskQueue = "${report.task_queue}" AND ExecutionStatus = "Running"`;
  await eventually(async () => ((await h.client.workflow.count(running)).count === 0 ? true : undefined));
}

describe('the bench (npm run bench)', () => {
  it("prints the empty workflow, the chain's no-op shape, the direct calls and the chain side by side, with the ratios and their targets", async () => {
    const run = await runTool('bench', ['--plans', '4', '--concurrency', '1', '--symbols', '2'], env, 120_000);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const order = [
      /^empty workflow +4 serial +p50 [\d.]+ ms +p99 [\d.]+ ms$/m,
      /^chain's shape +4 serial, no-op 3L\+1R +p50 [\d.]+ ms +p99 [\d.]+ ms$/m,
      /^direct calls +4 serial, one process +p50 [\d.]+ ms +p99 [\d.]+ ms$/m,
      /^chain +4\/4 executed, 1 at a time, 2 symbols/m,
      /^ +p50 [\d.]+ ms +p95 [\d.]+ ms +p99 [\d.]+ ms +max [\d.]+ ms$/m,
      /^ +[\d.]+ plans\/s$/m,
      /^chain \/ empty +p50 [\d.]+× +p99 [\d.]+×$/m,
      /^shape \/ empty +p50 [\d.]+× +p99 [\d.]+×$/m,
      /^chain \/ shape +p50 [\d.]+× +p99 [\d.]+×$/m,
      /^chain \/ direct +p50 [\d.]+× +p99 [\d.]+×$/m,
      /^integrity +6 plans: 6 executed, 6 Apply entries, 6 orders, 2 symbols exchange = ledger = fills +ok$/m,
      /^targets$/m,
      /^ +chain \/ empty workflow, p50 +[\d.]+× +target ≤ 2× +(PASS|FAIL)$/m,
      /^ +chain \/ empty workflow, p99 +[\d.]+× +target ≤ 4× +(PASS|FAIL)$/m,
      /^ +the chain's no-op shape \/ empty, p50 +[\d.]+× +target for reference n\/a$/m,
    ];
    const at = order.map((pattern) => run.stdout.search(pattern));
    expect(
      at.every((i) => i >= 0),
      run.stdout,
    ).toBe(true);
    expect([...at].sort((a, b) => a - b)).toEqual(at);
  });

  it('--json: the ratios are the latencies divided, and the direct calls, empty workflow and shape are measured', async () => {
    const report = await bench(['--plans', '4', '--concurrency', '1', '--symbols', '2']);
    const floor = report.empty_workflow_ms as { runs: number; p50: number; p99: number };
    const shape = report.chain_shape_ms as { runs: number; locals: number; regulars: number; p50: number };
    const direct = report.direct_calls_ms as { runs: number; p50: number; p99: number };
    const chain = report.latency_ms as { p50: number; p99: number };
    const ratios = report.ratios as Record<
      'chain_to_empty' | 'shape_to_empty' | 'chain_to_shape' | 'chain_to_direct',
      { p50: number }
    >;
    expect(floor.runs).toBe(4);
    expect(shape).toMatchObject({ runs: 4, locals: 3, regulars: 1 });
    expect(ratios.shape_to_empty.p50).toBeCloseTo(shape.p50 / floor.p50, 1);
    expect(ratios.chain_to_shape.p50).toBeCloseTo(chain.p50 / shape.p50, 1);
    expect(direct.runs).toBe(4);
    expect(floor.p50).toBeGreaterThan(0);
    expect(direct.p50).toBeGreaterThan(0);
    expect(floor.p99).toBeGreaterThanOrEqual(floor.p50);
    expect(ratios.chain_to_empty.p50).toBeCloseTo(chain.p50 / floor.p50, 1);
    expect(ratios.chain_to_direct.p50).toBeCloseTo(chain.p50 / direct.p50, 1);
    expect(report.checks.map((c) => [c.figure, typeof c.pass])).toEqual([
      ['chain / empty workflow, p50', 'boolean'],
      ['chain / empty workflow, p99', 'boolean'],
      ["the chain's no-op shape / empty, p50", 'object'],
    ]);
    await leftNothing(report);
  });

  it('--duration: plans for the duration, all executed, nothing lost or duplicated', async () => {
    const report = await bench(['--duration', '2s', '--concurrency', '3', '--symbols', '2']);
    expect(report.mode).toBe('sustained');
    expect(report.started).toBeGreaterThan(0);
    expect(report.executed).toBe(report.started);
    expect(report.plans_per_s).toBeGreaterThan(0);
    expect(report.integrity).toMatchObject({ ok: true, apply_duplicated: 0, orders_unexpected: 0, symbols_off: [] });
    expect(report.checks.map((c) => c.figure)).toEqual([
      'plans/s sustained',
      'latency p99',
      'plans lost or duplicated (any kind)',
      'empty workflows/s, same lanes',
      "the chain's no-op shape/s, same lanes",
    ]);
    expect(report.checks[2]).toMatchObject({ value: 0, pass: true });
    // The floors ran in the same lanes, for the duration at most: measured, and not targets.
    for (const floor of [report.empty_workflow, report.chain_shape] as { per_s: number }[]) {
      expect(floor.per_s).toBeGreaterThan(0);
    }
    expect(report.checks.slice(3).map((c) => c.pass)).toEqual([null, null]);
    await leftNothing(report);
  });

  it('--burst: each burst drains, against N × the serial p50 + 5 s, and the larger against the smaller', async () => {
    const report = await bench(['--burst', '3,5']);
    expect(report.mode).toBe('burst');
    const serial = report.serial_ms as { p50: number };
    const bursts = report.bursts as { size: number; executed: number; drain_ms: number; target_ms: number }[];
    expect(bursts.map((b) => [b.size, b.executed])).toEqual([
      [3, 3],
      [5, 5],
    ]);
    for (const burst of bursts) {
      expect(burst.drain_ms).toBeGreaterThan(0);
      expect(burst.target_ms).toBeCloseTo(burst.size * serial.p50 + 5000, 0);
    }
    expect(report.checks.map((c) => [c.figure, c.target])).toEqual([
      ['burst 3: drain time', `≤ ${Math.round(bursts[0]!.target_ms)} ms`],
      ['burst 5: drain time', `≤ ${Math.round(bursts[1]!.target_ms)} ms`],
      ['burst 5 / burst 3 (linear)', '≤ 1.83×'],
    ]);
    expect(report.checks[2]!.value).toBeCloseTo(bursts[1]!.drain_ms / bursts[0]!.drain_ms, 1);
    expect(report.ok).toBe(true);
    await leftNothing(report);
  });

  it("--parked: all blocked, CPU and memory at rest, the ledger fix executes lone plans and a crowded symbol's, the rest cancelled", async () => {
    const report = await bench(['--parked', '6', '--symbols', '2', '--window', '2s', '--fix-timeout', '30s']);
    expect(report.mode).toBe('parked');
    expect(report.blocked).toBe(6);
    expect(report.all_blocked_ms).toBeGreaterThan(0);
    // The test's Temporal server runs on this machine, on loopback: the bench finds it by its port.
    expect(report.server_pid).toEqual(expect.any(Number));
    const cpu = report.cpu_percent as { worker: number; server: number; sum: number };
    expect(cpu.worker).toBeGreaterThanOrEqual(0);
    expect(cpu.server).toBeGreaterThanOrEqual(0);
    expect(cpu.sum).toBeCloseTo(cpu.worker + cpu.server, 0);
    // A worker process of its own, not the bench's: its pid is not the bench's, and it is gone afterwards.
    const workerPid = report.worker_pid as number;
    expect(workerPid).toEqual(expect.any(Number));
    expect(() => process.kill(workerPid, 0)).toThrow();
    const rss = report.worker_rss_mib as { first: number; last: number; max: number };
    expect(rss.first).toBeGreaterThan(0);
    expect(rss.max).toBeGreaterThanOrEqual(Math.max(rss.first, rss.last));
    // Woken by the position watcher, not by a re-check: RECHECK_INTERVAL_S is the default 30 s here.
    expect(report.fix).toMatchObject({ plans: 5, executed: 5 });
    expect((report.fix as { ms: { max: number } }).ms.max).toBeLessThan(30_000);
    expect(report.crowded_fix).toMatchObject({ symbol: 'BENCH0USDT', plans: 3, executed: 3 });
    expect(report.outcomes).toEqual({ executed: 8, cancelled: 3 });
    expect(report.integrity).toMatchObject({ ok: true, executed: 8, orders: 8, apply_entries: 11 });
    expect(report.checks.map((c) => c.figure)).toEqual([
      'all 6 blocked',
      'worker + server CPU, % of one core',
      'worker RSS drift from first sample',
      'worker RSS max',
      'fix → executed p50 (5 lone plans)',
    ]);
    await leftNothing(report);
  });

  it('--parked with a fix that cannot land in time reports it, and still ends every plan', async () => {
    // The position watcher wakes them within milliseconds, but not within one.
    const report = await bench(['--parked', '2', '--symbols', '1', '--window', '1s', '--fix-timeout', '1ms']);
    expect(report.fix).toMatchObject({ plans: 5, executed: 0, ms: { p50: null } });
    expect(report.checks[4]).toMatchObject({ value: null, pass: false });
    // Every plan ended: cancelled by the bench, or executed meanwhile (its fix landed, only later than 1 ms).
    const outcomes = report.outcomes as Record<string, number>;
    expect(Object.keys(outcomes).filter((o) => o !== 'cancelled' && o !== 'executed')).toEqual([]);
    expect((outcomes.cancelled ?? 0) + (outcomes.executed ?? 0)).toBe(7);
    expect(report.integrity).toMatchObject({ ok: true });
    await leftNothing(report);
  });

  it('refuses servers that are not on loopback, and starts nothing', async () => {
    const run = await runTool('bench', ['--burst', '5'], { ...env, REDIS_URL: 'redis://10.0.0.1:6379/0' });
    expect(run.code).toBe(2);
    expect(run.stderr).toBe('bench: runs on loopback servers only, not REDIS_URL redis://10.0.0.1:6379/0\n');
    expect(run.stdout).toBe('');
  });

  it('refuses two modes at once with one line', async () => {
    const run = await runTool('bench', ['--burst', '5', '--parked', '5'], env);
    expect(run.code).toBe(2);
    expect(run.stderr).toBe('bench: --duration, --burst and --parked are separate runs: give one\n');
  });
});
