import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../lib/config';

const KEY = 'vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A';
const SECRET = 'NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j';

const dir = mkdtempSync(join(tmpdir(), 'permit-chain-binance-config-'));
function file(name: string, contents: string): string {
  const path = join(dir, name);
  writeFileSync(path, contents, { mode: 0o600 });
  return path;
}

function refusal(env: NodeJS.ProcessEnv): string {
  try {
    loadConfig(env);
  } catch (error) {
    if (error instanceof ConfigError) return error.message;
    throw error;
  }
  return expect.fail(`loadConfig accepted ${Object.keys(env).join(', ')}`);
}

const testnet = { EXCHANGE: 'binance-usdm-testnet', BINANCE_API_KEY: KEY, BINANCE_API_SECRET: SECRET };

describe('loadConfig: Binance', () => {
  it('has no Binance settings for the paper exchange, even with keys set', () => {
    expect(loadConfig({ BINANCE_API_KEY: KEY, BINANCE_API_SECRET: SECRET }).binance).toBeNull();
  });

  it("reads the testnet's defaults, and the key and secret as secrets", () => {
    const config = loadConfig(testnet);
    expect(config.exchange).toBe('binance-usdm-testnet');
    expect(config.binance).toMatchObject({
      baseUrl: 'https://testnet.binancefuture.com',
      recvWindowMs: 5000,
      rulesRefreshS: 300,
    });
    expect(config.binance?.apiKey.reveal()).toBe(KEY);
    expect(config.binance?.apiSecret.reveal()).toBe(SECRET);
  });

  it('uses the live endpoint for binance-usdm, and BINANCE_BASE_URL over either (no trailing slash)', () => {
    expect(loadConfig({ ...testnet, EXCHANGE: 'binance-usdm' }).binance?.baseUrl).toBe('https://fapi.binance.com');
    const config = loadConfig({
      ...testnet,
      EXCHANGE: 'binance-usdm',
      BINANCE_BASE_URL: 'http://127.0.0.1:18080/',
      BINANCE_RECV_WINDOW_MS: '60000',
      BINANCE_RULES_REFRESH_S: '30',
    });
    expect(config.binance).toMatchObject({
      baseUrl: 'http://127.0.0.1:18080',
      recvWindowMs: 60_000,
      rulesRefreshS: 30,
    });
  });

  it('reads the key and the secret from files, a trailing newline allowed', () => {
    const config = loadConfig({
      EXCHANGE: 'binance-usdm',
      BINANCE_API_KEY_FILE: file('key', `${KEY}\n`),
      BINANCE_API_SECRET_FILE: file('secret', SECRET),
    });
    expect(config.binance?.apiKey.reveal()).toBe(KEY);
    expect(config.binance?.apiSecret.reveal()).toBe(SECRET);
  });

  it.each<[string, () => NodeJS.ProcessEnv, string]>([
    [
      'a Binance exchange without keys',
      () => ({ EXCHANGE: 'binance-usdm' }),
      'config: EXCHANGE=binance-usdm needs BINANCE_API_KEY (or BINANCE_API_KEY_FILE) and BINANCE_API_SECRET (or BINANCE_API_SECRET_FILE)',
    ],
    [
      'a Binance exchange without its secret',
      () => ({ EXCHANGE: 'binance-usdm-testnet', BINANCE_API_KEY: KEY }),
      'config: EXCHANGE=binance-usdm-testnet needs BINANCE_API_SECRET (or BINANCE_API_SECRET_FILE)',
    ],
    [
      'the key set both ways',
      () => ({ ...testnet, BINANCE_API_KEY_FILE: file('key2', KEY) }),
      'config: BINANCE_API_KEY and BINANCE_API_KEY_FILE are both set; set one of them',
    ],
    [
      'the secret set both ways',
      () => ({ ...testnet, BINANCE_API_SECRET_FILE: file('secret2', SECRET) }),
      'config: BINANCE_API_SECRET and BINANCE_API_SECRET_FILE are both set; set one of them',
    ],
    [
      'a secret file that is missing',
      () => ({ EXCHANGE: 'binance-usdm', BINANCE_API_KEY: KEY, BINANCE_API_SECRET_FILE: join(dir, 'nope') }),
      `config: BINANCE_API_SECRET_FILE cannot be read: no such file (got '${join(dir, 'nope')}')`,
    ],
    [
      'a secret file of two lines',
      () => ({
        ...testnet,
        BINANCE_API_SECRET: undefined,
        BINANCE_API_SECRET_FILE: file('two', `${SECRET}\n${KEY}\n`),
      }),
      `config: BINANCE_API_SECRET_FILE must hold one line of printable characters without spaces (got '${join(dir, 'two')}', contents not shown)`,
    ],
    [
      'a key with a space in it',
      () => ({ ...testnet, BINANCE_API_KEY: `${KEY} ${SECRET}` }),
      'config: BINANCE_API_KEY must be one line of printable characters without spaces (value not shown)',
    ],
    [
      'a secret over two lines',
      () => ({ ...testnet, BINANCE_API_SECRET: `${SECRET}\n${KEY}` }),
      'config: BINANCE_API_SECRET must be one line of printable characters without spaces (value not shown)',
    ],
    [
      'a recvWindow above 60000',
      () => ({ ...testnet, BINANCE_RECV_WINDOW_MS: '60001' }),
      "config: BINANCE_RECV_WINDOW_MS must be a whole number of milliseconds from 1 to 60000 (got '60001')",
    ],
    [
      'a recvWindow of 0',
      () => ({ ...testnet, BINANCE_RECV_WINDOW_MS: '0' }),
      "config: BINANCE_RECV_WINDOW_MS must be a whole number of milliseconds from 1 to 60000 (got '0')",
    ],
    [
      'a rules refresh of 1.5 s',
      () => ({ ...testnet, BINANCE_RULES_REFRESH_S: '1.5' }),
      "config: BINANCE_RULES_REFRESH_S must be a whole number of seconds > 0 (got '1.5')",
    ],
    [
      'a plain-HTTP endpoint elsewhere than this machine',
      () => ({ ...testnet, BINANCE_BASE_URL: 'http://fapi.binance.com' }),
      "config: BINANCE_BASE_URL must be an https:// URL without credentials or query (http:// only to 127.0.0.1 or localhost) (got 'http://fapi.binance.com')",
    ],
    [
      'an endpoint with credentials in it',
      () => ({ ...testnet, BINANCE_BASE_URL: `https://u:${SECRET}@fapi.binance.com` }),
      "config: BINANCE_BASE_URL must be an https:// URL without credentials or query (http:// only to 127.0.0.1 or localhost) (got 'https://***@fapi.binance.com')",
    ],
    [
      'an exchange that is not one of the three',
      () => ({ EXCHANGE: 'binance' }),
      "config: EXCHANGE must be one of paper, binance-usdm-testnet, binance-usdm (got 'binance')",
    ],
  ])('refuses %s with one line naming the variable, and neither key nor secret', (_case, env, message) => {
    const refused = refusal(env());
    expect(refused).toBe(message);
    expect(refused).not.toContain(KEY);
    expect(refused).not.toContain(SECRET);
  });

  it('never prints the key or the secret: JSON, inspect, String, template', () => {
    for (const config of [
      loadConfig(testnet),
      loadConfig({
        EXCHANGE: 'binance-usdm',
        BINANCE_API_KEY_FILE: file('key3', KEY),
        BINANCE_API_SECRET_FILE: file('secret3', SECRET),
      }),
    ]) {
      const printed = [
        JSON.stringify(config),
        inspect(config, { depth: 10 }),
        String(config.binance?.apiKey),
        `${String(config.binance?.apiSecret)}`,
        JSON.stringify(config.binance),
      ];
      for (const text of printed) {
        expect(text).not.toContain(KEY);
        expect(text).not.toContain(SECRET);
      }
      expect(JSON.stringify(config.binance)).toContain('"apiKey":"***"');
    }
  });
});
