import { createHash } from 'node:crypto';

/**
 * A value from outside, fit to copy into a log line, an error message or a stored record: unchanged when it is at
 * most `maxBytes` UTF-8 bytes; otherwise its first `maxBytes` bytes (never half a character) followed by
 * ` …[cut: N bytes, sha256 HEX]`, the full value's length in UTF-8 bytes and the SHA-256 of those bytes, so the
 * original can still be recognised (compared with the producer's copy) without being repeated.
 */
export function boundText(value: string, maxBytes = 512): string {
  const limit = Math.max(0, Math.floor(maxBytes));
  // A string of n UTF-16 units is at most 3n UTF-8 bytes: most values are decided without encoding them.
  if (value.length * 3 <= limit) return value;
  const bytes = Buffer.from(value, 'utf8');
  if (bytes.length <= limit) return value;
  let end = limit;
  // A byte 10xxxxxx continues the character before it: cut before that character's first byte instead.
  while (end > 0 && ((bytes[end] ?? 0) & 0xc0) === 0x80) end -= 1;
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  return `${bytes.subarray(0, end).toString('utf8')} …[cut: ${bytes.length} bytes, sha256 ${sha256}]`;
}
