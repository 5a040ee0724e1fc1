import { InvalidArgumentError } from 'commander';
import { SYMBOL_PATTERN } from '../lib/plan';

/** The CLI's argument parsers: each refuses a bad value with a message naming the rule (commander adds the name). */

const PLAN_ID = /^[0-9a-f]{16}$/;

export function planIdArg(value: string): string {
  if (!PLAN_ID.test(value)) throw new InvalidArgumentError('must be 16 lowercase hex characters');
  return value;
}

export function positiveInt(value: string): number {
  if (!/^\d+$/.test(value) || Number(value) < 1) throw new InvalidArgumentError('must be a whole number >= 1');
  return Number(value);
}

export function oneOf<T extends string>(allowed: readonly T[]) {
  return (value: string): T => {
    if (!(allowed as readonly string[]).includes(value))
      throw new InvalidArgumentError(`must be one of ${allowed.join(', ')}`);
    return value as T;
  };
}

/** A whole number from 1 to `max`: the bench's counts are bounded. */
export function upTo(max: number) {
  return (value: string): number => {
    const n = positiveInt(value);
    if (n > max) throw new InvalidArgumentError(`must be at most ${max}`);
    return n;
  };
}

/** `100,200`: sizes of 1 to 10000, in the order given. */
export function sizeList(value: string): number[] {
  return value.split(',').map((size) => {
    if (!/^\d+$/.test(size.trim()) || Number(size) < 1 || Number(size) > 10_000)
      throw new InvalidArgumentError('must be sizes from 1 to 10000, separated by commas, e.g. 100,200');
    return Number(size);
  });
}

export const HOUR = 3_600_000;

export function durationUpTo(max: number) {
  return (value: string): number => {
    const ms = durationArg(value);
    if (ms < 1 || ms > max) throw new InvalidArgumentError(`must be a duration from 1ms to ${max / 60_000}m`);
    return ms;
  };
}

const DURATION_UNIT_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

export function durationArg(value: string): number {
  const match = /^(\d+)(ms|s|m|h|d)$/.exec(value);
  if (!match) throw new InvalidArgumentError('must be a duration such as 30s, 5m or 2h');
  return Number(match[1]) * DURATION_UNIT_MS[match[2] as keyof typeof DURATION_UNIT_MS];
}

export function symbolArg(value: string): string {
  if (!SYMBOL_PATTERN.test(value))
    throw new InvalidArgumentError('must be an upper-case exchange symbol such as BTCUSDT');
  return value;
}
