import type { ApprovalQuorum, ChainRules, TradingMode } from '../contract/types';
import { binance, transport, type BinanceConfig, type Secret, type TlsFiles } from './config-credentials';
import { ConfigError, EnvSchema, decimalString, shown, type ExchangeName } from './config-schema';
import { SYMBOL_PATTERN } from './plan';

// The config's parts, named from here as the callers always have.
export {
  BINANCE_DEFAULT_BASE_URLS,
  CONTINUE_AS_NEW_EVENTS_DEFAULT,
  ConfigError,
  EXCHANGES,
  PLAN_MAX_AGE_LIMIT_S,
  STREAM_CAP_MIN,
  type ExchangeName,
} from './config-schema';
export { Secret, type BinanceConfig, type TlsFiles } from './config-credentials';

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
