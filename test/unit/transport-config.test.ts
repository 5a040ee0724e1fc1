import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, Secret } from '../../lib/config';
import { redisOptions, temporalConnectionOptions } from '../../lib/connections';
import { redactUrl } from '../../lib/redact';
import { makeCertificates, type TestCertificates } from '../tls-servers';

const API_KEY = 'tmprl-api-key-0123456789abcdef';

let dir: string;
let certs: TestCertificates;
let notPem: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'permit-chain-tls-config-'));
  certs = makeCertificates(dir);
  notPem = join(dir, 'not.pem');
  writeFileSync(notPem, 'this is not a certificate\n');
  mkdirSync(join(dir, 'a-directory'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function configError(env: NodeJS.ProcessEnv): string {
  try {
    loadConfig(env);
  } catch (error) {
    if (error instanceof ConfigError) return error.message;
    throw error;
  }
  return expect.fail(`loadConfig accepted ${JSON.stringify(env)}`);
}

describe('the TLS variables', () => {
  it('are read as paths, checked, and kept out of what the config prints', () => {
    const config = loadConfig({
      REDIS_URL: 'rediss://chain:S3cretPw@redis.internal:6380/0',
      REDIS_TLS_CA_FILE: certs.ca,
      REDIS_TLS_CERT_FILE: certs.clientCert,
      REDIS_TLS_KEY_FILE: certs.clientKey,
      TEMPORAL_TLS_CA_FILE: certs.ca,
      TEMPORAL_TLS_CERT_FILE: certs.clientCert,
      TEMPORAL_TLS_KEY_FILE: certs.clientKey,
      TEMPORAL_TLS_SERVER_NAME: 'temporal.internal',
      TEMPORAL_API_KEY: API_KEY,
    });
    expect(config).toMatchObject({
      redisTls: { caFile: certs.ca, client: { certFile: certs.clientCert, keyFile: certs.clientKey } },
      temporalTls: {
        caFile: certs.ca,
        client: { certFile: certs.clientCert, keyFile: certs.clientKey },
        serverName: 'temporal.internal',
      },
    });
    expect(config.temporalApiKey?.reveal()).toBe(API_KEY);
    for (const printed of [JSON.stringify(config), inspect(config, { depth: 5 }), String(config.temporalApiKey)]) {
      expect(printed).not.toContain(API_KEY);
      expect(printed).not.toContain('BEGIN');
    }
  });

  it.each<[string, () => NodeJS.ProcessEnv, boolean]>([
    ['nothing set', () => ({}), false],
    ['a CA file', () => ({ TEMPORAL_TLS_CA_FILE: certs.ca }), true],
    ['a server name', () => ({ TEMPORAL_TLS_SERVER_NAME: 'temporal.internal' }), true],
    [
      'a client certificate',
      () => ({ TEMPORAL_TLS_CERT_FILE: certs.clientCert, TEMPORAL_TLS_KEY_FILE: certs.clientKey }),
      true,
    ],
    // An API key never travels in plain text: Temporal Cloud's endpoints are TLS with public CAs.
    ['an API key alone', () => ({ TEMPORAL_API_KEY: API_KEY }), true],
  ])('turn TLS to Temporal on or off: %s', (_case, env, on) => {
    expect(loadConfig(env()).temporalTls !== null).toBe(on);
  });

  it('turns TLS to Redis on with rediss:// and only then', () => {
    expect(loadConfig({ REDIS_URL: 'redis://127.0.0.1:6379/0' }).redisTls).toBeNull();
    expect(loadConfig({ REDIS_URL: 'rediss://127.0.0.1:6380/0' }).redisTls).toEqual({});
  });

  it.each<[string, () => NodeJS.ProcessEnv, () => string]>([
    [
      'a CA file that does not exist',
      () => ({ REDIS_URL: 'rediss://h:6380/0', REDIS_TLS_CA_FILE: '/nonexistent/ca.pem' }),
      () => "config: REDIS_TLS_CA_FILE cannot be read: no such file (got '/nonexistent/ca.pem')",
    ],
    [
      'a directory for a file',
      () => ({ TEMPORAL_TLS_CA_FILE: join(dir, 'a-directory') }),
      () => `config: TEMPORAL_TLS_CA_FILE cannot be read: is a directory (got '${join(dir, 'a-directory')}')`,
    ],
    [
      'a CA file that is not PEM',
      () => ({ TEMPORAL_TLS_CA_FILE: notPem }),
      () => `config: TEMPORAL_TLS_CA_FILE must be a PEM certificate (got '${notPem}')`,
    ],
    [
      'a certificate where the key belongs',
      () => ({ TEMPORAL_TLS_CERT_FILE: certs.clientCert, TEMPORAL_TLS_KEY_FILE: certs.clientCert }),
      () => `config: TEMPORAL_TLS_KEY_FILE must be an unencrypted PEM private key (got '${certs.clientCert}')`,
    ],
    [
      'a client certificate without its key',
      () => ({ REDIS_URL: 'rediss://h:6380/0', REDIS_TLS_CERT_FILE: certs.clientCert }),
      () => "config: REDIS_TLS_CERT_FILE needs REDIS_TLS_KEY_FILE (the certificate's private key)",
    ],
    [
      'a key without its certificate',
      () => ({ TEMPORAL_TLS_KEY_FILE: certs.clientKey }),
      () => 'config: TEMPORAL_TLS_KEY_FILE needs TEMPORAL_TLS_CERT_FILE (the certificate of that key)',
    ],
    [
      "a key that is not the certificate's",
      () => ({ TEMPORAL_TLS_CERT_FILE: certs.clientCert, TEMPORAL_TLS_KEY_FILE: certs.serverKey }),
      () => `config: TEMPORAL_TLS_KEY_FILE is not the private key of TEMPORAL_TLS_CERT_FILE (got '${certs.serverKey}')`,
    ],
    [
      'TLS files with a redis:// URL',
      () => ({ REDIS_URL: 'redis://chain:S3cretPw@h:6379/0', REDIS_TLS_CA_FILE: certs.ca }),
      () => "config: REDIS_TLS_CA_FILE needs a rediss:// REDIS_URL (got 'redis://***@h:6379/0')",
    ],
    [
      'a server name with a space',
      () => ({ TEMPORAL_TLS_SERVER_NAME: 'temporal internal' }),
      () => "config: TEMPORAL_TLS_SERVER_NAME must be a host name, e.g. temporal.internal (got 'temporal internal')",
    ],
    [
      'an API key over two lines',
      () => ({ TEMPORAL_API_KEY: `${API_KEY}\n${API_KEY}` }),
      () => 'config: TEMPORAL_API_KEY must be one line of printable characters without spaces (value not shown)',
    ],
    [
      'a Redis URL with a password that does not parse',
      () => ({ REDIS_URL: 'rediss://chain:S3cretPw@h:port/0' }),
      () => "config: REDIS_URL must be a redis:// or rediss:// URL (got 'rediss://***@h:port/0')",
    ],
  ])('refuses %s with one line naming the variable, and no secret', (_case, env, message) => {
    const refusal = configError(env());
    expect(refusal).toBe(message());
    expect(refusal).not.toContain('S3cretPw');
    expect(refusal).not.toContain(API_KEY);
  });
});

describe('redactUrl', () => {
  it.each([
    ['redis://default:S3cretPw@127.0.0.1:6379/0', 'redis://***@127.0.0.1:6379/0'],
    ['rediss://:S3cretPw@redis.internal:6380', 'rediss://***@redis.internal:6380'],
    ['rediss://chain@redis.internal:6380', 'rediss://***@redis.internal:6380'],
    ['redis://127.0.0.1:6379/0', 'redis://127.0.0.1:6379/0'],
    // An unescaped @ in the password: all of it goes.
    ['redis://u:S3cret@Pw@h:1/0', 'redis://***@h:1/0'],
    [
      'worker: Redis redis://a:S3cretPw@h1/0 and rediss://b:S3cretPw@h2/0',
      'worker: Redis redis://***@h1/0 and rediss://***@h2/0',
    ],
    ['no URL here: user@host', 'no URL here: user@host'],
  ])('%s → %s', (text, expected) => {
    expect(redactUrl(text)).toBe(expected);
  });
});

describe('Secret', () => {
  it('prints as *** however it is printed, and reveals its value on request', () => {
    const secret = new Secret(API_KEY);
    for (const printed of [String(secret), JSON.stringify({ secret }), inspect({ secret })]) {
      expect(printed).toContain('***');
      expect(printed).not.toContain(API_KEY);
    }
    expect(secret.reveal()).toBe(API_KEY);
  });
});

describe('the connection options', () => {
  it('are the address alone for a plain Temporal and a plain Redis', () => {
    const config = loadConfig({});
    expect(temporalConnectionOptions(config)).toStrictEqual({ address: '127.0.0.1:7233' });
    expect(redisOptions(config)).not.toHaveProperty('tls');
  });

  it('carry the TLS material, the server name and the API key to Temporal', () => {
    const config = loadConfig({
      TEMPORAL_ADDRESS: '127.0.0.1:7443',
      TEMPORAL_TLS_CA_FILE: certs.ca,
      TEMPORAL_TLS_CERT_FILE: certs.clientCert,
      TEMPORAL_TLS_KEY_FILE: certs.clientKey,
      TEMPORAL_TLS_SERVER_NAME: 'localhost',
      TEMPORAL_API_KEY: API_KEY,
    });
    expect(temporalConnectionOptions(config)).toStrictEqual({
      address: '127.0.0.1:7443',
      tls: {
        serverNameOverride: 'localhost',
        serverRootCACertificate: readFileSync(certs.ca),
        clientCertPair: { crt: readFileSync(certs.clientCert), key: readFileSync(certs.clientKey) },
      },
      apiKey: API_KEY,
    });
  });

  it("use the system's CAs for an API key alone (Temporal Cloud)", () => {
    const config = loadConfig({ TEMPORAL_ADDRESS: 'ns.acct.tmprl.cloud:7233', TEMPORAL_API_KEY: API_KEY });
    expect(temporalConnectionOptions(config)).toStrictEqual({
      address: 'ns.acct.tmprl.cloud:7233',
      tls: {},
      apiKey: API_KEY,
    });
  });

  it('carry the TLS material to Redis for rediss://', () => {
    const config = loadConfig({
      REDIS_URL: 'rediss://chain:pw@127.0.0.1:6380/0',
      REDIS_TLS_CA_FILE: certs.ca,
      REDIS_TLS_CERT_FILE: certs.clientCert,
      REDIS_TLS_KEY_FILE: certs.clientKey,
    });
    expect(redisOptions(config).tls).toStrictEqual({
      ca: readFileSync(certs.ca),
      cert: readFileSync(certs.clientCert),
      key: readFileSync(certs.clientKey),
    });
    expect(redisOptions(loadConfig({ REDIS_URL: 'rediss://127.0.0.1:6380/0' })).tls).toStrictEqual({});
  });
});
