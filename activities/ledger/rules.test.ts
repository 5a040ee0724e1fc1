import { describe, expect, it } from 'vitest';
import type { ExchangeOrder } from '../exchange/port';
import { ledgerAfterFill, orderAudit, settleUnappliedFill, type Fill, type Settlement } from '.';
import { Dec } from '../../lib/decimal';
import type { Side } from '../../contract/types';

describe('ledgerAfterFill', () => {
  const order = (side: Side, status: ExchangeOrder['status'], filledQty: string) => ({
    side,
    status,
    filled_qty: filledQty,
  });

  it.each<[string, Side, ExchangeOrder['status'], string, string]>([
    ['0.002', 'BUY', 'FILLED', '0.06', '0.062'],
    ['0.062', 'SELL', 'FILLED', '0.062', '0'],
    ['0', 'SELL', 'FILLED', '0.5', '-0.5'],
    ['-0.5', 'BUY', 'FILLED', '0.2', '-0.3'],
    ['0.1', 'BUY', 'FILLED', '0.2', '0.3'],
    ['12345678.12345678', 'SELL', 'FILLED', '0.00000001', '12345678.12345677'],
    ['0.062', 'SELL', 'REJECTED', '0', '0.062'],
    ['0.062', 'SELL', 'EXPIRED', '0', '0.062'],
    ['0.062', 'SELL', 'EXPIRED', '0.031', '0.031'],
    ['0.062', 'SELL', 'CANCELED', '0.001', '0.061'],
    ['-0.5', 'BUY', 'EXPIRED', '0.25', '-0.25'],
  ])('ledger %s after %s %s of %s is %s', (ledger, side, status, filledQty, expected) => {
    const after = ledgerAfterFill(new Dec(ledger), order(side, status, filledQty));
    expect(after.toFixed()).toBe(expected);
    expect(after.eq(new Dec(expected))).toBe(true);
  });
});

describe('settleUnappliedFill (a fill recorded but not in the ledger)', () => {
  const fill = (side: Side, filledQty: string): Fill => ({ side, filled_qty: filledQty });
  const sell1 = fill('SELL', '1');

  it.each<[string, string, Fill, string | null, Settlement]>([
    ['ledger still at its value before the fill', '5', sell1, '5', { kind: 'apply', ledger: '4' }],
    ['same value written differently', '5', sell1, '5.000', { kind: 'apply', ledger: '4' }],
    ['a BUY from a short position', '-0.5', fill('BUY', '0.2'), '-0.5', { kind: 'apply', ledger: '-0.3' }],
    ['an absent ledger before and now is zero', '', fill('BUY', '0.062'), null, { kind: 'apply', ledger: '0.062' }],
    ['smallest fill, unchanged ledger', '0', fill('BUY', '0.00000001'), '0', { kind: 'apply', ledger: '0.00000001' }],
    ['hand-set to the value after the fill', '5', sell1, '4', { kind: 'counted' }],
    ['hand-set to the value after, written differently', '5', sell1, '4.0', { kind: 'counted' }],
    ['hand-set after the smallest fill', '0', fill('BUY', '0.00000001'), '0.00000001', { kind: 'counted' }],
    ['the fill the other way round is not this fill', '5', sell1, '6', { kind: 'conflict' }],
    ['one satoshi short of the value after', '5', sell1, '4.00000001', { kind: 'conflict' }],
    ['one satoshi past the value after', '5', sell1, '3.99999999', { kind: 'conflict' }],
    ['one satoshi off the value before', '5', sell1, '5.00000001', { kind: 'conflict' }],
    ['anything else', '5', sell1, '7', { kind: 'conflict' }],
    ['the value before is not known', 'abc', sell1, '4', { kind: 'conflict' }],
    ['ledger not a decimal', '5', sell1, 'abc', { kind: 'corrupt' }],
    ['ledger not a decimal, value before unknown', 'abc', sell1, 'abc', { kind: 'corrupt' }],
    ['ledger a number Redis might hold but we do not read', '5', sell1, '1e3', { kind: 'corrupt' }],
    ['an order that executed nothing has nothing to apply', '5', fill('SELL', '0'), '7', { kind: 'counted' }],
    ['one that executed nothing, even on a corrupt ledger', '5', fill('SELL', '0.000'), 'abc', { kind: 'counted' }],
    ['a partial fill (EXPIRED) applies what executed', '5', fill('SELL', '0.4'), '5', { kind: 'apply', ledger: '4.6' }],
  ])('%s: before %s, ledger now %s', (_case, before, filled, current, expected) => {
    expect(settleUnappliedFill(before, filled, current)).toEqual(expected);
  });
});

describe('orderAudit (how an order ended, for the audit stream)', () => {
  const order = (status: ExchangeOrder['status'], filled: string, reject_reason?: string): ExchangeOrder => ({
    order_id: '7',
    client_order_id: 'p-1',
    symbol: 'BTCUSDT',
    side: 'SELL',
    qty: '0.062',
    reduce_only: true,
    status,
    filled_qty: filled,
    avg_price: filled === '0' ? '0' : '60000',
    placed_at: 1,
    ...(reject_reason ? { reject_reason } : {}),
  });

  it.each<[ExchangeOrder, string, string]>([
    [order('FILLED', '0.062'), 'executed', 'filled 0.062 @ 60000'],
    [order('EXPIRED', '0.031'), 'partially_executed', 'EXPIRED, filled 0.031 @ 60000 of 0.062'],
    [order('CANCELED', '0.001'), 'partially_executed', 'CANCELED, filled 0.001 @ 60000 of 0.062'],
    [order('EXPIRED', '0'), 'order_rejected', 'EXPIRED, nothing filled of 0.062'],
    [
      order('REJECTED', '0', 'binance -2022: ReduceOnly Order is rejected.'),
      'order_rejected',
      'REJECTED, nothing filled of 0.062: binance -2022: ReduceOnly Order is rejected.',
    ],
  ])('%o → %s', (ended, decision, reason) => {
    expect(orderAudit(ended)).toEqual({ decision, reason });
  });
});
