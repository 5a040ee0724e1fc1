import { describe, expect, it } from 'vitest';
import { chainRules, ConfigError, loadConfig, sizeLimitsFor, toleranceFor, type ChainConfig } from '../../lib/config';

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

/** A key fingerprint as `permit-chain keygen` prints it. */
const FINGERPRINT = 'SHA256:n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg';

describe('loadConfig', () => {
  it('defaults to the configuration list of docs/configuration.md', () => {
    expect(loadConfig({})).toEqual<ChainConfig>({
      redisUrl: 'redis://127.0.0.1:6379/0',
      redisAllowEviction: false,
      streamCaps: { audit: 1_000_000, apply: 100_000 },
      redisTls: null,
      temporalAddress: '127.0.0.1:7233',
      temporalNamespace: 'default',
      temporalTls: null,
      temporalApiKey: null,
      taskQueue: 'permit-chain',
      workerDeployment: 'permit-chain',
      workerVersioning: false,
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
      approverKeysDir: '',
      approverFingerprints: {},
      operators: [],
      approvalQuorum: { count: 1 },
      layerActivities: 'local',
      workflowCacheSize: 250,
      continueAsNewEvents: 2000,
      upgradeOnContinueAsNew: false,
      deadLetterMaxLen: 10000,
      exchange: 'paper',
      binance: null,
      rateLimit: null,
      maxQty: null,
      maxQtyBySymbol: {},
      maxNotional: null,
      maxNotionalBySymbol: {},
      telemetry: { metricsPort: null, metricsHost: '0.0.0.0', logLevel: 'info', otlpEndpoint: null, serviceName: null },
    });
  });

  it('treats an empty variable as unset', () => {
    expect(
      loadConfig({
        PERMIT_TTL_S: '',
        TRADING_MODE: '',
        REDIS_URL: '',
        GOVERNOR_RATE_LIMIT: '',
        GOVERNOR_MAX_QTY: '',
        GOVERNOR_MAX_NOTIONAL: '',
        GOVERNOR_MAX_QTY_BTCUSDT: '',
        GOVERNOR_MAX_NOTIONAL_BTCUSDT: '',
        P33_TOLERANCE_BTCUSDT: '',
      }),
    ).toEqual(loadConfig({}));
  });

  it('reads every variable that is set', () => {
    const config = loadConfig({
      REDIS_URL: 'rediss://redis.internal:6380/2',
      TEMPORAL_ADDRESS: 'temporal.internal:7234',
      TEMPORAL_NAMESPACE: 'trading',
      TASK_QUEUE: 'permit-chain-test',
      WORKER_DEPLOYMENT: 'permit-chain-eu',
      WORKER_VERSIONING: 'true',
      KEY_PREFIX: 'test:abc_1',
      TRADING_MODE: 'production',
      PERMIT_TTL_S: '120',
      PERMIT_MARGIN_S: '0',
      APPROVAL_TIMEOUT_S: '300',
      PLAN_MAX_AGE_S: '7200',
      RECHECK_INTERVAL_S: '10',
      P33_TOLERANCE: '0.0020',
      P33_TOLERANCE_ETHUSDT: '0.01',
      APPROVERS: 'alice,bob',
      APPROVER_FINGERPRINTS: `bob:${FINGERPRINT}`,
      APPROVAL_QUORUM: '2',
      APPROVAL_QUORUM_ABOVE_NOTIONAL: '10000.0',
      EXCHANGE: 'paper',
      GOVERNOR_RATE_LIMIT: '30/60s',
      GOVERNOR_MAX_QTY: '1.50',
      GOVERNOR_MAX_QTY_BTCUSDT: '0.1',
      GOVERNOR_MAX_NOTIONAL: '100000',
      GOVERNOR_MAX_NOTIONAL_ETHUSDT: '2500.5',
      METRICS_PORT: '9464',
      METRICS_HOST: '127.0.0.1',
      LOG_LEVEL: 'debug',
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://otel-collector:4318',
      OTEL_SERVICE_NAME: 'permit-chain-eu',
      REDIS_ALLOW_EVICTION: 'true',
      AUDIT_STREAM_MAXLEN: '5000',
      APPLY_STREAM_MAXLEN: '1000',
    });
    expect(config).toEqual<ChainConfig>({
      redisUrl: 'rediss://redis.internal:6380/2',
      redisAllowEviction: true,
      streamCaps: { audit: 5000, apply: 1000 },
      // rediss:// without REDIS_TLS_*: TLS with the system's CAs.
      redisTls: {},
      temporalAddress: 'temporal.internal:7234',
      temporalNamespace: 'trading',
      temporalTls: null,
      temporalApiKey: null,
      taskQueue: 'permit-chain-test',
      workerDeployment: 'permit-chain-eu',
      workerVersioning: true,
      keyPrefix: 'test:abc_1',
      tradingMode: 'production',
      permitTtlS: 120,
      permitMarginS: 0,
      approvalTimeoutS: 300,
      planMaxAgeS: 7200,
      recheckIntervalS: 10,
      p33Tolerance: '0.002',
      p33ToleranceBySymbol: { ETHUSDT: '0.01' },
      approvers: ['alice', 'bob'],
      approverKeysDir: '',
      approverFingerprints: { bob: FINGERPRINT },
      operators: [],
      approvalQuorum: { count: 2, aboveNotional: '10000' },
      layerActivities: 'local',
      workflowCacheSize: 250,
      continueAsNewEvents: 2000,
      upgradeOnContinueAsNew: false,
      deadLetterMaxLen: 10000,
      exchange: 'paper',
      binance: null,
      rateLimit: { count: 30, windowMs: 60_000 },
      maxQty: '1.5',
      maxQtyBySymbol: { BTCUSDT: '0.1' },
      maxNotional: '100000',
      maxNotionalBySymbol: { ETHUSDT: '2500.5' },
      telemetry: {
        metricsPort: 9464,
        metricsHost: '127.0.0.1',
        logLevel: 'debug',
        otlpEndpoint: 'http://otel-collector:4318',
        serviceName: 'permit-chain-eu',
      },
    });
  });

  it.each<[string, NodeJS.ProcessEnv, string]>([
    ['a TTL that is not a number', { PERMIT_TTL_S: 'abc' }, 'PERMIT_TTL_S'],
    ['a TTL of 0', { PERMIT_TTL_S: '0' }, 'PERMIT_TTL_S'],
    ['a fractional TTL', { PERMIT_TTL_S: '1.5' }, 'PERMIT_TTL_S'],
    ['a plan max age one second above 30 days', { PLAN_MAX_AGE_S: '2592001' }, 'PLAN_MAX_AGE_S'],
    ['a plan max age in milliseconds by mistake', { PLAN_MAX_AGE_S: '3600000' }, 'PLAN_MAX_AGE_S'],
    ['a continue-as-new threshold below 200', { CONTINUE_AS_NEW_EVENTS: '199' }, 'CONTINUE_AS_NEW_EVENTS'],
    ['a continue-as-new threshold above 10000', { CONTINUE_AS_NEW_EVENTS: '10001' }, 'CONTINUE_AS_NEW_EVENTS'],
    ['a dead-letter cap of 0', { DEAD_LETTER_MAXLEN: '0' }, 'DEAD_LETTER_MAXLEN'],
    ['a dead-letter cap above ten million', { DEAD_LETTER_MAXLEN: '10000001' }, 'DEAD_LETTER_MAXLEN'],
    ['a dead-letter cap with spaces', { DEAD_LETTER_MAXLEN: ' 100' }, 'DEAD_LETTER_MAXLEN'],
    ['a dead-letter cap that is not a whole number', { DEAD_LETTER_MAXLEN: '1e4' }, 'DEAD_LETTER_MAXLEN'],
    ['an unknown trading mode', { TRADING_MODE: 'live' }, 'TRADING_MODE'],
    ['a Redis URL that is not redis://', { REDIS_URL: 'http://x' }, 'REDIS_URL'],
    ['a Temporal address without a port', { TEMPORAL_ADDRESS: 'temporal.internal' }, 'TEMPORAL_ADDRESS'],
    ['a negative tolerance', { P33_TOLERANCE: '-1' }, 'P33_TOLERANCE'],
    ['a negative margin', { PERMIT_MARGIN_S: '-1' }, 'PERMIT_MARGIN_S'],
    ['a margin equal to the TTL', { PERMIT_MARGIN_S: '60', PERMIT_TTL_S: '60' }, 'PERMIT_MARGIN_S'],
    ['a margin above the default TTL', { PERMIT_MARGIN_S: '61' }, 'PERMIT_MARGIN_S'],
    ['an unknown exchange', { EXCHANGE: 'binance' }, 'EXCHANGE'],
    ['a bad per-symbol tolerance', { P33_TOLERANCE_BTCUSDT: 'abc' }, 'P33_TOLERANCE_BTCUSDT'],
    ['a rate limit of 0 per window', { GOVERNOR_RATE_LIMIT: '0/60s' }, 'GOVERNOR_RATE_LIMIT'],
    ['a rate limit window of 0', { GOVERNOR_RATE_LIMIT: '30/0s' }, 'GOVERNOR_RATE_LIMIT'],
    ['a rate limit that is not count/window', { GOVERNOR_RATE_LIMIT: 'abc' }, 'GOVERNOR_RATE_LIMIT'],
    ['a rate limit window in hours', { GOVERNOR_RATE_LIMIT: '30/60h' }, 'GOVERNOR_RATE_LIMIT'],
    ['a rate limit window without a unit', { GOVERNOR_RATE_LIMIT: '30/60' }, 'GOVERNOR_RATE_LIMIT'],
    ['a rate limit with a fractional count', { GOVERNOR_RATE_LIMIT: '1.5/60s' }, 'GOVERNOR_RATE_LIMIT'],
    ['a rate limit with a negative count', { GOVERNOR_RATE_LIMIT: '-1/60s' }, 'GOVERNOR_RATE_LIMIT'],
    ['a negative max qty', { GOVERNOR_MAX_QTY: '-1' }, 'GOVERNOR_MAX_QTY'],
    ['a max qty that is not a number', { GOVERNOR_MAX_QTY: 'abc' }, 'GOVERNOR_MAX_QTY'],
    ['a negative max notional', { GOVERNOR_MAX_NOTIONAL: '-100' }, 'GOVERNOR_MAX_NOTIONAL'],
    ['a max notional with an exponent', { GOVERNOR_MAX_NOTIONAL: '1e5' }, 'GOVERNOR_MAX_NOTIONAL'],
    ['a metrics port that is not a number', { METRICS_PORT: 'http' }, 'METRICS_PORT'],
    ['a metrics port above 65535', { METRICS_PORT: '65536' }, 'METRICS_PORT'],
    ['a negative metrics port', { METRICS_PORT: '-1' }, 'METRICS_PORT'],
    ['an unknown log level', { LOG_LEVEL: 'verbose' }, 'LOG_LEVEL'],
    [
      'an OTLP endpoint that is not http',
      { OTEL_EXPORTER_OTLP_ENDPOINT: 'otel-collector:4318' },
      'OTEL_EXPORTER_OTLP_ENDPOINT',
    ],
    ['a bad per-symbol max qty', { GOVERNOR_MAX_QTY_BTCUSDT: 'abc' }, 'GOVERNOR_MAX_QTY_BTCUSDT'],
    ['a negative per-symbol max qty', { GOVERNOR_MAX_QTY_BTCUSDT: '-0.1' }, 'GOVERNOR_MAX_QTY_BTCUSDT'],
    ['a bad per-symbol max notional', { GOVERNOR_MAX_NOTIONAL_ETHUSDT: 'x' }, 'GOVERNOR_MAX_NOTIONAL_ETHUSDT'],
    ['a pin without a name', { APPROVERS: 'alice', APPROVER_FINGERPRINTS: FINGERPRINT }, 'APPROVER_FINGERPRINTS'],
    [
      'a pin that is not a SHA256 fingerprint',
      { APPROVERS: 'alice', APPROVER_FINGERPRINTS: 'alice:MD5:00:11' },
      'APPROVER_FINGERPRINTS',
    ],
    [
      'a pin cut short',
      { APPROVERS: 'alice', APPROVER_FINGERPRINTS: `alice:${FINGERPRINT.slice(0, -1)}` },
      'APPROVER_FINGERPRINTS',
    ],
    [
      'a name pinned twice',
      { APPROVERS: 'alice', APPROVER_FINGERPRINTS: `alice:${FINGERPRINT},alice:${FINGERPRINT}` },
      'APPROVER_FINGERPRINTS',
    ],
    [
      'a pin for a name outside APPROVERS',
      { APPROVERS: 'alice', APPROVER_FINGERPRINTS: `mallory:${FINGERPRINT}` },
      'APPROVER_FINGERPRINTS',
    ],
    ['an eviction allowance that is not true or false', { REDIS_ALLOW_EVICTION: 'yes' }, 'REDIS_ALLOW_EVICTION'],
    ['a deployment name with a dot', { WORKER_DEPLOYMENT: 'permit.chain' }, 'WORKER_DEPLOYMENT'],
    ['a versioning switch that is not true or false', { WORKER_VERSIONING: 'on' }, 'WORKER_VERSIONING'],
    ['an audit stream cap below 1000', { AUDIT_STREAM_MAXLEN: '999' }, 'AUDIT_STREAM_MAXLEN'],
    ['an apply stream cap that is not a number', { APPLY_STREAM_MAXLEN: '1e5' }, 'APPLY_STREAM_MAXLEN'],
    ['an upgrade setting that is not a boolean', { UPGRADE_ON_CONTINUE_AS_NEW: 'yes' }, 'UPGRADE_ON_CONTINUE_AS_NEW'],
  ])('refuses %s, naming the variable', (_name, env, variable) => {
    const error = configError(env);
    expect(error).toBeInstanceOf(ConfigError);
    expect(error.message.startsWith(`config: ${variable} `)).toBe(true);
  });

  it('accepts a plan max age of exactly 30 days and continue-as-new thresholds at their bounds', () => {
    expect(loadConfig({ PLAN_MAX_AGE_S: '2592000' }).planMaxAgeS).toBe(2_592_000);
    expect(loadConfig({ CONTINUE_AS_NEW_EVENTS: '200' }).continueAsNewEvents).toBe(200);
    expect(loadConfig({ CONTINUE_AS_NEW_EVENTS: '10000' }).continueAsNewEvents).toBe(10_000);
  });

  it('accepts dead-letter caps at their bounds', () => {
    expect(loadConfig({ DEAD_LETTER_MAXLEN: '1' }).deadLetterMaxLen).toBe(1);
    expect(loadConfig({ DEAD_LETTER_MAXLEN: '10000000' }).deadLetterMaxLen).toBe(10_000_000);
  });

  it('accepts stream caps of exactly 1000 entries', () => {
    expect(loadConfig({ AUDIT_STREAM_MAXLEN: '1000', APPLY_STREAM_MAXLEN: '1000' }).streamCaps).toEqual({
      audit: 1000,
      apply: 1000,
    });
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

  it('reads APPROVER_FINGERPRINTS as name -> fingerprint, spaces and empty entries aside', () => {
    const other = `SHA256:${'B'.repeat(43)}`;
    expect(
      loadConfig({ APPROVERS: 'alice,bob', APPROVER_FINGERPRINTS: ` alice:${FINGERPRINT} ,, bob:${other},` })
        .approverFingerprints,
    ).toEqual({ alice: FINGERPRINT, bob: other });
  });

  it.each<[string, { count: number; windowMs: number } | null]>([
    ['', null],
    ['   ', null],
    ['30/60s', { count: 30, windowMs: 60_000 }],
    ['2/1m', { count: 2, windowMs: 60_000 }],
    ['1/1s', { count: 1, windowMs: 1_000 }],
    ['100/5m', { count: 100, windowMs: 300_000 }],
    [' 30/60s ', { count: 30, windowMs: 60_000 }],
  ])('reads GOVERNOR_RATE_LIMIT %j as %j', (raw, expected) => {
    expect(loadConfig({ GOVERNOR_RATE_LIMIT: raw }).rateLimit).toEqual(expected);
  });

  it('names GOVERNOR_RATE_LIMIT and the value it refuses', () => {
    expect(configError({ GOVERNOR_RATE_LIMIT: '30/60h' }).message).toBe(
      "config: GOVERNOR_RATE_LIMIT must be <count>/<window>s or <count>/<window>m, e.g. 30/60s (count up to 1000000, window up to 1 day) (got '30/60h')",
    );
  });

  it.each<[string, string, string | null]>([
    ['unset', '', null],
    ['a whole number', '2', '2'],
    ['a decimal with trailing zeros', '0.0620', '0.062'],
    ['8 decimals', '0.00000001', '0.00000001'],
    ['a leading dot', '.5', '0.5'],
    ['zero', '0', '0'],
    ['surrounding spaces', ' 1.5 ', '1.5'],
  ])('reads GOVERNOR_MAX_QTY and GOVERNOR_MAX_NOTIONAL: %s', (_name, raw, expected) => {
    const config = loadConfig({ GOVERNOR_MAX_QTY: raw, GOVERNOR_MAX_NOTIONAL: raw });
    expect(config.maxQty).toBe(expected);
    expect(config.maxNotional).toBe(expected);
  });

  it.each<[string, NodeJS.ProcessEnv, Partial<ChainConfig>]>([
    [
      'a max qty override is not a tolerance',
      { GOVERNOR_MAX_QTY_BTCUSDT: '0.5' },
      { maxQtyBySymbol: { BTCUSDT: '0.5' }, maxNotionalBySymbol: {}, p33ToleranceBySymbol: {} },
    ],
    [
      'a max notional override is not a max qty',
      { GOVERNOR_MAX_NOTIONAL_XRPUSDT: '5000' },
      { maxQtyBySymbol: {}, maxNotionalBySymbol: { XRPUSDT: '5000' }, p33ToleranceBySymbol: {} },
    ],
    [
      'a tolerance override is not a size limit',
      { P33_TOLERANCE_ETHUSDT: '0.01' },
      { maxQtyBySymbol: {}, maxNotionalBySymbol: {}, p33ToleranceBySymbol: { ETHUSDT: '0.01' } },
    ],
    [
      'all three for one symbol, in canonical form',
      { GOVERNOR_MAX_QTY_BTCUSDT: '0.50', GOVERNOR_MAX_NOTIONAL_BTCUSDT: '1000.0', P33_TOLERANCE_BTCUSDT: '0.0010' },
      {
        maxQtyBySymbol: { BTCUSDT: '0.5' },
        maxNotionalBySymbol: { BTCUSDT: '1000' },
        p33ToleranceBySymbol: { BTCUSDT: '0.001' },
      },
    ],
    [
      'several symbols',
      { GOVERNOR_MAX_QTY_BTCUSDT: '0.1', GOVERNOR_MAX_QTY_ETHUSDT: '2' },
      { maxQtyBySymbol: { BTCUSDT: '0.1', ETHUSDT: '2' } },
    ],
    [
      'a lowercase suffix is ignored',
      { GOVERNOR_MAX_QTY_btcusdt: '0.1', GOVERNOR_MAX_NOTIONAL_Btcusdt: '1' },
      { maxQtyBySymbol: {}, maxNotionalBySymbol: {} },
    ],
    [
      'an empty override is ignored',
      { GOVERNOR_MAX_QTY_BTCUSDT: '', GOVERNOR_MAX_NOTIONAL_BTCUSDT: '' },
      { maxQtyBySymbol: {}, maxNotionalBySymbol: {} },
    ],
    [
      'an override leaves the default as set',
      { GOVERNOR_MAX_QTY: '1', GOVERNOR_MAX_QTY_BTCUSDT: '0.1' },
      { maxQty: '1', maxQtyBySymbol: { BTCUSDT: '0.1' }, maxNotional: null },
    ],
  ])('reads per-symbol overrides: %s', (_name, env, expected) => {
    const config = loadConfig(env);
    // Exact per field: toMatchObject would let {} match a map that has entries.
    const picked = Object.fromEntries(Object.keys(expected).map((key) => [key, config[key as keyof ChainConfig]]));
    expect(picked).toEqual(expected);
  });
});

describe('sizeLimitsFor', () => {
  const limits = (env: NodeJS.ProcessEnv, symbol: string) => sizeLimitsFor(loadConfig(env), symbol);

  it.each<[string, NodeJS.ProcessEnv, string, { maxQty?: string; maxNotional?: string }]>([
    ['no limit set', {}, 'BTCUSDT', {}],
    [
      'only the defaults',
      { GOVERNOR_MAX_QTY: '1', GOVERNOR_MAX_NOTIONAL: '50000' },
      'BTCUSDT',
      { maxQty: '1', maxNotional: '50000' },
    ],
    ['only a max qty', { GOVERNOR_MAX_QTY: '1' }, 'BTCUSDT', { maxQty: '1' }],
    ['only a max notional', { GOVERNOR_MAX_NOTIONAL: '50000' }, 'BTCUSDT', { maxNotional: '50000' }],
    [
      'symbol overrides win over the defaults',
      {
        GOVERNOR_MAX_QTY: '1',
        GOVERNOR_MAX_NOTIONAL: '50000',
        GOVERNOR_MAX_QTY_BTCUSDT: '0.1',
        GOVERNOR_MAX_NOTIONAL_BTCUSDT: '9000',
      },
      'BTCUSDT',
      { maxQty: '0.1', maxNotional: '9000' },
    ],
    [
      'another symbol keeps the defaults',
      {
        GOVERNOR_MAX_QTY: '1',
        GOVERNOR_MAX_NOTIONAL: '50000',
        GOVERNOR_MAX_QTY_BTCUSDT: '0.1',
        GOVERNOR_MAX_NOTIONAL_BTCUSDT: '9000',
      },
      'ETHUSDT',
      { maxQty: '1', maxNotional: '50000' },
    ],
    ['an override with no default', { GOVERNOR_MAX_QTY_BTCUSDT: '0.1' }, 'BTCUSDT', { maxQty: '0.1' }],
    ['no limit for a symbol without an override or default', { GOVERNOR_MAX_QTY_BTCUSDT: '0.1' }, 'ETHUSDT', {}],
    [
      'an override of 0 wins over the default',
      { GOVERNOR_MAX_QTY: '1', GOVERNOR_MAX_QTY_BTCUSDT: '0' },
      'BTCUSDT',
      { maxQty: '0' },
    ],
    [
      'a max notional override leaves the max qty default',
      { GOVERNOR_MAX_QTY: '1', GOVERNOR_MAX_NOTIONAL_BTCUSDT: '9000' },
      'BTCUSDT',
      { maxQty: '1', maxNotional: '9000' },
    ],
  ])('%s (%j, %s)', (_name, env, symbol, expected) => {
    const got = limits(env, symbol);
    // toStrictEqual: a missing limit is an absent key, not one set to undefined or null.
    expect(got).toStrictEqual(expected);
    expect(Object.keys(got).sort()).toEqual(Object.keys(expected).sort());
  });

  it('takes the limits from a hand-made config', () => {
    expect(
      sizeLimitsFor(
        { maxQty: null, maxQtyBySymbol: {}, maxNotional: '10', maxNotionalBySymbol: { ETHUSDT: '5' } },
        'ETHUSDT',
      ),
    ).toStrictEqual({ maxNotional: '5' });
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

describe('chainRules', () => {
  it('carries the rules a plan runs under', () => {
    const config = loadConfig({ TRADING_MODE: 'production', PERMIT_TTL_S: '90', PERMIT_MARGIN_S: '7' });
    expect(chainRules(config)).toEqual({
      mode: 'production',
      permitTtlS: 90,
      permitMarginS: 7,
      recheckIntervalS: 30,
      planMaxAgeS: 3600,
      approvalTimeoutS: 600,
      approvers: [],
      layerActivities: 'local',
      continueAsNewEvents: 2000,
      upgradeOnContinueAsNew: false,
      approvalQuorum: { count: 1 },
    });
  });

  it('carries UPGRADE_ON_CONTINUE_AS_NEW to the workflow, off unless set to true', () => {
    expect(chainRules(loadConfig({ UPGRADE_ON_CONTINUE_AS_NEW: 'true' })).upgradeOnContinueAsNew).toBe(true);
    expect(chainRules(loadConfig({ UPGRADE_ON_CONTINUE_AS_NEW: 'false' })).upgradeOnContinueAsNew).toBe(false);
  });

  it('carries the approvers', () => {
    const config = loadConfig({ TRADING_MODE: 'production', APPROVERS: 'alice, bob' });
    expect(chainRules(config)).toMatchObject({ mode: 'production', approvers: ['alice', 'bob'] });
  });

  it('carries the approval quorum and its threshold', () => {
    const config = loadConfig({
      TRADING_MODE: 'production',
      APPROVERS: 'alice,bob,carol',
      APPROVAL_QUORUM: '2',
      APPROVAL_QUORUM_ABOVE_NOTIONAL: '5000',
    });
    expect(chainRules(config).approvalQuorum).toEqual({ count: 2, aboveNotional: '5000' });
  });
});

describe('APPROVAL_QUORUM', () => {
  it.each([
    ['0', 'must be a whole number of approvers from 1 to 20'],
    ['two', 'must be a whole number of approvers from 1 to 20'],
    ['1.5', 'must be a whole number of approvers from 1 to 20'],
    ['21', 'must be a whole number of approvers from 1 to 20'],
  ])('refuses %s, naming the variable', (value, message) => {
    const error = configError({ APPROVERS: 'alice,bob', APPROVAL_QUORUM: value });
    expect(error.message).toBe(`config: APPROVAL_QUORUM ${message} (got '${value}')`);
  });

  it('refuses a quorum larger than APPROVERS, naming both and the fix', () => {
    expect(configError({ APPROVERS: 'alice,bob', APPROVAL_QUORUM: '3' }).message).toBe(
      'config: APPROVAL_QUORUM 3 needs at least that many names in APPROVERS (got 2: alice, bob): ' +
        'add approvers or lower the quorum',
    );
    expect(configError({ APPROVAL_QUORUM: '2' }).message).toMatch(/^config: APPROVAL_QUORUM 2 needs .* \(got 0\)/);
  });

  it('takes a quorum equal to the approvers, and the default 1 without approvers (testnet)', () => {
    expect(loadConfig({ APPROVERS: 'alice,bob', APPROVAL_QUORUM: '2' }).approvalQuorum).toEqual({ count: 2 });
    expect(loadConfig({}).approvalQuorum).toEqual({ count: 1 });
  });

  it('refuses a threshold that is not a decimal', () => {
    expect(configError({ APPROVAL_QUORUM_ABOVE_NOTIONAL: '10k' }).message).toBe(
      "config: APPROVAL_QUORUM_ABOVE_NOTIONAL must be a decimal number >= 0 (got '10k')",
    );
  });
});
