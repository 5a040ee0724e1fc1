import { createHash } from 'node:crypto';

/**
 * A value copied from outside (an exchange's answer, a stream field) cut to at most `maxBytes` UTF-8 bytes before it
 * is logged or stored, with its full length and SHA-256 appended so that the whole can still be recognised:
 * `text …[cut: N bytes, sha256 HEX]`. A value within the bound is returned as it is.
 */
export function boundText(value: string, maxBytes = 512): string {
  const bytes = Buffer.from(value, 'utf8');
  if (bytes.length <= maxBytes) return value;
  // Decoding a cut in the middle of a character leaves U+FFFD at the end: drop it.
  const head = bytes
    .subarray(0, maxBytes)
    .toString('utf8')
    .replace(/\uFFFD+$/, '');
  const sha = createHash('sha256').update(bytes).digest('hex');
  return `${head} …[cut: ${bytes.length} bytes, sha256 ${sha}]`;
}
