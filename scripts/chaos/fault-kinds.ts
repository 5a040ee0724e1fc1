/**
 * The chaos run's fault kinds, as `--faults` takes them: in a module of their own so that the CLI can check its
 * arguments without loading the run (scripts/chaos/chaos.ts, loaded lazily).
 */
export const FAULT_KINDS = [
  'worker-kill',
  'intake-kill',
  'worker-stop',
  'redis-kill',
  'temporal-restart',
  'double-lost-response',
  'double-5xx',
  'double-429',
] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];
