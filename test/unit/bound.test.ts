import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { boundText } from '../../lib/bound';

const sha256 = (text: string) => createHash('sha256').update(text, 'utf8').digest('hex');
const cut = (head: string, full: string) =>
  `${head} …[cut: ${Buffer.byteLength(full, 'utf8')} bytes, sha256 ${sha256(full)}]`;

describe('boundText', () => {
  it.each<[string, string, number, string]>([
    ['an empty value', '', 512, ''],
    ['a short value', 'SELL 0.062 BTCUSDT', 512, 'SELL 0.062 BTCUSDT'],
    ['a value of exactly the limit', 'a'.repeat(512), 512, 'a'.repeat(512)],
    ['a value one byte over the limit', 'a'.repeat(513), 512, cut('a'.repeat(512), 'a'.repeat(513))],
    ['multi-byte characters that fit in bytes', 'é'.repeat(8), 16, 'é'.repeat(8)],
    // 'é' is 2 bytes: 9 of them are 18 bytes; 16 bytes hold 8 whole ones.
    ['two-byte characters cut at a boundary', 'é'.repeat(9), 16, cut('é'.repeat(8), 'é'.repeat(9))],
    // '€' is 3 bytes: 16 bytes hold 5 whole ones (15 bytes), never half of the sixth.
    ['three-byte characters, never split', '€'.repeat(6), 16, cut('€'.repeat(5), '€'.repeat(6))],
    // '😀' is 4 bytes (a surrogate pair in JS): 6 bytes hold one.
    ['four-byte characters, never split', '😀😀', 6, cut('😀', '😀😀')],
    ['a limit below the first character', '😀😀', 3, cut('', '😀😀')],
    ['a limit of 0', 'ab', 0, cut('', 'ab')],
  ])('%s', (_case, value, maxBytes, expected) => {
    expect(boundText(value, maxBytes)).toBe(expected);
  });

  it('cuts a 1 MB value to at most 512 bytes plus its length and sha256', () => {
    const value = 'x'.repeat(1024 * 1024);
    const bounded = boundText(value);
    expect(bounded).toBe(`${'x'.repeat(512)} …[cut: 1048576 bytes, sha256 ${sha256(value)}]`);
    expect(Buffer.byteLength(bounded)).toBeLessThan(640);
  });

  it('never leaves a broken character at the cut, whatever the limit', () => {
    const value = 'aé€😀'.repeat(50);
    for (let limit = 0; limit <= 64; limit++) {
      const head = boundText(value, limit).split(' …[cut: ')[0] ?? '';
      expect(Buffer.byteLength(head)).toBeLessThanOrEqual(limit);
      expect(value.startsWith(head)).toBe(true);
      expect(head).not.toMatch(/\uFFFD|[\uD800-\uDBFF]$/);
      // No whole character was dropped: the next one would not have fit.
      const next = value.slice(head.length, head.length + (value.codePointAt(head.length)! > 0xffff ? 2 : 1));
      expect(Buffer.byteLength(head + next)).toBeGreaterThan(limit);
    }
  });
});
