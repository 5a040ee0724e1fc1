/** The double's state: its symbols and their rules, the positions it holds, the orders it took, and its clock. */
import { Dec, formatDec } from '../../lib/decimal';
import { invalidSymbol, missing } from './errors';
import type { DoubleOrder, DoublePosition, PositionSide, SymbolRules } from './types';

export interface SymbolState {
  rules: Required<SymbolRules>;
  markPrice: Dec;
}

export interface PositionState {
  amount: Dec;
  entryPrice: Dec;
  updateTime: number;
}

/** How many decimals a step (or a quantity) has, trailing zeros aside. */
export function decimals(step: string): number {
  const dot = step.indexOf('.');
  return dot < 0 ? 0 : step.slice(dot + 1).replace(/0+$/, '').length;
}

function completeRules(rules: SymbolRules): Required<SymbolRules> {
  return {
    maxQty: '1000000',
    marketMaxQty: rules.maxQty ?? '1000000',
    tickSize: '0.01',
    ...rules,
  };
}

const positionKey = (symbol: string, side: PositionSide) => `${symbol}|${side}`;

export class DoubleBook {
  readonly symbols = new Map<string, SymbolState>();
  /** Every order taken, in order: a lookup answers with the first under a client order id. */
  readonly orders: DoubleOrder[] = [];
  /** The sides a position is kept on: LONG and SHORT in hedge mode, else BOTH. */
  readonly positionSides: PositionSide[];
  private readonly positionBook = new Map<string, PositionState>();
  private nextOrderId = 1_000_001;

  constructor(
    readonly hedgeMode: boolean,
    /** Server time = local time + skewMs. */
    public skewMs: number,
    symbols: Record<string, SymbolRules & { markPrice: string }>,
  ) {
    this.positionSides = hedgeMode ? ['LONG', 'SHORT'] : ['BOTH'];
    for (const [symbol, { markPrice, ...rules }] of Object.entries(symbols)) {
      this.symbols.set(symbol, { rules: completeRules(rules), markPrice: new Dec(markPrice) });
    }
  }

  serverTime(): number {
    return Date.now() + this.skewMs;
  }

  /** A symbol's rules and mark price; Binance's -1102 without one, -1121 for one it does not list. */
  symbol(symbol: string | undefined): SymbolState {
    if (symbol === undefined) throw missing('symbol');
    const state = this.symbols.get(symbol);
    if (!state) throw invalidSymbol();
    return state;
  }

  setRules(symbol: string, rules: SymbolRules): void {
    const existing = this.symbols.get(symbol);
    this.symbols.set(symbol, { rules: completeRules(rules), markPrice: existing?.markPrice ?? new Dec(1) });
  }

  position(symbol: string, side: PositionSide): PositionState {
    return (
      this.positionBook.get(positionKey(symbol, side)) ?? {
        amount: new Dec(0),
        entryPrice: new Dec(0),
        updateTime: 0,
      }
    );
  }

  /** A position set by hand: entered at the mark price (none when flat). Returns the amount as held. */
  setPosition(symbol: string, side: PositionSide, amount: string): Dec {
    const { markPrice } = this.symbol(symbol);
    const value = new Dec(amount);
    this.positionBook.set(positionKey(symbol, side), {
      amount: value,
      entryPrice: value.isZero() ? new Dec(0) : markPrice,
      updateTime: this.serverTime(),
    });
    return value;
  }

  /** Moves a position by a fill: the entry price averages on increase, stays on decrease, resets on a flip. */
  applyFill(symbol: string, side: PositionSide, signedQty: Dec, price: Dec, now: number): void {
    const before = this.position(symbol, side);
    const amount = before.amount.add(signedQty);
    let entryPrice: Dec;
    if (amount.isZero()) entryPrice = new Dec(0);
    else if (before.amount.isZero() || amount.isNeg() !== before.amount.isNeg()) entryPrice = price;
    else if (amount.abs().gt(before.amount.abs())) {
      entryPrice = before.amount.abs().mul(before.entryPrice).add(signedQty.abs().mul(price)).div(amount.abs());
    } else entryPrice = before.entryPrice;
    this.positionBook.set(positionKey(symbol, side), { amount, entryPrice, updateTime: now });
  }

  takeOrderId(): number {
    return this.nextOrderId++;
  }

  /** A quantity as Binance prints it: padded to the symbol's step. */
  qtyText(symbol: string, value: Dec): string {
    return value.toFixed(decimals(this.symbols.get(symbol)?.rules.stepSize ?? '0.001'));
  }

  /** A price as Binance prints it: padded to the symbol's tick. */
  priceText(symbol: string, value: Dec): string {
    return value.toFixed(decimals(this.symbols.get(symbol)?.rules.tickSize ?? '0.01'));
  }

  /** Every position the double has held, flat ones too. */
  positionList(): DoublePosition[] {
    return [...this.positionBook].map(([key, { amount, entryPrice }]) => {
      const [symbol = '', positionSide = 'BOTH'] = key.split('|');
      return {
        symbol,
        positionSide: positionSide as PositionSide,
        positionAmt: formatDec(amount),
        entryPrice: formatDec(entryPrice),
      };
    });
  }
}
