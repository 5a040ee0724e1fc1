import { describe, expect, it } from 'vitest';
import type { ExchangeOrder, MarketOrderRequest } from './port';
import { fillPaperOrder } from './paper';
import { ledgerAfterFill } from '../ledger';
import { Dec } from '../../lib/decimal';
import type { Side } from '../../contract/types';

const NOW = 1_700_000_000_000;
const PLAN_ID = 'a1b2c3d4e5f60718';

describe('fillPaperOrder', () => {
  const request = (overrides: Partial<MarketOrderRequest> = {}): MarketOrderRequest => ({
    symbol: 'BTCUSDT',
    side: 'SELL',
    qty: '0.062',
    reduceOnly: true,
    clientOrderId: PLAN_ID,
    ...overrides,
  });

  it('fills a market order at the price, under the client order id', () => {
    const { order, newPosition } = fillPaperOrder(request(), new Dec('0.062'), '101.5', NOW);
    expect(order).toEqual<ExchangeOrder>({
      order_id: `paper-${PLAN_ID}`,
      client_order_id: PLAN_ID,
      symbol: 'BTCUSDT',
      side: 'SELL',
      qty: '0.062',
      reduce_only: true,
      status: 'FILLED',
      filled_qty: '0.062',
      avg_price: '101.5',
      placed_at: NOW,
    });
    expect(newPosition.toFixed()).toBe('0');
  });

  it('rejects a reduce-only order larger than the position and leaves the position as it was', () => {
    const position = new Dec('0.062');
    const { order, newPosition } = fillPaperOrder(request({ qty: '0.07' }), position, '101.5', NOW);
    expect(order).toEqual<ExchangeOrder>({
      order_id: `paper-${PLAN_ID}`,
      client_order_id: PLAN_ID,
      symbol: 'BTCUSDT',
      side: 'SELL',
      qty: '0.07',
      reduce_only: true,
      status: 'REJECTED',
      filled_qty: '0',
      avg_price: '0',
      reject_reason: 'reduce_only_rejected',
      placed_at: NOW,
    });
    expect(newPosition.toFixed()).toBe('0.062');
    expect(ledgerAfterFill(new Dec('0.062'), order).toFixed()).toBe('0.062');
  });

  it.each<[string, Side, string, boolean, string, ExchangeOrder['status'], string]>([
    ['reduce-only SELL larger than the long', 'SELL', '0.07', true, '0.062', 'REJECTED', '0.062'],
    ['reduce-only SELL 0.00000001 larger than the long', 'SELL', '0.06200001', true, '0.062', 'REJECTED', '0.062'],
    ['reduce-only SELL against a short', 'SELL', '0.01', true, '-0.05', 'REJECTED', '-0.05'],
    ['reduce-only BUY against a long', 'BUY', '0.01', true, '0.05', 'REJECTED', '0.05'],
    ['reduce-only SELL with no position', 'SELL', '0.01', true, '0', 'REJECTED', '0'],
    ['reduce-only SELL exactly the long', 'SELL', '0.062', true, '0.062', 'FILLED', '0'],
    ['reduce-only BUY exactly the short', 'BUY', '0.05', true, '-0.05', 'FILLED', '0'],
    ['BUY of 0.00000001', 'BUY', '0.00000001', false, '0.062', 'FILLED', '0.06200001'],
    ['SELL of part of the long', 'SELL', '0.1', false, '0.3', 'FILLED', '0.2'],
    ['SELL that flips a long to a short', 'SELL', '0.1', false, '0.062', 'FILLED', '-0.038'],
    ['BUY that flips a short to a long', 'BUY', '1', false, '-0.25', 'FILLED', '0.75'],
    ['BUY from no position', 'BUY', '0.5', false, '0', 'FILLED', '0.5'],
  ])('%s: %s %s (reduce-only %s) on %s is %s, position %s', (_n, side, qty, reduceOnly, position, status, after) => {
    const { order, newPosition } = fillPaperOrder(request({ side, qty, reduceOnly }), new Dec(position), '1', NOW);
    expect(order.status).toBe(status);
    expect(order.filled_qty).toBe(status === 'FILLED' ? qty : '0');
    expect(newPosition.toFixed()).toBe(after);
  });

  it('reports the filled quantity in canonical form', () => {
    const { order } = fillPaperOrder(request({ side: 'BUY', qty: '0.0620', reduceOnly: false }), new Dec(0), '1', NOW);
    expect(order.qty).toBe('0.0620');
    expect(order.filled_qty).toBe('0.062');
  });
});
