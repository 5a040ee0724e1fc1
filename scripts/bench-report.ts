/** The bench's figures: each beside its target (a check), the latency summary, and the units they print in. */
import { integrityLine, type IntegrityReport } from './bench-integrity';

/** A figure the bench prints beside its target: `pass` null when it could not be measured here. */
export interface Check {
  figure: string;
  value: number | null;
  unit: string;
  target: string;
  pass: boolean | null;
}

export interface BenchReport {
  mode: 'side-by-side' | 'sustained' | 'burst' | 'parked';
  run: string;
  /** Nothing lost or duplicated, every plan ended as it should: the exit code follows this, not the targets. */
  ok: boolean;
  checks: Check[];
  [figure: string]: unknown;
}

/** What a mode measured: lines for people, and the report (`--json`). */
export interface Measured {
  text: string[];
  report: BenchReport;
}

/** Issue 8's targets (this machine, embedded dev server), each printed beside the figure it judges. */
export const TARGET = {
  chainToEmptyP50: 2,
  chainToEmptyP99: 4,
  sustainedPlansPerS: 60,
  sustainedP99Ms: 1000,
  /** A burst drains in N × the serial chain's p50 plus this. */
  burstSlackMs: 5000,
  /** A burst twice as large drains in at most 2.2 times as long: linear, with 10 % slack. */
  burstLinearity: 1.1,
  allBlockedMs: 60_000,
  parkedCpuPercent: 15,
  parkedRssDrift: 0.1,
  parkedRssMiB: 500,
  fixToExecutedP50Ms: 1000,
};

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? NaN;
}

export const round = (n: number) => (Number.isFinite(n) ? Math.round(n * 10) / 10 : null);

/** p50/p95/p99/max of latencies in ms, to 0.1 ms; an unfinished run counts as Infinity (shown as null). */
export function latency(ms: readonly number[]) {
  const sorted = [...ms].sort((a, b) => a - b);
  return {
    p50: round(percentile(sorted, 50)),
    p95: round(percentile(sorted, 95)),
    p99: round(percentile(sorted, 99)),
    max: round(sorted[sorted.length - 1] ?? NaN),
  };
}

export const ms = (value: number | null) => (value === null ? '—' : `${value} ms`);
export const mib = (bytes: number) => Math.round(bytes / 1024 / 1024);

export function check(figure: string, value: number | null, unit: string, target: string, pass: boolean | null): Check {
  const decimals = unit === '×' ? 100 : 10;
  return { figure, value: value === null ? null : Math.round(value * decimals) / decimals, unit, target, pass };
}

export function atMost(figure: string, value: number | null, limit: number, unit: string): Check {
  return check(figure, value, unit, `≤ ${limit}${unit}`, value === null ? false : value <= limit);
}

export function checkLine(c: Check): string {
  const shown = c.value === null ? '—' : `${c.value}${c.unit}`;
  const mark = c.pass === null ? 'n/a' : c.pass ? 'PASS' : 'FAIL';
  return `  ${c.figure.padEnd(40)} ${shown.padStart(12)}   target ${c.target.padEnd(12)} ${mark}`;
}

export const msOrOver = (ms: number | null, timeoutMs: number) => (ms === null ? `> ${timeoutMs} ms` : `${ms} ms`);

/** The lines every mode ends with: nothing lost or duplicated, then each figure beside its target. */
export function closingLines(integrity: IntegrityReport, checks: readonly Check[]): string[] {
  return [`integrity       ${integrityLine(integrity)}`, 'targets', ...checks.map(checkLine)];
}
