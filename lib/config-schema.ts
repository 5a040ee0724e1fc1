import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { Dec } from './decimal';
import { redactUrl } from './redact';

/**
 * The environment's schema: every variable the chain reads, each checked alone, with the error that names it.
 * What needs several variables at once (TLS pairs, Binance credentials) is config-credentials.ts; the config the
 * processes use is config.ts.
 */

const seconds = (fallback: number, max?: number) =>
  z
    .string()
    .default(String(fallback))
    .transform((raw, ctx) => {
      const value = Number(raw);
      if (!/^\d+$/.test(raw.trim()) || !Number.isSafeInteger(value) || value <= 0) {
        ctx.addIssue({ code: 'custom', message: 'must be a whole number of seconds > 0' });
        return z.NEVER;
      }
      if (max !== undefined && value > max) {
        ctx.addIssue({ code: 'custom', message: `must be at most ${max} seconds` });
        return z.NEVER;
      }
      return value;
    });

/**
 * The longest a plan may live (30 days). A plan is an exit decision taken at one moment: weeks later it is no longer
 * that decision and should be planned again. The bound also keeps a unit slip (milliseconds typed for seconds: 3600000
 * is 41 days) from leaving plans waiting for months, and bounds how long a plan's carried state lives in Redis.
 */
export const PLAN_MAX_AGE_LIMIT_S = 30 * 24 * 3600;

/**
 * A waiting plan continues as new before its history reaches this many events: far below Temporal's limit (51,200)
 * and its warning (10,240), and small enough that a plan evicted from the worker's cache replays in milliseconds.
 */
export const CONTINUE_AS_NEW_EVENTS_DEFAULT = 2000;
/** A run needs some 20 events to reach its first wait; below this a plan would do little but continue. */
const CONTINUE_AS_NEW_EVENTS_MIN = 200;
const CONTINUE_AS_NEW_EVENTS_MAX = 10_000;
/** A dead letter is at most 4 KiB: ten million of them are 40 GB, more than a Redis beside a trading system holds. */
const DEAD_LETTER_MAXLEN_MAX = 10_000_000;

/** More distinct approvers than this is no desk's rule, and more than an Ed25519 key folder is meant to hold. */
const APPROVAL_QUORUM_MAX = 20;

/** The fewest entries a stream's cap may keep: a smaller cap would drop what a plan still being looked at wrote. */
export const STREAM_CAP_MIN = 1000;

/** A stream's length cap (`XTRIM … MAXLEN ~`): a whole number of entries, at least {@link STREAM_CAP_MIN}. */
const streamCap = (fallback: number) =>
  z
    .string()
    .default(String(fallback))
    .refine((raw) => /^\d+$/.test(raw.trim()) && Number(raw) >= STREAM_CAP_MIN && Number.isSafeInteger(Number(raw)), {
      message: `must be a whole number of entries >= ${STREAM_CAP_MIN}`,
    })
    .transform(Number);

/** A comma-separated list of names, blanks dropped; empty by default. */
const nameList = z
  .string()
  .default('')
  .transform((raw) =>
    raw
      .split(',')
      .map((name) => name.trim())
      .filter((name) => name !== ''),
  );

/** A switch that is off unless set to `true`. */
const switchOff = z
  .enum(['true', 'false'], { message: "must be 'true' or 'false'" })
  .default('false')
  .transform((raw) => raw === 'true');

export const decimalString = (fallback: string) =>
  z
    .string()
    .default(fallback)
    .refine((raw) => /^(\d+(\.\d*)?|\.\d+)$/.test(raw.trim()), { message: 'must be a decimal number >= 0' })
    .transform((raw) => new Dec(raw.trim()).toFixed());

const optionalDecimal = z
  .string()
  .default('')
  .refine((raw) => raw.trim() === '' || /^(\d+(\.\d*)?|\.\d+)$/.test(raw.trim()), {
    message: 'must be a decimal number >= 0',
  })
  .transform((raw) => (raw.trim() === '' ? null : new Dec(raw.trim()).toFixed()));

/** Why a file cannot be read, in a few words. */
export function unreadable(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return 'no such file';
  if (code === 'EACCES') return 'permission denied';
  if (code === 'EISDIR') return 'is a directory';
  return err instanceof Error ? err.message : String(err);
}

/**
 * A PEM file read and checked at start, so a typo in a path or a key in the place of a certificate stops the
 * process with the variable's name, not a TLS error at the first connection. The config keeps the path only.
 */
const pemFile = (kind: 'certificate' | 'private key') =>
  z
    .string()
    .optional()
    .superRefine((path, ctx) => {
      if (path === undefined) return;
      let text: string;
      try {
        text = readFileSync(path, 'utf8');
      } catch (err) {
        ctx.addIssue({ code: 'custom', message: `cannot be read: ${unreadable(err)}` });
        return;
      }
      try {
        if (kind === 'certificate') new X509Certificate(text);
        else createPrivateKey(text);
      } catch {
        const what = kind === 'certificate' ? 'a PEM certificate' : 'an unencrypted PEM private key';
        ctx.addIssue({ code: 'custom', message: `must be ${what}` });
      }
    });

/** One pinned key: an approver's name and `SHA256:` with the 43 base64 characters of a SHA-256 (lib/approval.ts). */
const PINNED_FINGERPRINT = /^([A-Za-z0-9][A-Za-z0-9_.-]{0,63}):(SHA256:[A-Za-z0-9+/]{43})$/;

/** The exchanges the chain can trade on (`EXCHANGE`): the paper exchange in Redis, Binance USD-M futures. */
export const EXCHANGES = ['paper', 'binance-usdm-testnet', 'binance-usdm'] as const;
export type ExchangeName = (typeof EXCHANGES)[number];

/** Binance's REST endpoints when `BINANCE_BASE_URL` is not set. */
export const BINANCE_DEFAULT_BASE_URLS: Record<Exclude<ExchangeName, 'paper'>, string> = {
  'binance-usdm-testnet': 'https://testnet.binancefuture.com',
  'binance-usdm': 'https://fapi.binance.com',
};

/** Binance refuses a recvWindow above this. */
const BINANCE_MAX_RECV_WINDOW_MS = 60_000;
/** One line of printable characters without spaces: what an API key or an HMAC secret is. */
export const ONE_LINE = /^[\x21-\x7e]+$/;
const ONE_LINE_MESSAGE = 'must be one line of printable characters without spaces';

/** The key travels in every request's header: over TLS, or in plain HTTP only to this machine (the tests' double). */
function safeBinanceUrl(raw: string): boolean {
  if (!URL.canParse(raw)) return false;
  const url = new URL(raw);
  if (url.username !== '' || url.password !== '' || url.search !== '' || url.hash !== '') return false;
  if (url.protocol === 'https:') return true;
  return url.protocol === 'http:' && ['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname);
}

export const EnvSchema = z.object({
  REDIS_URL: z
    .string()
    .default('redis://127.0.0.1:6379/0')
    .refine((raw) => /^rediss?:\/\/[^\s]+$/.test(raw) && URL.canParse(raw) && new URL(raw).hostname !== '', {
      message: 'must be a redis:// or rediss:// URL',
    }),
  REDIS_TLS_CA_FILE: pemFile('certificate'),
  REDIS_TLS_CERT_FILE: pemFile('certificate'),
  REDIS_TLS_KEY_FILE: pemFile('private key'),
  REDIS_ALLOW_EVICTION: switchOff,
  AUDIT_STREAM_MAXLEN: streamCap(1_000_000),
  APPLY_STREAM_MAXLEN: streamCap(100_000),
  TEMPORAL_ADDRESS: z
    .string()
    .default('127.0.0.1:7233')
    .refine((raw) => /^[^\s:]+:\d{1,5}$/.test(raw), { message: 'must be host:port' }),
  TEMPORAL_NAMESPACE: z.string().min(1).default('default'),
  TEMPORAL_TLS_CA_FILE: pemFile('certificate'),
  TEMPORAL_TLS_CERT_FILE: pemFile('certificate'),
  TEMPORAL_TLS_KEY_FILE: pemFile('private key'),
  TEMPORAL_TLS_SERVER_NAME: z
    .string()
    .regex(/^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/, { message: 'must be a host name, e.g. temporal.internal' })
    .optional(),
  TEMPORAL_API_KEY: z
    .string()
    .regex(/^[\x21-\x7e]+$/, { message: 'must be one line of printable characters without spaces' })
    .optional(),
  TASK_QUEUE: z.string().min(1).default('permit-chain'),
  WORKER_DEPLOYMENT: z
    .string()
    .default('permit-chain')
    .refine((raw) => /^[A-Za-z0-9_-]{1,200}$/.test(raw), {
      message: "must be 1 to 200 letters, digits, _ or - (no '.': Temporal joins it to the build id with one)",
    }),
  WORKER_VERSIONING: switchOff,
  KEY_PREFIX: z
    .string()
    .default('quantum')
    .refine((raw) => /^[A-Za-z0-9_.:-]+$/.test(raw), { message: 'must be letters, digits, _ . : - only' }),
  TRADING_MODE: z.enum(['testnet', 'production']).default('testnet'),
  PERMIT_TTL_S: seconds(60),
  PERMIT_MARGIN_S: z
    .string()
    .default('5')
    .refine((raw) => /^\d+$/.test(raw.trim()), { message: 'must be a whole number of seconds >= 0' })
    .transform(Number),
  APPROVAL_TIMEOUT_S: seconds(600),
  PLAN_MAX_AGE_S: seconds(3600, PLAN_MAX_AGE_LIMIT_S),
  RECHECK_INTERVAL_S: seconds(30),
  P33_TOLERANCE: decimalString('0.001'),
  APPROVERS: nameList,
  APPROVER_KEYS_DIR: z.string().default(''),
  OPERATORS: nameList,
  APPROVER_FINGERPRINTS: z
    .string()
    .default('')
    .transform((raw, ctx) => {
      const pins: Record<string, string> = {};
      for (const entry of raw.split(',').map((part) => part.trim())) {
        if (entry === '') continue;
        const pin = PINNED_FINGERPRINT.exec(entry);
        if (!pin?.[1] || !pin[2] || pins[pin[1]] !== undefined) {
          const message = pin?.[1]
            ? `pins ${pin[1]} twice`
            : 'must be NAME:SHA256:FINGERPRINT entries, comma-separated, as `permit-chain keygen` prints them';
          ctx.addIssue({ code: 'custom', message });
          return z.NEVER;
        }
        pins[pin[1]] = pin[2];
      }
      return pins;
    }),
  APPROVAL_QUORUM: z
    .string()
    .default('1')
    .refine((raw) => /^\d+$/.test(raw.trim()) && Number(raw) >= 1 && Number(raw) <= APPROVAL_QUORUM_MAX, {
      message: `must be a whole number of approvers from 1 to ${APPROVAL_QUORUM_MAX}`,
    })
    .transform(Number),
  APPROVAL_QUORUM_ABOVE_NOTIONAL: optionalDecimal,
  LAYER_ACTIVITIES: z.enum(['local', 'regular'], { message: "must be 'local' or 'regular'" }).default('local'),
  CONTINUE_AS_NEW_EVENTS: z
    .string()
    .default(String(CONTINUE_AS_NEW_EVENTS_DEFAULT))
    .refine(
      (raw) =>
        /^\d+$/.test(raw.trim()) &&
        Number(raw) >= CONTINUE_AS_NEW_EVENTS_MIN &&
        Number(raw) <= CONTINUE_AS_NEW_EVENTS_MAX,
      { message: `must be a whole number from ${CONTINUE_AS_NEW_EVENTS_MIN} to ${CONTINUE_AS_NEW_EVENTS_MAX}` },
    )
    .transform(Number),
  UPGRADE_ON_CONTINUE_AS_NEW: switchOff,
  WORKFLOW_CACHE_SIZE: z
    .string()
    .default('250')
    .refine((raw) => /^\d+$/.test(raw.trim()) && Number(raw) >= 1, { message: 'must be a whole number >= 1' })
    .transform(Number),
  DEAD_LETTER_MAXLEN: z
    .string()
    .default('10000')
    .refine((raw) => /^\d+$/.test(raw) && Number(raw) >= 1 && Number(raw) <= DEAD_LETTER_MAXLEN_MAX, {
      message: `must be a whole number of entries from 1 to ${DEAD_LETTER_MAXLEN_MAX}`,
    })
    .transform(Number),
  EXCHANGE: z.enum(EXCHANGES, { message: `must be one of ${EXCHANGES.join(', ')}` }).default('paper'),
  BINANCE_API_KEY: z.string().regex(ONE_LINE, { message: ONE_LINE_MESSAGE }).optional(),
  BINANCE_API_SECRET: z.string().regex(ONE_LINE, { message: ONE_LINE_MESSAGE }).optional(),
  BINANCE_API_KEY_FILE: z.string().optional(),
  BINANCE_API_SECRET_FILE: z.string().optional(),
  BINANCE_BASE_URL: z
    .string()
    .refine(safeBinanceUrl, {
      message: 'must be an https:// URL without credentials or query (http:// only to 127.0.0.1 or localhost)',
    })
    .transform((raw) => raw.replace(/\/+$/, ''))
    .optional(),
  BINANCE_RECV_WINDOW_MS: z
    .string()
    .default('5000')
    .refine((raw) => /^\d+$/.test(raw.trim()) && Number(raw) >= 1 && Number(raw) <= BINANCE_MAX_RECV_WINDOW_MS, {
      message: `must be a whole number of milliseconds from 1 to ${BINANCE_MAX_RECV_WINDOW_MS}`,
    })
    .transform(Number),
  BINANCE_RULES_REFRESH_S: seconds(300),
  GOVERNOR_RATE_LIMIT: z
    .string()
    .default('')
    .transform((raw, ctx) => {
      if (raw.trim() === '') return null;
      const match = /^(\d+)\/(\d+)(s|m)$/.exec(raw.trim());
      const count = Number(match?.[1]);
      const window = Number(match?.[2]) * (match?.[3] === 'm' ? 60_000 : 1000);
      // Bounded so that Redis can hold the window: at most a million permits per day.
      if (!match || count < 1 || window < 1 || count > 1_000_000 || window > 86_400_000) {
        ctx.addIssue({
          code: 'custom',
          message:
            'must be <count>/<window>s or <count>/<window>m, e.g. 30/60s (count up to 1000000, window up to 1 day)',
        });
        return z.NEVER;
      }
      return { count, windowMs: window };
    }),
  GOVERNOR_MAX_QTY: optionalDecimal,
  GOVERNOR_MAX_NOTIONAL: optionalDecimal,
  METRICS_PORT: z
    .string()
    .optional()
    .refine((raw) => raw === undefined || (/^\d{1,5}$/.test(raw.trim()) && Number(raw) <= 65535), {
      message: 'must be a TCP port, 0 to 65535 (0: any free port)',
    })
    .transform((raw) => (raw === undefined ? null : Number(raw))),
  METRICS_HOST: z
    .string()
    .default('0.0.0.0')
    .refine((raw) => /^[A-Za-z0-9.:-]+$/.test(raw), { message: 'must be an address to listen on, e.g. 0.0.0.0' }),
  LOG_LEVEL: z
    .enum(['trace', 'debug', 'info', 'warn', 'error', 'silent'], {
      message: 'must be trace, debug, info, warn, error or silent',
    })
    .default('info'),
  OTEL_EXPORTER_OTLP_ENDPOINT: z
    .string()
    .optional()
    .refine((raw) => raw === undefined || (/^https?:\/\/\S+$/.test(raw) && URL.canParse(raw)), {
      message: 'must be an http:// or https:// URL, e.g. http://otel-collector:4318',
    }),
  OTEL_SERVICE_NAME: z.string().min(1).optional(),
});

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** Variables whose values are never printed, not even when refused. */
const SECRET_VARIABLES: ReadonlySet<string> = new Set(['TEMPORAL_API_KEY', 'BINANCE_API_KEY', 'BINANCE_API_SECRET']);

/** A refused value as a ConfigError prints it: never a password or a key. */
export function shown(name: string, value: string): string {
  if (SECRET_VARIABLES.has(name)) return '(value not shown)';
  return `(got '${redactUrl(value)}')`;
}

/** The environment as the schema reads it: each variable valid alone. */
export type Env = z.infer<typeof EnvSchema>;
