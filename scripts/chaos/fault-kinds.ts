/** The chaos run's fault kinds: what `--faults` takes (scripts/chaos/main.ts) and the run injects (chaos.ts). */
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
