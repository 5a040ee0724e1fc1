import { describe, expect, it } from 'vitest';
import { chainSettings, ConfigError, loadConfig, toleranceFor, type ChainConfig } from '../../lib/config';

/** Loads and returns the ConfigError, failing the test if loadConfig accepts the environment. */
function configError(env: NodeJS.ProcessEnv): ConfigError {
  try {
    loadConfig(env);
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  return expect.fail(`loadConfig accepted ${JSON.stringify(env)}`);
}

describe('loadConfig', () => {
  it("defaults to DESIGN.md's configuration list", () => {
    expect(loadConfig({})).toEqual<ChainConfig>({
      redisUrl: 'redis://127.0.0.1:6379/0',
      temporalAddress: '127.0.0.1:7233',
      temporalNamespace: 'default',
      taskQueue: 'permit-chain',
      keyPrefix: 'quantum',
      tradingMode: 'testnet',
      permitTtlS: 60,
      permitMarginS: 5,
      approvalTimeoutS: 600,
      planMaxAgeS: 3600,
      recheckIntervalS: 30,
      p33Tolerance: '0.001',
      p33ToleranceBySymbol: {},
      approvers: [],
      exchange: 'paper',
    });
  });

  it('treats an empty variable as unset', () => {
    expect(loadConfig({ PERMIT_TTL_S: '', TRADING_MODE: '', REDIS_URL: '' })).toMatchObject({
      permitTtlS: 60,
      tradingMode: 'testnet',
      redisUrl: 'redis://127.0.0.1:6379/0',
    });
  });

  it('reads every variable that is set', () => {
    const config = loadConfig({
      REDIS_URL: 'rediss://redis.internal:6380/2',
      TEMPORAL_ADDRESS: 'temporal.internal:7234',
      TEMPORAL_NAMESPACE: 'trading',
      TASK_QUEUE: 'permit-chain-test',
      KEY_PREFIX: 'test:abc_1',
      TRADING_MODE: 'production',
      PERMIT_TTL_S: '120',
      PERMIT_MARGIN_S: '0',
      APPROVAL_TIMEOUT_S: '300',
      PLAN_MAX_AGE_S: '7200',
      RECHECK_INTERVAL_S: '10',
      P33_TOLERANCE: '0.0020',
      EXCHANGE: 'paper',
    });
    expect(config).toEqual<ChainConfig>({
      redisUrl: 'rediss://redis.internal:6380/2',
      temporalAddress: 'temporal.internal:7234',
      temporalNamespace: 'trading',
      taskQueue: 'permit-chain-test',
      keyPrefix: 'test:abc_1',
      tradingMode: 'production',
      permitTtlS: 120,
      permitMarginS: 0,
      approvalTimeoutS: 300,
      planMaxAgeS: 7200,
      recheckIntervalS: 10,
      p33Tolerance: '0.002',
      p33ToleranceBySymbol: {},
      approvers: [],
      exchange: 'paper',
    });
  });

  it.each<[string, NodeJS.ProcessEnv, string]>([
    ['a TTL that is not a number', { PERMIT_TTL_S: 'abc' }, 'PERMIT_TTL_S'],
    ['a TTL of 0', { PERMIT_TTL_S: '0' }, 'PERMIT_TTL_S'],
    ['a fractional TTL', { PERMIT_TTL_S: '1.5' }, 'PERMIT_TTL_S'],
    ['an unknown trading mode', { TRADING_MODE: 'live' }, 'TRADING_MODE'],
    ['a Redis URL that is not redis://', { REDIS_URL: 'http://x' }, 'REDIS_URL'],
    ['a Temporal address without a port', { TEMPORAL_ADDRESS: 'temporal.internal' }, 'TEMPORAL_ADDRESS'],
    ['a negative tolerance', { P33_TOLERANCE: '-1' }, 'P33_TOLERANCE'],
    ['a negative margin', { PERMIT_MARGIN_S: '-1' }, 'PERMIT_MARGIN_S'],
    ['a margin equal to the TTL', { PERMIT_MARGIN_S: '60', PERMIT_TTL_S: '60' }, 'PERMIT_MARGIN_S'],
    ['a margin above the default TTL', { PERMIT_MARGIN_S: '61' }, 'PERMIT_MARGIN_S'],
    ['an unknown exchange', { EXCHANGE: 'binance' }, 'EXCHANGE'],
    ['a bad per-symbol tolerance', { P33_TOLERANCE_BTCUSDT: 'abc' }, 'P33_TOLERANCE_BTCUSDT'],
  ])('refuses %s, naming the variable', (_name, env, variable) => {
    const error = configError(env);
    expect(error).toBeInstanceOf(ConfigError);
    expect(error.message.startsWith(`config: ${variable} `)).toBe(true);
  });

  it('accepts a margin one second below the TTL', () => {
    expect(loadConfig({ PERMIT_MARGIN_S: '59', PERMIT_TTL_S: '60' })).toMatchObject({
      permitMarginS: 59,
      permitTtlS: 60,
    });
  });

  it.each<[string, string, string[]]>([
    ['unset', '', []],
    ['one name', 'alice', ['alice']],
    ['names with spaces and a trailing comma', ' alice, bob ,', ['alice', 'bob']],
    ['empty entries', ',,carol,,', ['carol']],
  ])('reads APPROVERS with %s', (_name, approvers, expected) => {
    expect(loadConfig({ APPROVERS: approvers }).approvers).toEqual(expected);
  });
});

describe('toleranceFor', () => {
  it('uses a per-symbol override and the default for other symbols', () => {
    const config = loadConfig({ P33_TOLERANCE_BTCUSDT: '0.0005' });
    expect(config.p33ToleranceBySymbol).toEqual({ BTCUSDT: '0.0005' });
    expect(toleranceFor(config, 'BTCUSDT')).toBe('0.0005');
    expect(toleranceFor(config, 'ETHUSDT')).toBe('0.001');
  });

  it('falls back to P33_TOLERANCE when it is set', () => {
    const config = loadConfig({ P33_TOLERANCE: '0.002', P33_TOLERANCE_BTCUSDT: '0' });
    expect(toleranceFor(config, 'BTCUSDT')).toBe('0');
    expect(toleranceFor(config, 'ETHUSDT')).toBe('0.002');
  });
});

describe('chainSettings', () => {
  it('carries the settings a plan runs under', () => {
    const config = loadConfig({ TRADING_MODE: 'production', PERMIT_TTL_S: '90', PERMIT_MARGIN_S: '7' });
    expect(chainSettings(config)).toEqual({
      mode: 'production',
      permitTtlS: 90,
      permitMarginS: 7,
      recheckIntervalS: 30,
      planMaxAgeS: 3600,
      approvalTimeoutS: 600,
    });
  });
});
