import { toleranceFor, type ChainConfig } from '../lib/config';
import { Dec, formatDec, parseAmount } from '../lib/decimal';
import type { RedisKeys } from '../contract/keys';
import type { PositionSnapshot } from '../contract/types';
import type { Redis } from 'ioredis';
import type { ExchangePort } from './exchange/port';

/**
 * The exchange's and the ledger's amounts of a symbol, and the symbol's tolerance: what P3.3 compares. `ledger`: the
 * raw `ledger_amount` when the caller has read it already (null: absent), else read here beside the exchange's.
 */
export async function readPositions(
  deps: { redis: Redis; exchange: ExchangePort; config: ChainConfig; keys: RedisKeys },
  symbol: string,
  ledger?: string | null,
): Promise<{ exchangeAmount: Dec; ledgerAmount: Dec; tolerance: Dec }> {
  const [exchangeAmount, rawLedger] = await Promise.all([
    deps.exchange.getPosition(symbol),
    ledger !== undefined ? ledger : deps.redis.hget(deps.keys.position(symbol), 'ledger_amount'),
  ]);
  return {
    exchangeAmount,
    ledgerAmount: parseAmount(rawLedger, `ledger_amount of ${symbol}`),
    tolerance: new Dec(toleranceFor(deps.config, symbol)),
  };
}

export function snapshotOf(
  positions: { exchangeAmount: Dec; ledgerAmount: Dec; tolerance: Dec },
  takenAt: number,
): PositionSnapshot {
  return {
    exchange_amount: formatDec(positions.exchangeAmount),
    ledger_amount: formatDec(positions.ledgerAmount),
    tolerance: formatDec(positions.tolerance),
    taken_at: takenAt,
  };
}
