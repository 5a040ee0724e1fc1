import type { KeyObject } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { ChainConfig } from '../lib/config';
import type { ExchangePort } from './exchange/port';

/** What every layer's activities are built over; the worker creates these once and hands them in. */
export interface ActivityDeps {
  redis: Redis;
  config: ChainConfig;
  exchange: ExchangePort;
  /** The approvers' Ed25519 public keys (lib/approval.ts loadApproverKeys), by name. */
  approverKeys: ReadonlyMap<string, KeyObject>;
  /**
   * How long Apply's once-only record lives, in seconds (activities/apply.ts applyRecordTtlS: the namespace's
   * retention + PLAN_MAX_AGE_S + a margin, learnt by the worker at start); null or absent: it never expires.
   */
  applyRecordTtlS?: number | null;
  /** ms since epoch; injected so that tests can pin time. */
  clock: () => number;
}
