import { describe, expect, it } from 'vitest';
import { boundedEntry, deadLetterFields } from '../../workers/dead-letter';

const MB = 1024 * 1024;
const bytesOf = (list: string[]) => list.reduce((sum, item) => sum + Buffer.byteLength(item), 0);

describe('the dead letter of a refused entry', () => {
  it('keeps a small entry whole, as JSON in the order received', () => {
    const list = ['action', 'EXECUTE', 'qty', ' 1', 'trace', 'abc'];
    expect(boundedEntry(list)).toBe('{"action":"EXECUTE","qty":" 1","trace":"abc"}');
  });

  it('keeps a field given twice twice', () => {
    expect(boundedEntry(['qty', '1', 'qty', '100'])).toBe('{"qty":"1","qty":"100"}');
  });

  it.each<[string, string[]]>([
    ['a 1 MB value', ['action', 'EXECUTE', 'qty', 'x'.repeat(MB)]],
    ['a 1 MB field name', ['n'.repeat(MB), '1']],
    ['a 1 MB value of control characters', ['reason', '\u0001'.repeat(MB)]],
    ['a thousand fields', Array.from({ length: 2000 }, (_, i) => `f${i}-${'v'.repeat(50)}`)],
    ['a 1 MB error', ['qty', '1']],
  ])('stays under 4 KiB with %s', (name, list) => {
    const error = name === 'a 1 MB error' ? `plan: qty ${'e'.repeat(MB)}` : 'plan: qty must be a decimal number';
    const fields = deadLetterFields({ originalId: '1700000000000-0', error, list, deadAt: new Date(0) });
    expect(bytesOf(fields)).toBeLessThan(4096);
    const entry = fields[fields.indexOf('entry') + 1] ?? '';
    expect(() => JSON.parse(entry) as unknown).not.toThrow();
    expect(Buffer.byteLength(entry)).toBeLessThanOrEqual(2048 + 64);
  });

  it('cuts a 1 MB value to 512 bytes with its length and sha256', () => {
    const entry = JSON.parse(boundedEntry(['qty', 'x'.repeat(MB)])) as Record<string, string>;
    expect(entry.qty).toMatch(/^x{512} …\[cut: 1048576 bytes, sha256 [0-9a-f]{64}\]$/);
  });

  it('counts the fields that did not fit', () => {
    const list = Array.from({ length: 200 }, (_, i) => [`field${i}`, 'v'.repeat(100)]).flat();
    const entry = JSON.parse(boundedEntry(list)) as Record<string, string>;
    const kept = Object.keys(entry).filter((key) => key !== '…').length;
    expect(kept).toBeGreaterThan(5);
    expect(entry['…']).toBe(`${200 - kept} more field(s) not kept`);
  });
});
