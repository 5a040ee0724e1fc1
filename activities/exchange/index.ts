import type { Redis } from 'ioredis';
import { redisKeys } from '../../contract/keys';
import { ConfigError, type ChainConfig } from '../../lib/config';
import { createBinanceExchange } from './binance';
import { createPaperExchange } from './paper';
import type { ExchangePort } from './port';

export type { ExchangePort } from './port';
export { binanceClientOrderId } from './binance-wire';

/**
 * The exchange the chain trades on, as `EXCHANGE` names it: one factory for the worker and the client room. The
 * paper exchange lives in Redis; Binance USD-M futures (testnet or live) is reached at `config.binance.baseUrl`.
 */
export function exchangeFor(
  config: Pick<ChainConfig, 'keyPrefix' | 'exchange' | 'binance'>,
  redis: Redis,
  clock: () => number = Date.now,
): ExchangePort {
  const keys = redisKeys(config.keyPrefix);
  if (config.exchange === 'paper') return createPaperExchange(redis, keys, clock);
  // loadConfig refuses a Binance exchange without its settings; a hand-made config may still lack them.
  if (!config.binance) throw new ConfigError(`config: EXCHANGE=${config.exchange} needs its BINANCE_* settings`);
  return createBinanceExchange({ name: config.exchange, config: config.binance, redis, keys, clock });
}
