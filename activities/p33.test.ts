import { describe, expect, it } from 'vitest';
import { decideP33 } from './p33';
import { Dec } from '../lib/decimal';
import type { Side } from '../contract/types';

describe('decideP33 (Position State Brain)', () => {
  const decide = (
    order: { side: Side; qty: string; reduce_only: boolean },
    exchange: string,
    ledger: string | Dec,
    tolerance: string,
  ) =>
    decideP33(order, {
      exchangeAmount: new Dec(exchange),
      ledgerAmount: typeof ledger === 'string' ? new Dec(ledger) : ledger,
      tolerance: new Dec(tolerance),
    });

  // A small reduce-only SELL that every long position below passes, so only the discrepancy decides.
  const smallSell = { side: 'SELL', qty: '0.001', reduce_only: true } as const;

  it.each<[string, string, string, boolean, string]>([
    ['exactly at the tolerance', '0.003', '0.002', true, '0.001'],
    ['0.00000001 above the tolerance', '0.00300001', '0.002', false, '0.00100001'],
    ['0.00000001 below the tolerance', '0.00299999', '0.002', true, '0.00099999'],
    ['exactly at the tolerance, ledger above the exchange', '0.001', '0.002', true, '0.001'],
    ['0.00000001 above the tolerance, ledger above the exchange', '0.001', '0.00200001', false, '0.00100001'],
    ['no discrepancy', '0.062', '0.062', true, '0'],
  ])('with a discrepancy %s (exchange %s, ledger %s, tolerance 0.001) allows: %s', (_n, ex, led, allow, diff) => {
    const decision = decide(smallSell, ex, led, '0.001');
    expect(decision.allow).toBe(allow);
    expect(decision.reason).toBe(allow ? 'positions_reconciled' : 'reconcile_required_qty_mismatch');
    expect(decision.discrepancy.toFixed()).toBe(diff);
  });

  it('denies the reported incident: exchange 0.062, ledger 0.002, SELL 0.062 reduce-only', () => {
    const decision = decide({ side: 'SELL', qty: '0.062', reduce_only: true }, '0.062', '0.002', '0.001');
    expect(decision.allow).toBe(false);
    expect(decision.reason).toBe('reconcile_required_qty_mismatch');
    expect(decision.discrepancy.toFixed()).toBe('0.06');
  });

  it('allows the incident once the ledger is reconciled to 0.062', () => {
    const decision = decide({ side: 'SELL', qty: '0.062', reduce_only: true }, '0.062', '0.062', '0.001');
    expect(decision).toMatchObject({ allow: true, reason: 'positions_reconciled' });
  });

  it.each<[string, Side, string, string, boolean, string]>([
    ['SELL against a short', 'SELL', '0.01', '-0.05', false, 'reduce_only_wrong_side'],
    ['BUY against a long', 'BUY', '0.01', '0.05', false, 'reduce_only_wrong_side'],
    ['SELL larger than the long', 'SELL', '0.07', '0.062', false, 'reduce_only_exceeds_position'],
    ['SELL 0.00000001 larger than the long', 'SELL', '0.06200001', '0.062', false, 'reduce_only_exceeds_position'],
    ['SELL exactly the long', 'SELL', '0.062', '0.062', true, 'positions_reconciled'],
    ['SELL part of the long', 'SELL', '0.02', '0.062', true, 'positions_reconciled'],
    ['BUY exactly the short', 'BUY', '0.05', '-0.05', true, 'positions_reconciled'],
    ['BUY larger than the short', 'BUY', '0.06', '-0.05', false, 'reduce_only_exceeds_position'],
    ['SELL with no position', 'SELL', '0.01', '0', false, 'reduce_only_exceeds_position'],
  ])('reduce-only %s', (_name, side, qty, position, allow, reason) => {
    const decision = decide({ side, qty, reduce_only: true }, position, position, '0');
    expect(decision.allow).toBe(allow);
    expect(decision.reason).toBe(reason);
  });

  it.each<[string, Side, string, string]>([
    ['SELL against a short', 'SELL', '0.01', '-0.05'],
    ['BUY against a long', 'BUY', '0.01', '0.05'],
    ['SELL larger than the long', 'SELL', '1', '0.062'],
    ['SELL with no position', 'SELL', '0.01', '0'],
  ])('not reduce-only, ignores the reduce-only checks: %s', (_name, side, qty, position) => {
    const decision = decide({ side, qty, reduce_only: false }, position, position, '0');
    expect(decision).toMatchObject({ allow: true, reason: 'positions_reconciled' });
  });

  it('not reduce-only, still denies a mismatch', () => {
    const decision = decide({ side: 'BUY', qty: '1', reduce_only: false }, '0.062', '0.002', '0.001');
    expect(decision).toMatchObject({ allow: false, reason: 'reconcile_required_qty_mismatch' });
  });

  it('compares 8-decimal quantities exactly where floats would not: exchange 0.3, ledger 0.1 + 0.2', () => {
    expect(0.1 + 0.2).not.toBe(0.3); // the float sum this test guards against
    const ledger = new Dec('0.1').add(new Dec('0.2'));
    const decision = decide({ side: 'SELL', qty: '0.3', reduce_only: true }, '0.3', ledger, '0');
    expect(decision.allow).toBe(true);
    expect(decision.reason).toBe('positions_reconciled');
    expect(decision.discrepancy.isZero()).toBe(true);
  });

  it.each<[string, string, string, boolean]>([
    ['12345678.12345678', '12345678.12345677', '0.00000001', true],
    ['12345678.12345678', '12345678.12345677', '0', false],
    ['0.00000001', '0', '0', false],
    ['0.00000001', '0', '0.00000001', true],
  ])('exchange %s, ledger %s, tolerance %s: allows %s', (exchange, ledger, tolerance, allow) => {
    expect(decide({ side: 'BUY', qty: '1', reduce_only: false }, exchange, ledger, tolerance).allow).toBe(allow);
  });
});
