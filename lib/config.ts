import { z } from 'zod';
import { Dec } from './decimal';
import type { ChainSettings, TradingMode } from './types';

const seconds = (fallback: number) =>
  z
    .string()
    .default(String(fallback))
    .transform((raw, ctx) => {
      const value = Number(raw);
      if (!/^\d+$/.test(raw.trim()) || !Number.isSafeInteger(value) || value <= 0) {
        ctx.addIssue({ code: 'custom', message: 'must be a whole number of seconds > 0' });
        return z.NEVER;
      }
      return value;
    });

const decimalString = (fallback: string) =>
  z
    .string()
    .default(fallback)
    .refine((raw) => /^(\d+(\.\d*)?|\.\d+)$/.test(raw.trim()), { message: 'must be a decimal number >= 0' })
    .transform((raw) => new Dec(raw.trim()).toFixed());

const EnvSchema = z.object({
  REDIS_URL: z
    .string()
    .default('redis://127.0.0.1:6379/0')
    .refine((raw) => /^rediss?:\/\/[^\s]+$/.test(raw), { message: 'must be a redis:// or rediss:// URL' }),
  TEMPORAL_ADDRESS: z
    .string()
    .default('127.0.0.1:7233')
    .refine((raw) => /^[^\s:]+:\d{1,5}$/.test(raw), { message: 'must be host:port' }),
  TEMPORAL_NAMESPACE: z.string().min(1).default('default'),
  TASK_QUEUE: z.string().min(1).default('permit-chain'),
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
  PLAN_MAX_AGE_S: seconds(3600),
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
  EXCHANGE: z.enum(['paper']).default('paper'),
});

export interface ChainConfig {
  redisUrl: string;
  temporalAddress: string;
  temporalNamespace: string;
  taskQueue: string;
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
  /** Empty means anyone may approve. */
  approvers: string[];
  exchange: 'paper';
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

const TOLERANCE_OVERRIDE = /^P33_TOLERANCE_([A-Z][A-Z0-9]{1,19})$/;

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
    throw new ConfigError(`config: ${name} ${issue?.message ?? 'is invalid'} (got '${known[name] ?? ''}')`);
  }
  const e = parsed.data;
  if (e.PERMIT_MARGIN_S >= e.PERMIT_TTL_S) {
    throw new ConfigError(
      `config: PERMIT_MARGIN_S must be less than PERMIT_TTL_S (got ${e.PERMIT_MARGIN_S} >= ${e.PERMIT_TTL_S})`,
    );
  }
  const p33ToleranceBySymbol: Record<string, string> = {};
  for (const [key, value] of Object.entries(env)) {
    const match = TOLERANCE_OVERRIDE.exec(key);
    if (!match?.[1] || value === undefined || value === '') continue;
    const checked = decimalString('0').safeParse(value);
    if (!checked.success) throw new ConfigError(`config: ${key} must be a decimal number >= 0 (got '${value}')`);
    p33ToleranceBySymbol[match[1]] = checked.data;
  }
  return {
    redisUrl: e.REDIS_URL,
    temporalAddress: e.TEMPORAL_ADDRESS,
    temporalNamespace: e.TEMPORAL_NAMESPACE,
    taskQueue: e.TASK_QUEUE,
    keyPrefix: e.KEY_PREFIX,
    tradingMode: e.TRADING_MODE,
    permitTtlS: e.PERMIT_TTL_S,
    permitMarginS: e.PERMIT_MARGIN_S,
    approvalTimeoutS: e.APPROVAL_TIMEOUT_S,
    planMaxAgeS: e.PLAN_MAX_AGE_S,
    recheckIntervalS: e.RECHECK_INTERVAL_S,
    p33Tolerance: e.P33_TOLERANCE,
    p33ToleranceBySymbol,
    approvers: e.APPROVERS,
    exchange: e.EXCHANGE,
  };
}

/** The P3.3 tolerance that applies to a symbol. */
export function toleranceFor(config: Pick<ChainConfig, 'p33Tolerance' | 'p33ToleranceBySymbol'>, symbol: string) {
  return config.p33ToleranceBySymbol[symbol] ?? config.p33Tolerance;
}

/** The part of the configuration a plan's workflow runs under. */
export function chainSettings(config: ChainConfig): ChainSettings {
  return {
    mode: config.tradingMode,
    permitTtlS: config.permitTtlS,
    permitMarginS: config.permitMarginS,
    recheckIntervalS: config.recheckIntervalS,
    planMaxAgeS: config.planMaxAgeS,
    approvalTimeoutS: config.approvalTimeoutS,
  };
}
