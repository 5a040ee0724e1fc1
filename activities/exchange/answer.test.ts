import { describe, expect, it } from 'vitest';
import { checkOrderAnswer, type SentOrder } from './answer';
import type { ExchangeOrder } from './port';

const sent: SentOrder = { symbol: 'BTCUSDT', side: 'SELL', qty: '0.01', clientOrderId: 'a1b2c3d4e5f60718' };
const filled: ExchangeOrder = {
  order_id: '42',
  client_order_id: sent.clientOrderId,
  symbol: 'BTCUSDT',
  side: 'SELL',
  qty: '0.01',
  reduce_only: true,
  status: 'FILLED',
  filled_qty: '0.01',
  avg_price: '60000',
  placed_at: 1,
};

describe('checkOrderAnswer (an exchange answer against the order sent)', () => {
  it.each<[string, Partial<ExchangeOrder>]>([
    ['the order as sent, filled', {}],
    ['executed exactly the quantity sent, written differently', { filled_qty: '0.0100' }],
    ['a partial fill', { status: 'EXPIRED', filled_qty: '0.004' }],
    ['nothing executed, price 0, no order id', { status: 'REJECTED', filled_qty: '0', avg_price: '0', order_id: '' }],
    ['still open, nothing executed yet', { status: 'NEW', filled_qty: '0', avg_price: '0' }],
    ['the smallest fill', { filled_qty: '0.00000001', avg_price: '0.00000001' }],
  ])('believes %s', (_, change) => {
    expect(checkOrderAnswer(sent, { ...filled, ...change })).toEqual({ ok: true });
  });

  it.each<[string, Partial<ExchangeOrder>, RegExp]>([
    ['10x the quantity sent', { filled_qty: '0.1' }, /executed qty 0\.1 > 0\.01 sent/],
    ['one step over the quantity sent', { filled_qty: '0.01000001' }, /> 0\.01 sent/],
    ["over the quantity sent even when the answer's own origQty agrees", { qty: '1', filled_qty: '1' }, /> 0\.01/],
    ['a negative executed quantity', { filled_qty: '-0.01' }, /executed qty "-0\.01" is not a decimal >= 0/],
    ['an executed quantity that is not a number', { filled_qty: 'NaN' }, /executed qty "NaN"/],
    ['an infinite executed quantity', { filled_qty: 'Infinity' }, /executed qty "Infinity"/],
    ['an exponent', { filled_qty: '1e-2' }, /executed qty "1e-2"/],
    ['another symbol', { symbol: 'ETHUSDT' }, /symbol "ETHUSDT", sent BTCUSDT/],
    ['another side', { side: 'BUY' }, /side "BUY", sent SELL/],
    ['another client order id', { client_order_id: 'other' }, /client order id "other", sent a1b2c3d4e5f60718/],
    ['an unknown status', { status: 'WEIRD' as ExchangeOrder['status'] }, /status "WEIRD"/],
    ['a negative price', { avg_price: '-5' }, /avg price "-5" is not a decimal >= 0/],
    ['price 0 for a fill', { avg_price: '0' }, /avg price 0 for executed qty 0\.01/],
    ['a fill without an order id', { order_id: '' }, /no order id for a fill/],
  ])('refuses %s', (_, change, problem) => {
    const check = checkOrderAnswer(sent, { ...filled, ...change });
    expect(check.ok).toBe(false);
    expect(check.ok ? '' : check.problems.join('; ')).toMatch(problem);
  });

  it('names every problem of an answer wrong in several ways, each value bounded', () => {
    const check = checkOrderAnswer(sent, { ...filled, symbol: 'X'.repeat(10_000), side: 'BUY', avg_price: '-1' });
    expect(check.ok ? [] : check.problems).toHaveLength(3);
    expect(check.ok ? '' : check.problems.join('; ').length).toBeLessThan(400);
  });
});
