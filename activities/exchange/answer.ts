import { Dec } from '../../lib/decimal';
import type { Side } from '../../contract/types';
import { ORDER_STATUSES, type ExchangeOrder } from './port';

/** What Execute sent: an answer is checked against this, never against its own fields (`origQty`). */
export interface SentOrder {
  symbol: string;
  side: Side;
  qty: string;
  clientOrderId: string;
}

export type AnswerCheck = { ok: true } | { ok: false; problems: string[] };

/** A plain non-negative decimal: digits, at most one point; no sign, exponent, spaces, Infinity or NaN. */
const PLAIN_DECIMAL = /^\d+(\.\d+)?$/;

/**
 * Whether an exchange's answer about an order can move the ledger, pure: the same symbol, side and client order id as
 * sent; a known status; the executed quantity a plain decimal with 0 ≤ executed ≤ the quantity sent; the average
 * price a plain decimal, > 0 when anything executed; an order id when anything executed (the fills record is keyed
 * by it). Every problem is named, with the values compared (each from the answer, bounded by the caller).
 */
export function checkOrderAnswer(sent: SentOrder, answer: ExchangeOrder): AnswerCheck {
  const problems: string[] = [];
  const show = (value: unknown) => JSON.stringify(String(value)).slice(0, 80);
  if (answer.symbol !== sent.symbol) problems.push(`symbol ${show(answer.symbol)}, sent ${sent.symbol}`);
  if (answer.side !== sent.side) problems.push(`side ${show(answer.side)}, sent ${sent.side}`);
  if (answer.client_order_id !== sent.clientOrderId) {
    problems.push(`client order id ${show(answer.client_order_id)}, sent ${sent.clientOrderId}`);
  }
  if (!(ORDER_STATUSES as readonly string[]).includes(answer.status)) problems.push(`status ${show(answer.status)}`);
  let executed: Dec | null = null;
  if (typeof answer.filled_qty !== 'string' || !PLAIN_DECIMAL.test(answer.filled_qty)) {
    problems.push(`executed qty ${show(answer.filled_qty)} is not a decimal >= 0`);
  } else {
    executed = new Dec(answer.filled_qty);
    if (executed.gt(new Dec(sent.qty))) problems.push(`executed qty ${answer.filled_qty} > ${sent.qty} sent`);
  }
  if (typeof answer.avg_price !== 'string' || !PLAIN_DECIMAL.test(answer.avg_price)) {
    problems.push(`avg price ${show(answer.avg_price)} is not a decimal >= 0`);
  } else if (executed !== null && !executed.isZero() && new Dec(answer.avg_price).isZero()) {
    problems.push(`avg price 0 for executed qty ${answer.filled_qty}`);
  }
  if (executed !== null && !executed.isZero() && !answer.order_id) problems.push('no order id for a fill');
  return problems.length === 0 ? { ok: true } : { ok: false, problems };
}

/**
 * The exchange's answer about a plan's order failed `checkOrderAnswer`, and so did a second look: it never reaches the
 * ledger (the fills record holds it `refused`). Its `name` is the failure type the plan fails with, not retried.
 */
export class ExchangeAnswerRefused extends Error {
  override name = 'exchange_answer_refused';
}
