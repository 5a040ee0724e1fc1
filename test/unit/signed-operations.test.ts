import { generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { MAX_DECISION_LIFE_MS, operationRefusal, signOperation, type SignedOperation } from '../../lib/approval';
import { loadConfig, type ChainConfig } from '../../lib/config';
import { liveVenue } from '../../lib/venue';

const olga = generateKeyPairSync('ed25519');
const other = generateKeyPairSync('ed25519');
const NOW = 1_800_000_000_000;
const rules = { operators: ['olga'], keys: new Map([['olga', olga.publicKey]]) };
const reconcile: SignedOperation = {
  operation: 'reconcile',
  by: 'olga',
  symbol: 'BTCUSDT',
  shown: { exchange: '0.062', raw: '0.002', before: '0.002', fills: [], orders: [] },
  expires_at: NOW + 60_000,
  nonce: '5f0c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b',
};

describe('a signed operation counts only as signed', () => {
  const signature = signOperation(reconcile, olga.privateKey);

  it("accepts olga's signature over exactly this operation, unexpired", () => {
    expect(operationRefusal(reconcile, signature, rules, NOW)).toEqual({ key: olga.publicKey });
  });

  it.each<[string, SignedOperation, string | undefined, string]>([
    ['another amount to set', { ...reconcile, shown: { exchange: '0.4' } }, undefined, 'does not verify'],
    ['another symbol', { ...reconcile, symbol: 'ETHUSDT' }, undefined, 'does not verify'],
    ['another operation', { ...reconcile, operation: 'kill_switch_off' }, undefined, 'does not verify'],
    ['another nonce', { ...reconcile, nonce: 'aaaaaaaaaaaaaaaaaaaa' }, undefined, 'does not verify'],
    ['a later expiry', { ...reconcile, expires_at: NOW + 120_000 }, undefined, 'does not verify'],
    ['a name not in OPERATORS', { ...reconcile, by: 'alice' }, undefined, 'alice is not in OPERATORS'],
    ['no signature', reconcile, '', 'unsigned'],
    ["another's key", reconcile, signOperation(reconcile, other.privateKey), "does not verify with olga's key"],
    ['no nonce', { ...reconcile, nonce: '' }, 'sign', 'no nonce'],
  ])('refuses %s', (_case, operation, given, why) => {
    const sig = given === 'sign' ? signOperation(operation, olga.privateKey) : (given ?? signature);
    const verdict = operationRefusal(operation, sig, rules, NOW);
    expect(verdict).toEqual({ refused: expect.stringContaining(why) as unknown });
  });

  it('refuses it at its expiry, and an expiry too far ahead', () => {
    expect(operationRefusal(reconcile, signature, rules, reconcile.expires_at)).toEqual({
      refused: expect.stringContaining('expired') as unknown,
    });
    const far = { ...reconcile, expires_at: NOW + MAX_DECISION_LIFE_MS + 1 };
    expect(operationRefusal(far, signOperation(far, olga.privateKey), rules, NOW)).toEqual({
      refused: expect.stringContaining('too far ahead') as unknown,
    });
  });
});

describe("Binance's live venue, whatever EXCHANGE says", () => {
  const venue = (exchange: string, baseUrl?: string) =>
    loadConfig({
      EXCHANGE: exchange,
      ...(exchange === 'paper' ? {} : { BINANCE_API_KEY: 'k', BINANCE_API_SECRET: 's' }),
      ...(baseUrl ? { BINANCE_BASE_URL: baseUrl } : {}),
    });
  it.each<[string, () => ChainConfig, boolean]>([
    ['paper', () => venue('paper'), false],
    ['the double', () => venue('binance-usdm-testnet', 'http://127.0.0.1:4100'), false],
    ["Binance's testnet", () => venue('binance-usdm-testnet'), false],
    ['binance-usdm', () => venue('binance-usdm'), true],
    ['testnet named, the live URL', () => venue('binance-usdm-testnet', 'https://fapi.binance.com'), true],
  ])('%s', (_case, config, live) => {
    expect(liveVenue(config())).toBe(live);
  });
});
