import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { inspect } from 'node:util';
import { z } from 'zod';
import { Dec } from './decimal';
import { SYMBOL_PATTERN } from './plan';
import { redactUrl } from './redact';
import type { ApprovalQuorum, ChainRules, TradingMode } from '../contract/types';

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

const decimalString = (fallback: string) =>
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
function unreadable(err: unknown): string {
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
const ONE_LINE = /^[\x21-\x7e]+$/;
const ONE_LINE_MESSAGE = 'must be one line of printable characters without spaces';

/** The key travels in every request's header: over TLS, or in plain HTTP only to this machine (the tests' double). */
function safeBinanceUrl(raw: string): boolean {
  if (!URL.canParse(raw)) return false;
  const url = new URL(raw);
  if (url.username !== '' || url.password !== '' || url.search !== '' || url.hash !== '') return false;
  if (url.protocol === 'https:') return true;
  return url.protocol === 'http:' && ['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname);
}

const EnvSchema = z.object({
  REDIS_URL: z
    .string()
    .default('redis://127.0.0.1:6379/0')
    .refine((raw) => /^rediss?:\/\/[^\s]+$/.test(raw) && URL.canParse(raw) && new URL(raw).hostname !== '', {
      message: 'must be a redis:// or rediss:// URL',
    }),
  REDIS_TLS_CA_FILE: pemFile('certificate'),
  REDIS_TLS_CERT_FILE: pemFile('certificate'),
  REDIS_TLS_KEY_FILE: pemFile('private key'),
  REDIS_ALLOW_EVICTION: z
    .enum(['true', 'false'], { message: "must be 'true' or 'false'" })
    .default('false')
    .transform((raw) => raw === 'true'),
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
  WORKER_VERSIONING: z
    .enum(['true', 'false'], { message: "must be 'true' or 'false'" })
    .default('false')
    .transform((raw) => raw === 'true'),
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
  APPROVERS: z
    .string()
    .default('')
    .transform((raw) =>
      raw
        .split(',')
        .map((name) => name.trim())
        .filter((name) => name !== ''),
    ),
  APPROVER_KEYS_DIR: z.string().default(''),
  OPERATORS: z
    .string()
    .default('')
    .transform((raw) =>
      raw
        .split(',')
        .map((name) => name.trim())
        .filter((name) => name !== ''),
    ),
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
  UPGRADE_ON_CONTINUE_AS_NEW: z
    .enum(['true', 'false'], { message: "must be 'true' or 'false'" })
    .default('false')
    .transform((raw) => raw === 'true'),
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

/** A value that must never be printed: `String()`, JSON and `console.log` show `***`; `reveal()` gives it. */
export class Secret {
  readonly #value: string;
  constructor(value: string) {
    this.#value = value;
  }
  reveal(): string {
    return this.#value;
  }
  toString(): string {
    return '***';
  }
  toJSON(): string {
    return '***';
  }
  [inspect.custom](): string {
    return 'Secret(***)';
  }
}

/** Binance USD-M futures (`EXCHANGE=binance-usdm-testnet` or `binance-usdm`). */
export interface BinanceConfig {
  /** `BINANCE_API_KEY` or the contents of `BINANCE_API_KEY_FILE`; never printed. */
  apiKey: Secret;
  /** `BINANCE_API_SECRET` or the contents of `BINANCE_API_SECRET_FILE` (HMAC); never printed. */
  apiSecret: Secret;
  /** `BINANCE_BASE_URL`, else testnet's or live's REST endpoint; no trailing slash. */
  baseUrl: string;
  /** `BINANCE_RECV_WINDOW_MS` (default 5000, at most 60000): how long after its timestamp Binance takes a request. */
  recvWindowMs: number;
  /** `BINANCE_RULES_REFRESH_S` (default 300): how often the symbols' trading rules are read again. */
  rulesRefreshS: number;
}

/** TLS material by path: the files are read when a connection is made, so their contents are never in the config. */
export interface TlsFiles {
  /** The CA bundle the server's certificate must chain to; absent: the system's CAs. */
  caFile?: string;
  /** Mutual TLS: this client's certificate and its private key. */
  client?: { certFile: string; keyFile: string };
}

export interface ChainConfig {
  /** May hold an ACL user and password: print it only through `redactUrl`. */
  redisUrl: string;
  /** TLS to Redis: set for a `rediss://` URL (`REDIS_TLS_*`), null for `redis://`. */
  redisTls: TlsFiles | null;
  /**
   * `REDIS_ALLOW_EVICTION`: run on a Redis whose maxmemory-policy is not `noeviction` (it may evict the keys that keep
   * plans once-only), the risk named in the log and `/readyz`. Default false: such a worker does not start.
   */
  redisAllowEviction: boolean;
  /** The length caps the worker trims the chain's streams to (`AUDIT_STREAM_MAXLEN`, `APPLY_STREAM_MAXLEN`). */
  streamCaps: { audit: number; apply: number };
  temporalAddress: string;
  temporalNamespace: string;
  /** TLS to Temporal (`TEMPORAL_TLS_*`); null: plain text. On whenever any TLS variable or an API key is set. */
  temporalTls: (TlsFiles & { serverName?: string }) | null;
  /** `TEMPORAL_API_KEY`, sent as `Authorization: Bearer …` (Temporal Cloud). */
  temporalApiKey: Secret | null;
  taskQueue: string;
  /** `WORKER_DEPLOYMENT`: the Worker Deployment this worker's build is a version of (with WORKER_VERSIONING). */
  workerDeployment: string;
  /**
   * `WORKER_VERSIONING`: the worker polls as a version of WORKER_DEPLOYMENT (its build id, workers/build-id.ts) and
   * plans are pinned to the build they started on; it gets plans only once that version is current or ramping.
   */
  workerVersioning: boolean;
  keyPrefix: string;
  tradingMode: TradingMode;
  permitTtlS: number;
  permitMarginS: number;
  approvalTimeoutS: number;
  planMaxAgeS: number;
  recheckIntervalS: number;
  /** Default P3.3 tolerance, decimal string. */
  p33Tolerance: string;
  /** Per-symbol overrides from `P33_TOLERANCE_<SYMBOL>`. */
  p33ToleranceBySymbol: Record<string, string>;
  /** Who may approve or reject in production mode; empty means nobody. */
  approvers: string[];
  /** Where each approver's Ed25519 public key is (`NAME.pub`); empty: not configured. */
  approverKeysDir: string;
  /** `APPROVER_FINGERPRINTS`: the key fingerprint expected for an approver, by name; a key that differs stops the worker. */
  approverFingerprints: Record<string, string>;
  /**
   * `OPERATORS`: who may sign the operations that move money or resume trading (`reconcile --yes`, `kill-switch off`);
   * their keys are `APPROVER_KEYS_DIR/NAME.pub`, checked like the approvers'. A name may be in both lists.
   */
  operators: string[];
  /**
   * Four eyes (`APPROVAL_QUORUM`, default 1; `APPROVAL_QUORUM_ABOVE_NOTIONAL`): distinct approvers needed before the
   * Governor grants, for plans whose qty × price is above the threshold (every plan when none).
   */
  approvalQuorum: ApprovalQuorum;
  /**
   * How the Redis-only layers (Governor, Apply, P3.3, the symbol line) run: as local activities in the workflow's
   * worker (fast, one step each in the history) or as regular activities (listed while pending, own retries).
   */
  layerActivities: 'local' | 'regular';
  /** How many workflows the worker keeps in memory; others replay from history when they wake. */
  workflowCacheSize: number;
  /** A waiting plan continues as a new run before its history reaches this many events. */
  continueAsNewEvents: number;
  /**
   * `UPGRADE_ON_CONTINUE_AS_NEW`: a waiting plan whose build is no longer the deployment's current one continues as
   * new onto the current build (Temporal's upgrade on continue-as-new, experimental in the SDK).
   */
  upgradeOnContinueAsNew: boolean;
  /** `DEAD_LETTER_MAXLEN`: the exit.plan.dead stream is capped near this many entries (`XADD … MAXLEN ~`). */
  deadLetterMaxLen: number;
  exchange: ExchangeName;
  /** The Binance adapter's settings; null for the paper exchange. */
  binance: BinanceConfig | null;
  /** Permits per symbol per window (`GOVERNOR_RATE_LIMIT`, e.g. 30/60s); null: no limit. */
  rateLimit: { count: number; windowMs: number } | null;
  /** Largest qty one plan may have (`GOVERNOR_MAX_QTY`, `GOVERNOR_MAX_QTY_<SYMBOL>`); null: no limit. */
  maxQty: string | null;
  maxQtyBySymbol: Record<string, string>;
  /** Largest qty × price one plan may have (`GOVERNOR_MAX_NOTIONAL`, `…_<SYMBOL>`); null: no limit. */
  maxNotional: string | null;
  maxNotionalBySymbol: Record<string, string>;
  /** What the worker and the intake tell about themselves: metrics, health, logs, traces. */
  telemetry: TelemetryConfig;
}

export interface TelemetryConfig {
  /** `METRICS_PORT`: where `/metrics`, `/healthz` and `/readyz` are served; null: not served; 0: a free port. */
  metricsPort: number | null;
  /** `METRICS_HOST`: the address that port listens on. */
  metricsHost: string;
  /** `LOG_LEVEL`: the lowest level written. */
  logLevel: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'silent';
  /** `OTEL_EXPORTER_OTLP_ENDPOINT`: where traces go (OTLP over HTTP); null: tracing off. */
  otlpEndpoint: string | null;
  /** `OTEL_SERVICE_NAME`; null: the process's own name (`permit-chain-worker`, …). */
  serviceName: string | null;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** Variables whose values are never printed, not even when refused. */
const SECRET_VARIABLES: ReadonlySet<string> = new Set(['TEMPORAL_API_KEY', 'BINANCE_API_KEY', 'BINANCE_API_SECRET']);

/** A refused value as a ConfigError prints it: never a password or a key. */
function shown(name: string, value: string): string {
  if (SECRET_VARIABLES.has(name)) return '(value not shown)';
  return `(got '${redactUrl(value)}')`;
}

/** A client certificate needs its key and a key its certificate; either alone is a mistake worth stopping for. */
function clientPair(certName: string, keyName: string, certFile?: string, keyFile?: string) {
  if (certFile === undefined && keyFile === undefined) return undefined;
  if (certFile === undefined)
    throw new ConfigError(`config: ${keyName} needs ${certName} (the certificate of that key)`);
  if (keyFile === undefined)
    throw new ConfigError(`config: ${certName} needs ${keyName} (the certificate's private key)`);
  const matches = new X509Certificate(readFileSync(certFile)).checkPrivateKey(createPrivateKey(readFileSync(keyFile)));
  if (!matches) throw new ConfigError(`config: ${keyName} is not the private key of ${certName} (got '${keyFile}')`);
  return { certFile, keyFile };
}

function tlsFiles(caFile: string | undefined, client: TlsFiles['client']): TlsFiles {
  return { ...(caFile !== undefined ? { caFile } : {}), ...(client ? { client } : {}) };
}

/** How to reach Redis and Temporal securely, checked as a whole: each variable is valid alone already. */
function transport(e: z.infer<typeof EnvSchema>): Pick<ChainConfig, 'redisTls' | 'temporalTls' | 'temporalApiKey'> {
  const redisClient = clientPair(
    'REDIS_TLS_CERT_FILE',
    'REDIS_TLS_KEY_FILE',
    e.REDIS_TLS_CERT_FILE,
    e.REDIS_TLS_KEY_FILE,
  );
  const redisTls = e.REDIS_URL.startsWith('rediss://');
  const redisTlsSet = (['REDIS_TLS_CA_FILE', 'REDIS_TLS_CERT_FILE', 'REDIS_TLS_KEY_FILE'] as const).find(
    (name) => e[name] !== undefined,
  );
  if (redisTlsSet && !redisTls) {
    // Ignoring the certificate would connect in plain text where TLS was meant.
    throw new ConfigError(`config: ${redisTlsSet} needs a rediss:// REDIS_URL ${shown('REDIS_URL', e.REDIS_URL)}`);
  }
  const temporalClient = clientPair(
    'TEMPORAL_TLS_CERT_FILE',
    'TEMPORAL_TLS_KEY_FILE',
    e.TEMPORAL_TLS_CERT_FILE,
    e.TEMPORAL_TLS_KEY_FILE,
  );
  const serverName = e.TEMPORAL_TLS_SERVER_NAME;
  // An API key travels only inside TLS: in plain text anyone on the path could take it.
  const temporalTls =
    e.TEMPORAL_TLS_CA_FILE !== undefined ||
    temporalClient !== undefined ||
    serverName !== undefined ||
    e.TEMPORAL_API_KEY !== undefined;
  return {
    redisTls: redisTls ? tlsFiles(e.REDIS_TLS_CA_FILE, redisClient) : null,
    temporalTls: temporalTls
      ? { ...tlsFiles(e.TEMPORAL_TLS_CA_FILE, temporalClient), ...(serverName !== undefined ? { serverName } : {}) }
      : null,
    temporalApiKey: e.TEMPORAL_API_KEY !== undefined ? new Secret(e.TEMPORAL_API_KEY) : null,
  };
}

/**
 * A Binance credential from its variable or from the file its `_FILE` variable names (one of the two). The file's
 * contents are checked like the variable's and never printed; a trailing newline is allowed.
 */
function binanceCredential(name: 'BINANCE_API_KEY' | 'BINANCE_API_SECRET', e: z.infer<typeof EnvSchema>) {
  const direct = e[name];
  const file = e[`${name}_FILE`];
  if (direct !== undefined && file !== undefined) {
    throw new ConfigError(`config: ${name} and ${name}_FILE are both set; set one of them`);
  }
  if (file === undefined) return direct === undefined ? undefined : new Secret(direct);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`config: ${name}_FILE cannot be read: ${unreadable(err)} (got '${file}')`);
  }
  const value = text.replace(/\r?\n$/, '');
  if (!ONE_LINE.test(value)) {
    throw new ConfigError(
      `config: ${name}_FILE must hold one line of printable characters without spaces (got '${file}', contents not shown)`,
    );
  }
  return new Secret(value);
}

/** The Binance adapter's settings, checked as a whole: a Binance exchange needs its key and secret. */
function binance(e: z.infer<typeof EnvSchema>): BinanceConfig | null {
  const apiKey = binanceCredential('BINANCE_API_KEY', e);
  const apiSecret = binanceCredential('BINANCE_API_SECRET', e);
  if (e.EXCHANGE === 'paper') return null;
  const missing = [
    ...(apiKey ? [] : ['BINANCE_API_KEY (or BINANCE_API_KEY_FILE)']),
    ...(apiSecret ? [] : ['BINANCE_API_SECRET (or BINANCE_API_SECRET_FILE)']),
  ];
  if (!apiKey || !apiSecret) {
    throw new ConfigError(`config: EXCHANGE=${e.EXCHANGE} needs ${missing.join(' and ')}`);
  }
  return {
    apiKey,
    apiSecret,
    baseUrl: e.BINANCE_BASE_URL ?? BINANCE_DEFAULT_BASE_URLS[e.EXCHANGE],
    recvWindowMs: e.BINANCE_RECV_WINDOW_MS,
    rulesRefreshS: e.BINANCE_RULES_REFRESH_S,
  };
}

/** Per-symbol overrides: `P33_TOLERANCE_BTCUSDT=0.0005` and the like. */
const SYMBOL_OVERRIDES = ['P33_TOLERANCE', 'GOVERNOR_MAX_QTY', 'GOVERNOR_MAX_NOTIONAL'] as const;
type OverrideName = (typeof SYMBOL_OVERRIDES)[number];

function symbolOverrides(env: NodeJS.ProcessEnv): Record<OverrideName, Record<string, string>> {
  const found: Record<OverrideName, Record<string, string>> = {
    P33_TOLERANCE: {},
    GOVERNOR_MAX_QTY: {},
    GOVERNOR_MAX_NOTIONAL: {},
  };
  for (const [key, value] of Object.entries(env)) {
    if (value === undefined || value === '') continue;
    // The longest base name that prefixes the key: GOVERNOR_MAX_QTY_X is not a tolerance.
    const base = SYMBOL_OVERRIDES.filter((name) => key.startsWith(`${name}_`)).sort((a, b) => b.length - a.length)[0];
    if (!base) continue;
    const symbol = key.slice(base.length + 1);
    if (!SYMBOL_PATTERN.test(symbol)) continue;
    const checked = decimalString('0').safeParse(value);
    if (!checked.success) throw new ConfigError(`config: ${key} must be a decimal number >= 0 (got '${value}')`);
    found[base][symbol] = checked.data;
  }
  return found;
}

/**
 * Reads and validates the configuration from the environment. A bad value throws a {@link ConfigError} whose
 * message names the variable, so every entry point can stop with one clear line.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): ChainConfig {
  const known: Record<string, string> = {};
  for (const key of Object.keys(EnvSchema.shape)) {
    const value = env[key];
    if (value !== undefined && value !== '') known[key] = value;
  }
  const parsed = EnvSchema.safeParse(known);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const name = String(issue?.path[0] ?? 'environment');
    throw new ConfigError(`config: ${name} ${issue?.message ?? 'is invalid'} ${shown(name, known[name] ?? '')}`);
  }
  const e = parsed.data;
  if (e.PERMIT_MARGIN_S >= e.PERMIT_TTL_S) {
    throw new ConfigError(
      `config: PERMIT_MARGIN_S must be less than PERMIT_TTL_S (got ${e.PERMIT_MARGIN_S} >= ${e.PERMIT_TTL_S})`,
    );
  }
  const unknownPin = Object.keys(e.APPROVER_FINGERPRINTS).find((name) => !e.APPROVERS.includes(name));
  if (unknownPin !== undefined) {
    throw new ConfigError(
      `config: APPROVER_FINGERPRINTS pins ${unknownPin}, who is not in APPROVERS: add them there or remove the pin`,
    );
  }
  if (e.APPROVAL_QUORUM > Math.max(1, e.APPROVERS.length)) {
    throw new ConfigError(
      `config: APPROVAL_QUORUM ${e.APPROVAL_QUORUM} needs at least that many names in APPROVERS ` +
        `(got ${e.APPROVERS.length}${e.APPROVERS.length > 0 ? `: ${e.APPROVERS.join(', ')}` : ''}): ` +
        'add approvers or lower the quorum',
    );
  }
  const overrides = symbolOverrides(env);
  return {
    redisUrl: e.REDIS_URL,
    redisAllowEviction: e.REDIS_ALLOW_EVICTION,
    streamCaps: { audit: e.AUDIT_STREAM_MAXLEN, apply: e.APPLY_STREAM_MAXLEN },
    temporalAddress: e.TEMPORAL_ADDRESS,
    temporalNamespace: e.TEMPORAL_NAMESPACE,
    ...transport(e),
    taskQueue: e.TASK_QUEUE,
    workerDeployment: e.WORKER_DEPLOYMENT,
    workerVersioning: e.WORKER_VERSIONING,
    keyPrefix: e.KEY_PREFIX,
    tradingMode: e.TRADING_MODE,
    permitTtlS: e.PERMIT_TTL_S,
    permitMarginS: e.PERMIT_MARGIN_S,
    approvalTimeoutS: e.APPROVAL_TIMEOUT_S,
    planMaxAgeS: e.PLAN_MAX_AGE_S,
    recheckIntervalS: e.RECHECK_INTERVAL_S,
    p33Tolerance: e.P33_TOLERANCE,
    p33ToleranceBySymbol: overrides.P33_TOLERANCE,
    approvers: e.APPROVERS,
    approverKeysDir: e.APPROVER_KEYS_DIR,
    approverFingerprints: e.APPROVER_FINGERPRINTS,
    operators: e.OPERATORS,
    approvalQuorum: {
      count: e.APPROVAL_QUORUM,
      ...(e.APPROVAL_QUORUM_ABOVE_NOTIONAL !== null ? { aboveNotional: e.APPROVAL_QUORUM_ABOVE_NOTIONAL } : {}),
    },
    layerActivities: e.LAYER_ACTIVITIES,
    workflowCacheSize: e.WORKFLOW_CACHE_SIZE,
    continueAsNewEvents: e.CONTINUE_AS_NEW_EVENTS,
    upgradeOnContinueAsNew: e.UPGRADE_ON_CONTINUE_AS_NEW,
    deadLetterMaxLen: e.DEAD_LETTER_MAXLEN,
    exchange: e.EXCHANGE,
    binance: binance(e),
    rateLimit: e.GOVERNOR_RATE_LIMIT,
    maxQty: e.GOVERNOR_MAX_QTY,
    maxQtyBySymbol: overrides.GOVERNOR_MAX_QTY,
    maxNotional: e.GOVERNOR_MAX_NOTIONAL,
    maxNotionalBySymbol: overrides.GOVERNOR_MAX_NOTIONAL,
    telemetry: {
      metricsPort: e.METRICS_PORT,
      metricsHost: e.METRICS_HOST,
      logLevel: e.LOG_LEVEL,
      otlpEndpoint: e.OTEL_EXPORTER_OTLP_ENDPOINT ?? null,
      serviceName: e.OTEL_SERVICE_NAME ?? null,
    },
  };
}

/** The P3.3 tolerance that applies to a symbol. */
export function toleranceFor(config: Pick<ChainConfig, 'p33Tolerance' | 'p33ToleranceBySymbol'>, symbol: string) {
  return config.p33ToleranceBySymbol[symbol] ?? config.p33Tolerance;
}

/**
 * A process that decides or starts plans (worker, intake) runs in the mode it was told: a trading system must not
 * fall into auto-approval because a variable was forgotten. Throws a {@link ConfigError} when TRADING_MODE is unset.
 */
export function requireExplicitMode(env: NodeJS.ProcessEnv, who: string): void {
  if (env.TRADING_MODE === undefined || env.TRADING_MODE.trim() === '') {
    throw new ConfigError(
      `config: TRADING_MODE must be set for the ${who} (testnet or production): it does not default to auto-approval`,
    );
  }
}

/** The rules a plan's workflow runs under: the worker's, handed to the workflow by the Governor's admission. */
export function chainRules(config: ChainConfig): ChainRules {
  return {
    mode: config.tradingMode,
    permitTtlS: config.permitTtlS,
    permitMarginS: config.permitMarginS,
    recheckIntervalS: config.recheckIntervalS,
    planMaxAgeS: config.planMaxAgeS,
    approvalTimeoutS: config.approvalTimeoutS,
    approvers: config.approvers,
    layerActivities: config.layerActivities,
    continueAsNewEvents: config.continueAsNewEvents,
    upgradeOnContinueAsNew: config.upgradeOnContinueAsNew,
    approvalQuorum: config.approvalQuorum,
  };
}

/** The size limits that apply to a symbol (decimal strings; undefined: no limit). */
export function sizeLimitsFor(
  config: Pick<ChainConfig, 'maxQty' | 'maxQtyBySymbol' | 'maxNotional' | 'maxNotionalBySymbol'>,
  symbol: string,
): { maxQty?: string; maxNotional?: string } {
  const maxQty = config.maxQtyBySymbol[symbol] ?? config.maxQty ?? undefined;
  const maxNotional = config.maxNotionalBySymbol[symbol] ?? config.maxNotional ?? undefined;
  return { ...(maxQty !== undefined ? { maxQty } : {}), ...(maxNotional !== undefined ? { maxNotional } : {}) };
}

/** The worker's variables that the Governor's and P3.3's decisions read: what `permit-chain what-if` proposes. */
export const DECISION_VARIABLES = [
  'P33_TOLERANCE',
  'GOVERNOR_MAX_QTY',
  'GOVERNOR_MAX_NOTIONAL',
  'GOVERNOR_RATE_LIMIT',
  'APPROVERS',
  'APPROVAL_QUORUM',
  'APPROVAL_QUORUM_ABOVE_NOTIONAL',
] as const;

/** The decision settings of a configuration. */
export type DecisionSettings = Pick<
  ChainConfig,
  | 'p33Tolerance'
  | 'p33ToleranceBySymbol'
  | 'maxQty'
  | 'maxQtyBySymbol'
  | 'maxNotional'
  | 'maxNotionalBySymbol'
  | 'rateLimit'
  | 'approvers'
  | 'approvalQuorum'
>;

/** Whether `name` is a decision variable, a per-symbol override of one (`GOVERNOR_MAX_QTY_BTCUSDT`) included. */
export function isDecisionVariable(name: string): boolean {
  if ((DECISION_VARIABLES as readonly string[]).includes(name)) return true;
  const base = SYMBOL_OVERRIDES.find((override) => name.startsWith(`${override}_`));
  return base !== undefined && SYMBOL_PATTERN.test(name.slice(base.length + 1));
}

/** Whether `name` is one of the variables the worker reads (a decision variable or any other). */
export function isConfigVariable(name: string): boolean {
  return name in EnvSchema.shape || isDecisionVariable(name);
}

/**
 * The decision settings that `vars` (variable → value, as in the worker's environment) give, validated by the same
 * rules as the worker's start: a bad value throws a {@link ConfigError} naming the variable. Other variables are
 * left out; a decision variable not given has its default, as the worker would run.
 */
export function decisionSettings(vars: Record<string, string>): DecisionSettings {
  const decisions = Object.fromEntries(Object.entries(vars).filter(([name]) => isDecisionVariable(name)));
  const config = loadConfig(decisions);
  return {
    p33Tolerance: config.p33Tolerance,
    p33ToleranceBySymbol: config.p33ToleranceBySymbol,
    maxQty: config.maxQty,
    maxQtyBySymbol: config.maxQtyBySymbol,
    maxNotional: config.maxNotional,
    maxNotionalBySymbol: config.maxNotionalBySymbol,
    rateLimit: config.rateLimit,
    approvers: config.approvers,
    approvalQuorum: config.approvalQuorum,
  };
}
