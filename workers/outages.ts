import type { LogMetadata } from '@temporalio/common';
import type { ChainConfig } from '../lib/config';
import { ConnectionState, errorText, serverAway } from '../lib/connection-state';
import type { Logger, SdkLineFilter } from '../lib/log';
import { redactUrl } from '../lib/redact';

/**
 * A process's two servers as it sees them (lib/connection-state.ts), and the filters that turn an outage's symptoms
 * (the SDK's failed polls and activities, the intake's and the position watcher's failed steps) into the two lines
 * of its state. Used by the worker and the intake processes.
 */
export interface Outages {
  redis: ConnectionState;
  temporal: ConnectionState;
  /** For the SDK's logger: leaves out a line that says a server is away, after marking that server lost. */
  quietSdk: SdkLineFilter;
  /**
   * For a line of the process's own (`intake: could not read (…)`): true when it says a server is away, which is
   * then marked lost (and the line is to be left out).
   */
  quietLine(line: string): boolean;
  /** How to tell that Temporal answers again (the SDK's connections say nothing when they recover). */
  temporalCheck(check: () => Promise<unknown>): void;
  /** How to tell that Redis answers again, for a loss seen only in a failed step. */
  redisCheck(check: () => Promise<unknown>): void;
  close(): void;
}

export function outagesOf(config: Pick<ChainConfig, 'redisUrl' | 'temporalAddress'>, logger: Logger): Outages {
  const log = (line: string, level: 'warn' | 'info') => logger[level](line);
  const redis = new ConnectionState(`Redis at ${redactUrl(config.redisUrl)}`, log);
  const temporal = new ConnectionState(`Temporal at ${config.temporalAddress}`, log);
  let temporalCheck: (() => Promise<unknown>) | undefined;
  let redisCheck: (() => Promise<unknown>) | undefined;
  const url = new URL(config.redisUrl);
  const redisAddress = `${url.hostname}:${url.port || '6379'}`;
  const mark = (text: string): boolean => {
    const away = serverAway(text, redisAddress);
    if (away === undefined) return false;
    const reason = (text.split('\n')[0] ?? '').slice(0, 160);
    if (away === 'redis') redis.connectionDown('steps', reason, redisCheck);
    else temporal.connectionDown('steps', reason, temporalCheck);
    return true;
  };
  return {
    redis,
    temporal,
    quietSdk: (level, message, meta) => {
      if (level !== 'WARN' && level !== 'ERROR') return false;
      return mark(`${message} ${metaText(meta)}`);
    },
    quietLine: (line) => mark(line),
    temporalCheck: (check) => (temporalCheck = check),
    redisCheck: (check) => (redisCheck = check),
    close() {
      redis.close();
      temporal.close();
    },
  };
}

function metaText(meta: LogMetadata | undefined): string {
  if (!meta) return '';
  const { error, failure } = meta as { error?: unknown; failure?: unknown };
  return [error, failure]
    .filter((e) => e !== undefined)
    .map(errorText)
    .join(' | ');
}
