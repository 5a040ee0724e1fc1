import type { Redis } from 'ioredis';
import type { ChainConfig } from '../lib/config';
import type { ExchangePort } from './exchange/port';

/** What every layer's activities are built over; the worker creates these once and hands them in. */
export interface ActivityDeps {
  redis: Redis;
  config: ChainConfig;
  exchange: ExchangePort;
  /** ms since epoch; injected so that tests can pin time. */
  clock: () => number;
}
