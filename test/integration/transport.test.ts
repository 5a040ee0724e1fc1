import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createSecureServer } from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { connectTemporal } from '../../client/plans';
import { loadConfig } from '../../lib/config';
import { temporalConnectionOptions } from '../../lib/connections';
import { freePort } from '../../cli/servers';
import type { ChainStatus } from '../../contract/types';
import { connectWorkerTemporal } from '../../workers/worker';
import { CLI, runCli } from '../../scripts/stack/cli-runner';
import { chainHarness, eventually, pairs, setPositions, testEnv, type ChainHarness, type TestEnv } from '../helpers';
import {
  makeCertificates,
  startMtlsTerminator,
  startTlsRedis,
  type RunningServer,
  type TestCertificates,
} from '../tls-servers';

/** Made up per run, so that a test finding them in output cannot be fooled by a constant elsewhere. */
const PASSWORD = `S3cretPw-${randomBytes(6).toString('hex')}`;
const API_KEY = `tmprl-key-${randomBytes(12).toString('hex')}`;
/** A refusal must come at once: well before the SDK's own 10 s connect timeout. */
const PROMPT_MS = 5_000;

let dir: string;
let certs: TestCertificates;
let redisServer: RunningServer;
let terminator: RunningServer;
let secure: TestEnv;
let h: ChainHarness;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'permit-chain-tls-'));
  certs = makeCertificates(dir);
  [redisServer, terminator] = await Promise.all([
    startTlsRedis(certs, { user: 'chain', password: PASSWORD }),
    startMtlsTerminator(certs, inject('temporalAddress')),
  ]);
  secure = testEnv({
    REDIS_URL: `rediss://chain:${PASSWORD}@127.0.0.1:${redisServer.port}/0`,
    REDIS_TLS_CA_FILE: certs.ca,
    REDIS_TLS_CERT_FILE: certs.clientCert,
    REDIS_TLS_KEY_FILE: certs.clientKey,
    TEMPORAL_ADDRESS: `127.0.0.1:${terminator.port}`,
    TEMPORAL_TLS_CA_FILE: certs.ca,
    TEMPORAL_TLS_CERT_FILE: certs.clientCert,
    TEMPORAL_TLS_KEY_FILE: certs.clientKey,
    // The certificate names localhost as well as 127.0.0.1: a name, as a real deployment would use.
    TEMPORAL_TLS_SERVER_NAME: 'localhost',
    // The dev server ignores it; here it must travel and never be printed.
    TEMPORAL_API_KEY: API_KEY,
  });
  h = await chainHarness(loadConfig(secure));
});

afterAll(async () => {
  await h?.close();
  await terminator?.stop();
  await redisServer?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** The secure environment with some variables replaced, and those given as undefined unset (empty). */
function envWith(changes: Record<string, string | undefined>): Record<string, string> {
  const env: Record<string, string> = { ...secure };
  for (const [name, value] of Object.entries(changes)) env[name] = value ?? '';
  return env;
}

function expectNoSecret(text: string): void {
  expect(text).not.toContain(PASSWORD);
  expect(text).not.toContain(API_KEY);
}

/** A long-running CLI command (worker, dev) as a separate process, stdout and stderr together. */
function startProcess(command: string, env: Record<string, string>) {
  const child = spawn(process.execPath, [CLI, command], { env: { ...process.env, ...env }, stdio: 'pipe' });
  let out = '';
  child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (out += chunk.toString()));
  const exited = new Promise<number | null>((done) => child.once('exit', done));
  return {
    output: () => out,
    waitFor: (pattern: RegExp, timeoutMs = 60_000) =>
      eventually(() => Promise.resolve(pattern.test(out) || undefined), timeoutMs, `${pattern} in\n${out}`),
    stop: async (signal: NodeJS.Signals = 'SIGTERM') => {
      if (child.exitCode === null) child.kill(signal);
      return exited;
    },
  };
}

describe('Redis over TLS with an ACL user, Temporal behind a terminator that checks client certificates', () => {
  it('runs a plan through the whole chain: worker and CLI as separate processes', async () => {
    const worker = startProcess('worker', secure);
    try {
      await worker.waitFor(/"msg":"worker: testnet mode .*, task queue /);
      await setPositions(h, 'SOLUSDT', '2', '2');
      const run = await runCli(
        ['submit', '--symbol', 'SOLUSDT', '--side', 'SELL', '--qty', '0.5', '--wait', '--json'],
        secure,
      );
      expect(run.stderr).toBe('');
      expect(run.code).toBe(0);
      const status = JSON.parse(run.stdout) as ChainStatus;
      expect(status).toMatchObject({ outcome: 'executed', stage: 'done' });

      // What an operator checks, read back over TLS as the ACL user.
      const published = (await h.redis.xrange(h.keys.applyStream, '-', '+')).map(([, f]) =>
        Object.fromEntries(pairs(f)),
      );
      expect(published.filter((e) => e.plan_id === status.plan_id)).toHaveLength(1);
      expect(await h.redis.hget(h.keys.execution(status.plan_id), 'filled_qty')).toBe('0.5');
      const position = await runCli(['position', 'SOLUSDT', '--json'], secure);
      expect(JSON.parse(position.stdout)).toMatchObject({ exchange_amount: '1.5', ledger_amount: '1.5' });

      expect(await worker.stop()).toBe(0);
      expect(worker.output()).toContain(
        `task queue ${secure.TASK_QUEUE} on 127.0.0.1:${terminator.port} (TLS), Redis rediss://***@127.0.0.1:${redisServer.port}/0`,
      );
      for (const text of [worker.output(), run.stdout, run.stderr, position.stdout, position.stderr])
        expectNoSecret(text);
    } finally {
      await worker.stop('SIGKILL');
    }
  });

  it('prints no password or API key in `dev`, whose lines name both servers', async () => {
    const dev = startProcess('dev', { ...secure, PERMIT_CHAIN_DATA_DIR: join(dir, 'dev-data') });
    try {
      await dev.waitFor(/^ready /m, 90_000);
      expect(await dev.stop('SIGINT')).toBe(0);
      const out = dev.output();
      expect(out).toContain(`dev: using the Redis at rediss://***@127.0.0.1:${redisServer.port}/0`);
      expect(out).toContain(`dev: using the Temporal server at 127.0.0.1:${terminator.port} (TLS)`);
      expect(out).toMatch(new RegExp(`^ready .* Redis rediss://\\*\\*\\*@127\\.0\\.0\\.1:${redisServer.port}/0 `, 'm'));
      expectNoSecret(out);
    } finally {
      await dev.stop('SIGKILL');
    }
  }, 120_000);
});

describe('a connection without the right certificate or password fails at once with one clear line', () => {
  const redisAt = () => `permit-chain: Redis at rediss://\\*\\*\\*@127\\.0\\.0\\.1:${redisServer.port}/0: `;
  const temporalAt = () => `permit-chain: Temporal at 127\\.0\\.0\\.1:${terminator.port}: `;

  it.each<[string, string[], () => Record<string, string | undefined>, () => string]>([
    [
      'Redis, no client certificate',
      ['worker'],
      () => ({ REDIS_TLS_CERT_FILE: undefined, REDIS_TLS_KEY_FILE: undefined }),
      () =>
        `${redisAt()}TLS: the server requires a client certificate \\(set REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE\\)`,
    ],
    [
      'Redis, a client certificate from another CA',
      ['worker'],
      () => ({ REDIS_TLS_CERT_FILE: certs.otherClientCert, REDIS_TLS_KEY_FILE: certs.otherClientKey }),
      () =>
        `${redisAt()}TLS: the server refused the client certificate \\(unknown ca\\): REDIS_TLS_CERT_FILE must hold a certificate from a CA it trusts`,
    ],
    [
      "Redis, a CA that did not sign the server's certificate",
      ['worker'],
      () => ({ REDIS_TLS_CA_FILE: certs.otherCa }),
      () => `${redisAt()}TLS: the server's certificate is not trusted \\(.+\\): REDIS_TLS_CA_FILE must hold the CA`,
    ],
    [
      'Redis, a wrong password',
      ['worker'],
      () => ({ REDIS_URL: `rediss://chain:not-${PASSWORD}@127.0.0.1:${redisServer.port}/0` }),
      () => `${redisAt()}WRONGPASS .*\\(check the user and password in REDIS_URL\\)`,
    ],
    [
      'Temporal, no client certificate',
      ['list'],
      () => ({ TEMPORAL_TLS_CERT_FILE: undefined, TEMPORAL_TLS_KEY_FILE: undefined }),
      () =>
        `${temporalAt()}TLS: the server requires a client certificate \\(set TEMPORAL_TLS_CERT_FILE and TEMPORAL_TLS_KEY_FILE\\)`,
    ],
    [
      'Temporal, a client certificate from another CA',
      ['list'],
      () => ({ TEMPORAL_TLS_CERT_FILE: certs.otherClientCert, TEMPORAL_TLS_KEY_FILE: certs.otherClientKey }),
      // The test's terminator (Node's TLS server) hangs up where OpenSSL's Redis sent an alert: both are told.
      () =>
        `${temporalAt()}TLS: the server hung up right after the handshake: does it accept the client certificate in TEMPORAL_TLS_CERT_FILE\\?`,
    ],
    [
      "Temporal, a CA that did not sign the server's certificate",
      ['list'],
      () => ({ TEMPORAL_TLS_CA_FILE: certs.otherCa }),
      () => `${temporalAt()}TLS: the server's certificate is not trusted \\(.+\\): TEMPORAL_TLS_CA_FILE must hold`,
    ],
    [
      'Temporal, a server name the certificate does not hold',
      ['list'],
      () => ({ TEMPORAL_TLS_SERVER_NAME: 'temporal.example' }),
      () => `${temporalAt()}TLS: the server's certificate is not for this host \\(.+\\): set TEMPORAL_TLS_SERVER_NAME`,
    ],
    [
      'Temporal, the worker without a client certificate',
      ['worker'],
      () => ({ TEMPORAL_TLS_CERT_FILE: undefined, TEMPORAL_TLS_KEY_FILE: undefined }),
      () => `${temporalAt()}TLS: the server requires a client certificate`,
    ],
    [
      'Temporal, the intake with a client certificate from another CA',
      ['intake'],
      () => ({ TEMPORAL_TLS_CERT_FILE: certs.otherClientCert, TEMPORAL_TLS_KEY_FILE: certs.otherClientKey }),
      () => `${temporalAt()}TLS: the server hung up right after the handshake`,
    ],
  ])('%s: the command stops', async (_case, args, changes, line) => {
    const started = Date.now();
    const run = await runCli(args, envWith(changes()), 20_000);
    const elapsed = Date.now() - started;
    expect(run.stderr).toMatch(new RegExp(`^${line()}.*\\n$`));
    expect(run.stderr.split('\n')).toHaveLength(2);
    expect(run.code).toBe(1);
    expectNoSecret(run.stdout + run.stderr);
    // The process's start (tsx, the SDK) is most of it; the refusal itself takes milliseconds.
    expect(elapsed).toBeLessThan(PROMPT_MS + 3_000);
  });
});

describe('configuration refusals keep secrets out', () => {
  it.each<[string, Record<string, string | undefined>, string]>([
    [
      'a bad value next to a password',
      { PERMIT_TTL_S: 'sixty' },
      "config: PERMIT_TTL_S must be a whole number of seconds > 0 (got 'sixty')",
    ],
    [
      'a Redis URL with a password and a bad port',
      { REDIS_URL: `rediss://chain:${PASSWORD}@127.0.0.1:notaport/0` },
      "config: REDIS_URL must be a redis:// or rediss:// URL (got 'rediss://***@127.0.0.1:notaport/0')",
    ],
    [
      'TLS files with a redis:// URL that has a password',
      { REDIS_URL: `redis://chain:${PASSWORD}@127.0.0.1:6379/0` },
      "config: REDIS_TLS_CA_FILE needs a rediss:// REDIS_URL (got 'redis://***@127.0.0.1:6379/0')",
    ],
    [
      'an API key with a space in it',
      { TEMPORAL_API_KEY: `${API_KEY} ${API_KEY}` },
      'config: TEMPORAL_API_KEY must be one line of printable characters without spaces (value not shown)',
    ],
    [
      'a client certificate without its key',
      { TEMPORAL_TLS_KEY_FILE: undefined },
      "config: TEMPORAL_TLS_CERT_FILE needs TEMPORAL_TLS_KEY_FILE (the certificate's private key)",
    ],
    [
      'a CA file that does not exist',
      { REDIS_TLS_CA_FILE: '/nonexistent/ca.pem' },
      "config: REDIS_TLS_CA_FILE cannot be read: no such file (got '/nonexistent/ca.pem')",
    ],
  ])('%s: one line naming the variable', async (_case, changes, line) => {
    const run = await runCli(['worker'], envWith(changes));
    expect(run.stderr).toBe(`permit-chain: ${line}\n`);
    expect(run.stdout).toBe('');
    expect(run.code).toBe(2);
  });
});

describe('TEMPORAL_API_KEY', () => {
  it('travels as a bearer token over TLS from the client and the worker alike', async () => {
    // A gRPC endpoint of our own that records the headers it is sent and answers "unimplemented", which the SDK
    // takes for an old server: the dev server behind the terminator accepts any key, so it cannot tell.
    const seen: { agent: string; authorization: string }[] = [];
    const server = createSecureServer(
      {
        key: readFileSync(certs.serverKey),
        cert: readFileSync(certs.serverCert),
        ca: readFileSync(certs.ca),
        requestCert: true,
        rejectUnauthorized: true,
      },
      undefined,
    );
    server.on('stream', (stream, headers) => {
      seen.push({ agent: String(headers['user-agent']), authorization: String(headers.authorization) });
      stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '12' }, { endStream: true });
    });
    const port = await freePort();
    await new Promise<void>((done) => server.listen(port, '127.0.0.1', done));
    try {
      const config = loadConfig({ ...secure, TEMPORAL_ADDRESS: `127.0.0.1:${port}` });
      expect(temporalConnectionOptions(config).apiKey).toBe(API_KEY);
      expect(JSON.stringify(config)).not.toContain(API_KEY);
      const client = await connectTemporal(config);
      await client.connection.close();
      await connectWorkerTemporal(config)
        .then((connection) => connection.close())
        .catch(() => undefined); // the key is sent before the answer matters
      expect(seen.length).toBeGreaterThanOrEqual(2);
      expect(new Set(seen.map((s) => s.authorization))).toEqual(new Set([`Bearer ${API_KEY}`]));
      expect(seen.some((s) => s.agent.startsWith('grpc-node'))).toBe(true);
      expect(seen.some((s) => !s.agent.startsWith('grpc-node'))).toBe(true);
    } finally {
      await new Promise((done) => server.close(done));
    }
  });
});
