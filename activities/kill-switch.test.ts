import { describe, expect, it } from 'vitest';
import { killSwitchOn } from './kill-switch';

describe('killSwitchOn (fails safe)', () => {
  it.each<[string | null, boolean]>([
    [null, false],
    ['0', false],
    ['1', true],
    ['true', true],
    ['on', true],
    ['', true],
    ['off', true],
    ['false', true],
    ['00', true],
    [' 0', true],
  ])('%j is %s', (raw, on) => {
    expect(killSwitchOn(raw)).toBe(on);
  });
});
