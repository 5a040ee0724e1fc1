import type { LogMetadata } from '@temporalio/common';
import type { Redis } from 'ioredis';
import { Gauge, type Registry } from 'prom-client';
import type { ChainConfig } from '../lib/config';
import { ConnectionState, errorText, serverAway } from '../lib/connection-state';
import { explainRedisError } from '../lib/connections';
import type { Logger, SdkLineFilter } from '../lib/log';
import { redactUrl } from '../lib/redact';

/**
 * A process's two servers as it sees them (lib/connection-state.ts), and the filters that turn an outage's symptoms
 * (the SDK's failed polls and activities, the intake's and the position watcher's failed steps) into the two lines
 * of its state. Used by the worker, the intake and `dev` (its worker and intake in one process).
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
  /**
   * Asks both servers, from now until `close`, whether they answer: Redis a PING every second on the process's
   * shared connection (no answer within 2 s: "not answering", so that a hung Redis, which refuses nothing, is said
   * within 3 s), Temporal a GetSystemInfo every 10 s. A server that fails its check is lost, and back once it
   * answers again; the same checks tell a loss seen only in a failed step (the SDK's connections say nothing when
   * they recover).
   */
  watch(servers: { redis: Redis; temporal: TemporalService }): void;
  /** `permit_chain_{redis,temporal}_up` and `_last_success_timestamp_seconds`, this process's view, on `registry`. */
  register(registry: Registry): void;
  close(): void;
}

/** A Temporal connection, the client's or the worker's: enough to ask the frontend whether it answers. */
export interface TemporalService {
  withDeadline<T>(deadline: number, fn: () => Promise<T>): Promise<T>;
  workflowService: { getSystemInfo(request: object): Promise<unknown> };
}

/** Redis is asked this often whether it answers: a PING costs it nothing. */
const REDIS_EVERY_MS = 1_000;
/** A PING unanswered this long: Redis is hung or out of reach (a command of the chain's takes milliseconds). */
const REDIS_DEADLINE_MS = 2_000;
/** Temporal is asked less often: its losses show first in the SDK's failed polls, which the state hears. */
const TEMPORAL_EVERY_MS = 10_000;
/** Lenient: a busy frontend (a dev server on a small machine) is slow, not lost. */
const TEMPORAL_DEADLINE_MS = 10_000;
/** While a server fails its check, it is asked again this often, so that "back" comes within a second or so. */
const RECHECK_MS = 1_000;

/**
 * Asks a server `ask` every `everyMs`; an answer marks it answering (its state's last answer, `connectionUp`), a
 * failure or no answer within `deadlineMs` marks it down with why. One question at a time: a hung server's
 * unanswered PING is waited for (it is answered when the server resumes), not piled up. Returns the stop.
 */
function heartbeat(
  state: ConnectionState,
  ask: () => Promise<unknown>,
  options: { everyMs: number; deadlineMs: number; silence: string; why: (err: unknown) => string },
): () => void {
  let stopped = false;
  let next: NodeJS.Timeout | undefined;
  const schedule = (ms: number) => {
    if (stopped) return;
    next = setTimeout(tick, ms);
    next.unref();
  };
  function tick() {
    let settled = false;
    const late = setTimeout(() => {
      // The answer may be waiting in the socket behind a busy event loop (a bundle being built): I/O runs first.
      setImmediate(() => {
        if (!settled && !stopped) state.connectionDown('heartbeat', options.silence);
      });
    }, options.deadlineMs);
    late.unref();
    // Through a promise: a check that throws at once (a closed connection) is a failed check like any other.
    Promise.resolve()
      .then(ask)
      .then(
        () => {
          settled = true;
          clearTimeout(late);
          if (stopped) return;
          state.answered();
          state.connectionUp('heartbeat');
          schedule(options.everyMs);
        },
        (err: unknown) => {
          settled = true;
          clearTimeout(late);
          if (stopped) return;
          state.connectionDown('heartbeat', options.why(err));
          schedule(RECHECK_MS);
        },
      );
  }
  tick();
  return () => {
    stopped = true;
    clearTimeout(next);
  };
}

/** How long after a server is back a failed step is taken for a late report of the outage that ended. */
const LATE_SYMPTOM_MS = 3_000;

export function outagesOf(config: Pick<ChainConfig, 'redisUrl' | 'temporalAddress'>, logger: Logger): Outages {
  const log = (line: string, level: 'warn' | 'info') => logger[level](line);
  const redis = new ConnectionState(`Redis at ${redactUrl(config.redisUrl)}`, log);
  const temporal = new ConnectionState(`Temporal at ${config.temporalAddress}`, log);
  let temporalCheck: (() => Promise<unknown>) | undefined;
  let redisCheck: (() => Promise<unknown>) | undefined;
  const stops: (() => void)[] = [];
  const url = new URL(config.redisUrl);
  const redisAddress = `${url.hostname}:${url.port || '6379'}`;
  const mark = (text: string): boolean => {
    const away = serverAway(text, redisAddress);
    if (away === undefined) return false;
    const reason = (text.split('\n')[0] ?? '').slice(0, 160);
    // A step that failed during the outage and is reported just after it: quiet, and no new outage (a real one is
    // still seen by the next failed step, and by the heartbeat).
    if ((away === 'redis' ? redis : temporal).backWithin(LATE_SYMPTOM_MS)) return true;
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
    watch(servers) {
      redisCheck = () => servers.redis.ping();
      temporalCheck = () =>
        servers.temporal.withDeadline(Date.now() + TEMPORAL_DEADLINE_MS, () =>
          servers.temporal.workflowService.getSystemInfo({}),
        );
      stops.push(
        heartbeat(redis, redisCheck, {
          everyMs: REDIS_EVERY_MS,
          deadlineMs: REDIS_DEADLINE_MS,
          silence: `not answering (no reply to PING within ${REDIS_DEADLINE_MS / 1000} s)`,
          why: (err) => explainRedisError(err).line,
        }),
        heartbeat(temporal, temporalCheck, {
          everyMs: TEMPORAL_EVERY_MS,
          deadlineMs: TEMPORAL_DEADLINE_MS,
          silence: `not answering (no reply within ${TEMPORAL_DEADLINE_MS / 1000} s)`,
          why: (err) => temporalWhy(err),
        }),
      );
    },
    register(registry) {
      for (const [name, state] of [
        ['redis', redis],
        ['temporal', temporal],
      ] as const) {
        new Gauge({
          name: `permit_chain_${name}_up`,
          help: `1 while this process reaches ${state.server.split(' ')[0]}, 0 while it is lost (refused, closed, or not answering its check).`,
          registers: [registry],
          collect() {
            this.set(state.lost ? 0 : 1);
          },
        });
        new Gauge({
          name: `permit_chain_${name}_last_success_timestamp_seconds`,
          help: `When ${state.server.split(' ')[0]} last answered this process's check (Unix time, seconds; 0: never).`,
          registers: [registry],
          collect() {
            this.set((state.lastAnswerAt ?? 0) / 1000);
          },
        });
      }
    },
    close() {
      for (const stop of stops) stop();
      redis.close();
      temporal.close();
    },
  };
}

/** A failed check's error in a few words: `14 UNAVAILABLE: No connection established. Last error: connect …`. */
function temporalWhy(err: unknown): string {
  const text = (errorText(err).split('\n')[0] ?? '')
    .replace(/\b\w*Error: /g, '')
    .replace(/[.\s]*Resolution note:.*$/, '');
  return text.slice(0, 160);
}

function metaText(meta: LogMetadata | undefined): string {
  if (!meta) return '';
  const { error, failure } = meta as { error?: unknown; failure?: unknown };
  return [error, failure]
    .filter((e) => e !== undefined)
    .map(errorText)
    .join(' | ');
}
