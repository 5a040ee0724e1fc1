import type { WorkflowHandle } from '@temporalio/client';
import { checkIntegrity, type BenchPlan } from './bench-integrity';
import { listeningPid, processName, sampleProcess, type ProcessSample } from './bench-proc';
import { TARGET, atMost, check, closingLines, latency, mib, msOrOver, round } from './bench-report';
import type { BenchReport, Measured } from './bench-report';
import {
  RPC_LANES,
  awaitOutcome,
  benchPlan,
  endOpen,
  inLanes,
  setPositions,
  sleep,
  startChain,
  symbolsOf,
  where,
} from './bench-runner';
import type { Bench, BenchOptions } from './bench-runner';
import type { ManagedProcess } from './stack/processes';

/** `--parked`: how often CPU and memory are sampled, and how often visibility is asked how many are blocked. */
const SAMPLE_EVERY_MS = 5_000;
const BLOCKED_POLL_MS = 500;
/** The paper exchange's position of a parked symbol: the ledger says 0, so P3.3 blocks every plan on it. */
const PARKED_EXCHANGE = '1';

/** Plans blocked alone on a symbol each, on which `--parked` times the ledger fix. */
const FIX_PROBES = 5;

/** How many of the bench's plans visibility lists as running and blocked. */
async function countBlocked(b: Bench): Promise<number> {
  const query = `TaskQueue = "${b.config.taskQueue}" AND ChainStage = "blocked" AND ExecutionStatus = "Running"`;
  return (await b.client.workflow.count(query)).count;
}

/** The Temporal server's pid: given, or the process listening on its port (the bench runs on loopback only). */
function serverPid(b: Bench, given: number | undefined): number | undefined {
  return given ?? listeningPid(Number(b.config.temporalAddress.split(':')[1]));
}

/** Average CPU of one core, in %, between two samples. */
const cpuPercent = (first: ProcessSample, last: ProcessSample) =>
  ((last.cpuMs - first.cpuMs) / (last.at - first.at)) * 100;

/**
 * `--parked`: N plans blocked by a ledger mismatch on their symbols, at rest for the window while the worker's and
 * the server's CPU and memory are sampled; then the ledger fix (a plain HSET of ledger_amount) on one symbol, and
 * the time until its plans are executed. The rest are cancelled.
 */
export async function parked(
  b: Bench,
  options: BenchOptions,
  count: number,
  symbolCount: number,
  worker: ManagedProcess,
): Promise<Measured> {
  const workerPid = worker.pid;
  if (workerPid === undefined) throw new Error('bench: the worker process is not running');
  const sampleWorker = () => sampleProcess(workerPid);
  const symbols = symbolsOf(symbolCount);
  await setPositions(b.redis, b.keys, symbols, { exchange: PARKED_EXCHANGE, ledger: '0' }, b.baseline);
  const pid = serverPid(b, options.serverPid);
  b.out.line(
    `bench: ${count} plans over ${symbolCount} symbols whose ledger disagrees with the exchange; blocked plans ` +
      `re-check every ${b.config.recheckIntervalS} s (RECHECK_INTERVAL_S); server ` +
      (pid ? `pid ${pid} (${processName(pid)})` : 'not found on this machine (--server-pid)'),
  );

  const started = performance.now();
  const handles: { record: BenchPlan; handle: WorkflowHandle }[] = [];
  await inLanes(count, Math.max(RPC_LANES, options.concurrency), async (i) => {
    handles.push(await startChain(b, benchPlan(b, symbols[i % symbolCount]!, `parked-${i}`)));
  });
  // The desk's incident among them: one plan blocked on a symbol of its own, for the fix to be timed on.
  const probeSymbols = Array.from({ length: FIX_PROBES }, (_, i) => `BENCHLONE${i}USDT`);
  await setPositions(b.redis, b.keys, probeSymbols, { exchange: PARKED_EXCHANGE, ledger: '0' }, b.baseline);
  const probes = await Promise.all(probeSymbols.map((symbol) => startChain(b, benchPlan(b, symbol, `lone-${symbol}`))));
  // Long enough for the target and for a slow chain to show how slow: 3 ms a plan over the target, 2 min at least.
  const blockedBy = Date.now() + Math.max(2 * TARGET.allBlockedMs, TARGET.allBlockedMs + 3 * count);
  let blocked = 0;
  let allBlockedMs: number | null = null;
  while (Date.now() < blockedBy) {
    blocked = await countBlocked(b);
    if (blocked >= count + FIX_PROBES) {
      blocked -= FIX_PROBES;
      allBlockedMs = performance.now() - started;
      break;
    }
    await sleep(BLOCKED_POLL_MS);
  }
  b.out.line(
    `bench: ${blocked}/${count} blocked${allBlockedMs === null ? ' when the wait ran out' : ` after ${Math.round(allBlockedMs)} ms`}; ` +
      `sampling CPU and memory for ${options.window / 1000} s`,
  );

  const workerSamples: ProcessSample[] = [];
  const firstWorker = sampleWorker();
  if (firstWorker) workerSamples.push(firstWorker);
  const server: ProcessSample[] = [];
  const first = pid ? sampleProcess(pid) : undefined;
  if (first) server.push(first);
  const windowEnd = performance.now() + options.window;
  while (performance.now() < windowEnd) {
    await sleep(Math.min(SAMPLE_EVERY_MS, windowEnd - performance.now()));
    const one = sampleWorker();
    if (one) workerSamples.push(one);
    const sample = pid ? sampleProcess(pid) : undefined;
    if (sample) server.push(sample);
  }
  if (workerSamples.length < 2) throw new Error(`bench: the worker process (pid ${workerPid}) ended while at rest`);
  const workerCpu = cpuPercent(workerSamples[0]!, workerSamples[workerSamples.length - 1]!);
  const serverCpu = server.length > 1 ? cpuPercent(server[0]!, server[server.length - 1]!) : null;
  const rss = workerSamples.map((s) => s.rssBytes);
  const [rssFirst, rssLast] = [rss[0]!, rss[rss.length - 1]!];
  const rssMax = Math.max(...rss);
  const rssDrift = Math.max(...rss.map((r) => Math.abs(r - rssFirst))) / rssFirst;

  // The ledger fix: the ledger set by hand to the exchange's amount, and nothing else (no retry, no reconcile). First
  // as in the desk's incident, one plan blocked on its symbol (each probe in turn, among all the parked plans), then
  // on a symbol where a hundred plans wait, which then run one at a time.
  const probeRuns: number[] = [];
  for (const probe of probes) {
    await b.redis.hset(b.keys.position(probe.record.symbol), 'ledger_amount', PARKED_EXCHANGE);
    b.baseline.set(probe.record.symbol, { exchange: PARKED_EXCHANGE, ledger: PARKED_EXCHANGE });
    const fixedAt = performance.now();
    const outcome = await awaitOutcome(b, probe.record, probe.handle, Date.now() + options.fixTimeout);
    probeRuns.push(outcome === 'executed' ? performance.now() - fixedAt : Infinity);
  }
  const fixMs = latency(probeRuns);
  const fixExecuted = probeRuns.filter(Number.isFinite).length;

  const fixSymbol = symbols[0]!;
  const fixed = handles.filter(({ record }) => record.symbol === fixSymbol);
  b.out.line(
    `bench: HSET ${b.keys.position(fixSymbol)} ledger_amount ${PARKED_EXCHANGE}; waiting for its ${fixed.length} plans`,
  );
  await b.redis.hset(b.keys.position(fixSymbol), 'ledger_amount', PARKED_EXCHANGE);
  b.baseline.set(fixSymbol, { exchange: PARKED_EXCHANGE, ledger: PARKED_EXCHANGE });
  const crowdFixedAt = performance.now();
  const fixDeadline = Date.now() + options.fixTimeout;
  const crowdRuns = await Promise.all(
    fixed.map(async ({ record, handle }) => {
      const outcome = await awaitOutcome(b, record, handle, fixDeadline);
      return outcome === 'executed' ? performance.now() - crowdFixedAt : Infinity;
    }),
  );
  const crowdMs = latency(crowdRuns);
  const crowdExecuted = crowdRuns.filter(Number.isFinite).length;

  b.out.line(`bench: cancelling the other ${b.open.size} plans`);
  const cancelWaitMs = Math.max(30_000, 30 * b.open.size);
  const terminated = await endOpen(b, { cancelFirst: true, waitMs: cancelWaitMs });
  const integrity = await checkIntegrity(b.redis, b.keys, b.plans, b.baseline);
  const outcomes: Record<string, number> = {};
  for (const plan of b.plans) outcomes[plan.outcome ?? 'none'] = (outcomes[plan.outcome ?? 'none'] ?? 0) + 1;

  const sum = serverCpu === null ? null : workerCpu + serverCpu;
  const checks = [
    atMost(`all ${count} blocked`, allBlockedMs, TARGET.allBlockedMs, ' ms'),
    check(
      'worker + server CPU, % of one core',
      sum ?? workerCpu,
      ' %',
      `≤ ${TARGET.parkedCpuPercent} %`,
      sum === null ? null : sum <= TARGET.parkedCpuPercent,
    ),
    atMost('worker RSS drift from first sample', rssDrift * 100, TARGET.parkedRssDrift * 100, ' %'),
    atMost('worker RSS max', mib(rssMax), TARGET.parkedRssMiB, ' MiB'),
    atMost(`fix → executed p50 (${probes.length} lone plans)`, fixMs.p50, TARGET.fixToExecutedP50Ms, ' ms'),
  ];
  const pct = (v: number | null) => (v === null ? '—' : `${v.toFixed(1)} %`);
  const text = [
    `parked          ${count} plans, ${symbolCount} symbols: ${blocked} blocked ` +
      (allBlockedMs === null ? 'when the wait ran out' : `after ${Math.round(allBlockedMs)} ms`),
    `at rest         ${Math.round((workerSamples[workerSamples.length - 1]!.at - workerSamples[0]!.at) / 1000)} s, a sample every ${SAMPLE_EVERY_MS / 1000} s: ` +
      `CPU worker (pid ${workerPid}) ${pct(workerCpu)}, server ${pct(serverCpu)}` +
      (pid ? ` (pid ${pid} ${processName(pid)})` : ' (server not found: --server-pid)') +
      `, sum ${pct(sum)} of one core` +
      (blocked < count ? ` (not at rest: ${count - blocked} plans were not blocked yet)` : ''),
    `                worker RSS first ${mib(rssFirst)} MiB, last ${mib(rssLast)} MiB, max ${mib(rssMax)} MiB` +
      (server.length > 0
        ? `; server RSS ${mib(server[0]!.rssBytes)} → ${mib(server[server.length - 1]!.rssBytes)} MiB`
        : ''),
    `ledger fix      ${fixExecuted}/${probes.length} lone plans (one a symbol) executed within ` +
      `${options.fixTimeout / 1000} s of their fix: p50 ${msOrOver(fixMs.p50, options.fixTimeout)}, ` +
      `max ${msOrOver(fixMs.max, options.fixTimeout)}`,
    `crowded fix     ${crowdExecuted}/${fixed.length} plans of ${fixSymbol} executed, one at a time: ` +
      `p50 ${msOrOver(crowdMs.p50, options.fixTimeout)}, last ${msOrOver(crowdMs.max, options.fixTimeout)}`,
    `ended           ${Object.entries(outcomes)
      .map(([outcome, n]) => `${n} ${outcome}`)
      .join(', ')}`,
    ...closingLines(integrity, checks),
  ];
  const report: BenchReport = {
    mode: 'parked',
    ...where(b),
    ok: integrity.ok,
    parked: count,
    symbols: symbolCount,
    recheck_interval_s: b.config.recheckIntervalS,
    blocked,
    all_blocked_ms: round(allBlockedMs ?? NaN),
    window_ms: options.window,
    server_pid: pid ?? null,
    worker_pid: workerPid,
    cpu_percent: { worker: round(workerCpu), server: round(serverCpu ?? NaN), sum: round(sum ?? NaN) },
    worker_rss_mib: {
      first: mib(rssFirst),
      last: mib(rssLast),
      max: mib(rssMax),
      drift_percent: round(rssDrift * 100),
    },
    server_rss_mib:
      server.length > 0 ? { first: mib(server[0]!.rssBytes), last: mib(server[server.length - 1]!.rssBytes) } : null,
    fix: { plans: probes.length, executed: fixExecuted, timeout_ms: options.fixTimeout, ms: fixMs },
    crowded_fix: { symbol: fixSymbol, plans: fixed.length, executed: crowdExecuted, ms: crowdMs },
    outcomes,
    terminated,
    integrity,
    checks,
  };
  return { text, report };
}
