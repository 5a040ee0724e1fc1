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
  /** ms since epoch; injected so that tests can pin time. */
  clock: () => number;
}
