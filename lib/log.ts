import { hostname } from 'node:os';
import type { Writable } from 'node:stream';
import type { LogLevel, LogMetadata, Logger as SdkLogger } from '@temporalio/common';
import { pino, stdTimeFunctions, type DestinationStream, type Logger } from 'pino';
import pretty from 'pino-pretty';
import { planWorkflowId } from '../contract/messages';
import type { TelemetryConfig } from './config';
import { redactUrl } from './redact';

export type { Logger } from 'pino';

/** A plan's workflow id is `plan-{plan_id}` (contract/messages.ts): the plan id, or undefined for another id. */
export function planIdOf(workflowId: string): string | undefined {
  const planId = /^plan-([0-9a-f]{16})$/.exec(workflowId)?.[1];
  return planId !== undefined && planWorkflowId(planId) === workflowId ? planId : undefined;
}

/** The fields every line about a plan carries: `plan_id` and `workflow_id`. */
export function planFields(planId: string): { plan_id: string; workflow_id: string } {
  return { plan_id: planId, workflow_id: planWorkflowId(planId) };
}

/** Field names whose values are credentials whatever they hold. */
const SECRET_FIELD = /pass(word)?|secret|api_?key|token|authorization|credential/i;

/** Deep enough for an error's cause and the SDK's metadata; deeper structures are summarised. */
const MAX_DEPTH = 4;

/**
 * A log record with nothing a credential could hide in: URLs lose their user and password (lib/redact.ts), fields
 * named like credentials lose their value, errors become their type, message and stack, redacted alike.
 */
export function redactFields(value: unknown, depth = 0): unknown {
  if (typeof value === 'string') return redactUrl(value);
  if (value === null || typeof value !== 'object') return typeof value === 'bigint' ? String(value) : value;
  if (depth >= MAX_DEPTH) return '[…]';
  if (value instanceof Error) {
    const error: Record<string, unknown> = {
      type: value.name,
      message: redactUrl(value.message),
      ...(value.stack ? { stack: redactUrl(value.stack) } : {}),
    };
    if (value.cause !== undefined) error.cause = redactFields(value.cause, depth + 1);
    return error;
  }
  if (Array.isArray(value)) return value.map((item) => redactFields(item, depth + 1));
  if (typeof (value as { toJSON?: unknown }).toJSON === 'function') {
    return redactFields((value as { toJSON: () => unknown }).toJSON(), depth + 1);
  }
  const out: Record<string, unknown> = {};
  for (const [key, field] of Object.entries(value)) {
    out[key] = SECRET_FIELD.test(key) ? '***' : redactFields(field, depth + 1);
  }
  return out;
}

export interface LoggerOptions {
  level?: TelemetryConfig['logLevel'];
  /** `json`: one JSON object a line; `pretty`: readable lines; `auto` (default): pretty on a terminal, else JSON. */
  format?: 'json' | 'pretty' | 'auto';
  /** Where lines go; default stdout. */
  stream?: Writable & { isTTY?: boolean };
  /** Fields on every line, e.g. `{ component: 'worker' }`. */
  base?: Record<string, unknown>;
}

/**
 * The one logger of a process: the chain's own lines and, through {@link sdkLogger}, the Temporal SDK's. JSON lines
 * (level, ISO time, msg, fields) for a log collector; readable lines when a person watches a terminal. Nothing
 * written carries a credential: messages and fields pass through {@link redactFields}.
 */
export function createLogger(options: LoggerOptions = {}): Logger {
  const stream = options.stream ?? process.stdout;
  const format = options.format ?? 'auto';
  const readable = format === 'pretty' || (format === 'auto' && stream.isTTY === true);
  const destination: DestinationStream = readable
    ? pretty({
        destination: stream,
        colorize: stream.isTTY === true,
        sync: true,
        translateTime: 'SYS:HH:MM:ss.l',
        ignore: 'pid,hostname,component',
        singleLine: true,
      })
    : stream === process.stdout
      ? pino.destination({ dest: 1, sync: true })
      : stream;
  return pino(
    {
      level: options.level ?? 'info',
      base: { pid: process.pid, hostname: hostname(), ...options.base },
      timestamp: stdTimeFunctions.isoTime,
      // Errors are made plain (and redacted) by the log formatter below, which runs first.
      serializers: { err: (value: unknown) => value },
      formatters: {
        level: (label) => ({ level: label }),
        log: (record) => redactFields(record) as Record<string, unknown>,
      },
      hooks: {
        // The message itself: an error's text may carry a connection URL.
        logMethod(args, method) {
          method.apply(
            this,
            args.map((arg) => (typeof arg === 'string' ? redactUrl(arg) : arg)) as Parameters<typeof method>,
          );
        },
      },
    },
    destination,
  );
}

const SDK_LEVELS: Record<LogLevel, 'trace' | 'debug' | 'info' | 'warn' | 'error'> = {
  TRACE: 'trace',
  DEBUG: 'debug',
  INFO: 'info',
  WARN: 'warn',
  ERROR: 'error',
};

/**
 * The SDK's metadata as the chain's fields: a plan's workflow id becomes `workflow_id` and `plan_id` (the SDK names it
 * `workflowId` on workflow and activity lines), the run id `run_id`; symbol keys (the SDK's own timestamp) go.
 */
function sdkFields(meta: LogMetadata | undefined): Record<string, unknown> {
  if (!meta) return {};
  const { workflowId, runId, workflowRunId, ...rest } = meta as Record<string, unknown>;
  const fields: Record<string, unknown> = { ...rest };
  if (typeof workflowId === 'string') {
    fields.workflow_id = workflowId;
    const planId = planIdOf(workflowId);
    if (planId !== undefined) fields.plan_id = planId;
  }
  const run = runId ?? workflowRunId;
  if (typeof run === 'string') fields.run_id = run;
  return fields;
}

/** Says whether one of the SDK's lines is to be left out (true), e.g. a symptom of an outage already reported. */
export type SdkLineFilter = (level: LogLevel, message: string, meta: LogMetadata | undefined) => boolean;

/**
 * The SDK's own lines below WARN, from its `worker` and `core` parts: worker states, "no Nexus services", the workflow
 * bundle's webpack report. A person at `dev` needs none of them; the chain's own lines from workflows and activities
 * (`sdkComponent` workflow, activity) stay, and so does anything the SDK warns about.
 */
export const sdkOwnInfo: SdkLineFilter = (level, _message, meta) =>
  level !== 'WARN' && level !== 'ERROR' && (meta?.sdkComponent === 'worker' || meta?.sdkComponent === 'core');

/**
 * The SDK's logger interface (`Runtime.install({ logger })`) over the process's logger. `quiet` leaves out the lines
 * it says are to be left out (lib/connection-state.ts: an outage is two lines, not a stack trace per retry).
 */
export function sdkLogger(logger: Logger, quiet?: SdkLineFilter): SdkLogger {
  // The SDK's own metadata names its part (`sdkComponent`: worker, workflow, activity, core).
  const log = (level: LogLevel, message: string, meta?: LogMetadata) => {
    if (quiet?.(level, message, meta)) return;
    logger[SDK_LEVELS[level] ?? 'info'](sdkFields(meta), message);
  };
  return {
    log,
    trace: (message, meta) => log('TRACE', message, meta),
    debug: (message, meta) => log('DEBUG', message, meta),
    info: (message, meta) => log('INFO', message, meta),
    warn: (message, meta) => log('WARN', message, meta),
    error: (message, meta) => log('ERROR', message, meta),
  };
}

/** A `(line) => void` callback, as the processes' older parts take, writing to the logger at a level. */
export function lineLogger(logger: Logger, level: 'info' | 'warn' | 'error' = 'info'): (line: string) => void {
  return (line) => logger[level](line);
}
