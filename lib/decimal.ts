import DecimalJs from 'decimal.js';

/**
 * Quantities and prices are exact decimals. 40 significant digits hold any exchange quantity (8 decimals)
 * with room to spare, so sums and differences never round.
 */
export const Dec = DecimalJs.clone({ precision: 40, rounding: DecimalJs.ROUND_HALF_EVEN, toExpNeg: -40, toExpPos: 40 });
export type Dec = InstanceType<typeof Dec>;

/** Plain decimal notation without exponent or trailing zeros: `0.062`, `-1.5`, `0`. */
export function formatDec(value: Dec): string {
  const text = value.toFixed();
  return text === '-0' ? '0' : text;
}

/** A stored amount that is not a decimal: retrying will not fix it, a person must. */
export class AmountError extends Error {
  override name = 'AmountError';
}

/** Reads a signed decimal string as stored in Redis; a missing value is zero. */
export function parseAmount(raw: string | null | undefined, what: string): Dec {
  if (raw === null || raw === undefined || raw === '') return new Dec(0);
  if (!/^[+-]?(\d+(\.\d*)?|\.\d+)$/.test(raw.trim())) {
    throw new AmountError(`${what} is not a decimal number: '${raw}'`);
  }
  return new Dec(raw.trim());
}
