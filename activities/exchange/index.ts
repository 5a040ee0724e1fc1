import type { Redis } from 'ioredis';
import { redisKeys } from '../../contract/keys';
import type { ChainConfig } from '../../lib/config';
import { createPaperExchange } from './paper';
import type { ExchangePort } from './port';

export type { ExchangePort } from './port';

/** The exchange the chain trades on, as `EXCHANGE` names it: one factory for the worker and the client room. */
export function exchangeFor(
  config: Pick<ChainConfig, 'keyPrefix' | 'exchange'>,
  redis: Redis,
  clock: () => number = Date.now,
): ExchangePort {
  return createPaperExchange(redis, redisKeys(config.keyPrefix), clock);
}
