import { hostname } from 'node:os';
import type { WorkerIdentity } from '../contract/operations';
import { BINANCE_DEFAULT_BASE_URLS, type ChainConfig } from './config';

export type { WorkerIdentity } from '../contract/operations';

type VenueSettings = Pick<ChainConfig, 'exchange' | 'binance' | 'keyPrefix'>;

/** The exchange's host: Binance's base URL's host, or `redis` for the paper exchange (its state is in Redis). */
export function venueHost(config: VenueSettings): string {
  if (config.binance === null) return `redis (${config.keyPrefix}:exchange:paper:*)`;
  try {
    return new URL(config.binance.baseUrl).host;
  } catch {
    return config.binance.baseUrl.slice(0, 200);
  }
}

/**
 * True on Binance's live venue: `EXCHANGE=binance-usdm`, or a base URL on the live host whatever EXCHANGE says.
 * There an operation that moves money or resumes trading is signed, whatever TRADING_MODE says.
 */
export function liveVenue(config: VenueSettings): boolean {
  if (config.exchange === 'binance-usdm') return true;
  if (config.binance === null) return false;
  return venueHost(config) === new URL(BINANCE_DEFAULT_BASE_URLS['binance-usdm']).host;
}

export function workerIdentity(
  config: VenueSettings &
    Pick<ChainConfig, 'tradingMode' | 'temporalNamespace' | 'taskQueue' | 'workerDeployment' | 'workerVersioning'>,
  buildId: string,
): WorkerIdentity {
  return {
    exchange: config.exchange,
    host: venueHost(config),
    mode: config.tradingMode,
    key_prefix: config.keyPrefix,
    namespace: config.temporalNamespace,
    task_queue: config.taskQueue,
    worker: `${hostname()}:${process.pid}`,
    deployment:
      `${config.workerDeployment} build ${buildId} ` + (config.workerVersioning ? '(versioned)' : '(unversioned)'),
  };
}

/** One line naming who answered: `exchange binance-usdm-testnet at HOST, testnet mode, task queue Q (worker W)`. */
export function identityLine(id: WorkerIdentity): string {
  return (
    `answered by worker ${id.worker}: exchange ${id.exchange} at ${id.host}, ${id.mode} mode, key prefix ` +
    `${id.key_prefix}, task queue ${id.task_queue} in ${id.namespace}, deployment ${id.deployment}`
  );
}
