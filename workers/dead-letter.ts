import type { Redis, Result } from 'ioredis';
import { boundText } from '../lib/bound';

/** A refused entry's field names and values are kept cut to these lengths (UTF-8 bytes; lib/bound.ts). */
const NAME_BYTES = 64;
const VALUE_BYTES = 512;
/** The refused entry's fields, as JSON, stay within this; fields past it are counted, not kept. */
const ENTRY_BYTES = 2048;
/** The error is kept cut to this (its quoted values are cut already: lib/plan.ts). */
const ERROR_BYTES = 1024;

/**
 * Dead-letters one entry of the exit.plan stream: adds it to the dead-letter stream, capped near its length (`MAXLEN
 * ~`: Redis drops whole nodes of the oldest entries, so the stream holds at least the cap and at most one node more),
 * and acknowledges the entry, in one step. A failed XADD (a full Redis) stops the script before the XACK: the entry
 * stays pending and is taken again, never acknowledged without its dead letter.
 *
 * KEYS: dead-letter stream, exit.plan stream
 * ARGV: cap, consumer group, entry id, dead letter's field/value pairs...
 * Returns how many old dead letters the cap dropped.
 */
const DEAD_LETTER = `
local before = redis.call('XLEN', KEYS[1])
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, 4, #ARGV))
local after = redis.call('XLEN', KEYS[1])
redis.call('XACK', KEYS[2], ARGV[2], ARGV[3])
return before + 1 - after
`;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    deadLetterEntry(deadStream: string, stream: string, ...args: string[]): Result<number, Context>;
  }
}

export function defineDeadLetterScript(redis: Redis): void {
  redis.defineCommand('deadLetterEntry', { numberOfKeys: 2, lua: DEAD_LETTER });
}

/**
 * A refused entry's fields as the dead letter keeps them: a JSON object of its field/value pairs in the order
 * received (a field given twice appears twice), each name and value bounded, the whole within about 2 KiB; the
 * fields that did not fit are counted under the key `…`.
 */
export function boundedEntry(list: readonly string[]): string {
  const kept: string[] = [];
  let bytes = 2;
  let left = 0;
  for (let i = 0; i + 1 < list.length; i += 2) {
    const pair = `${JSON.stringify(boundText(list[i] ?? '', NAME_BYTES))}:${JSON.stringify(boundText(list[i + 1] ?? '', VALUE_BYTES))}`;
    const size = Buffer.byteLength(pair) + 1;
    if (bytes + size > ENTRY_BYTES) {
      left += 1;
      continue;
    }
    kept.push(pair);
    bytes += size;
  }
  if (left > 0) kept.push(`"…":${JSON.stringify(`${left} more field(s) not kept`)}`);
  return `{${kept.join(',')}}`;
}

export interface DeadLetter {
  /** The exit.plan entry's id. */
  originalId: string;
  /** Why it was refused, naming the field. */
  error: string;
  /** The entry's field/value list as read. */
  list: readonly string[];
  deadAt: Date;
}

/** The dead letter's fields: `original_id`, `error`, `entry` (JSON), `dead_at`; under 4 KiB whatever the entry held. */
export function deadLetterFields({ originalId, error, list, deadAt }: DeadLetter): string[] {
  return [
    'original_id',
    originalId,
    'error',
    boundText(error, ERROR_BYTES),
    'entry',
    boundedEntry(list),
    'dead_at',
    deadAt.toISOString(),
  ];
}
