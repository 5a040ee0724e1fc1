import { readFileSync } from 'node:fs';
import { connect as tcpConnect, isIP } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions as TlsOptions } from 'node:tls';
import type { TLSConfig } from '@temporalio/client';
import type * as IoRedis from 'ioredis';
import type { Redis, RedisOptions } from 'ioredis';
import type { ChainConfig, TlsFiles } from './config';
import type { ConnectionState } from './connection-state';
import { redactUrl } from './redact';

/** A server that cannot be reached or that refuses us; the message is the one line an operator needs. */
export class ConnectionError extends Error {
  override name = 'ConnectionError';
}

/** The variables that fix a connection, named in its error messages. */
interface TransportNames {
  ca: string;
  cert: string;
  key: string;
  serverName?: string;
  password?: string;
}

const REDIS_NAMES: TransportNames = {
  ca: 'REDIS_TLS_CA_FILE',
  cert: 'REDIS_TLS_CERT_FILE',
  key: 'REDIS_TLS_KEY_FILE',
  password: 'the user and password in REDIS_URL',
};

const TEMPORAL_NAMES: TransportNames = {
  ca: 'TEMPORAL_TLS_CA_FILE',
  cert: 'TEMPORAL_TLS_CERT_FILE',
  key: 'TEMPORAL_TLS_KEY_FILE',
  serverName: 'TEMPORAL_TLS_SERVER_NAME',
};

/** How long to wait for a server before giving up: the SDK's own default connect timeout. */
const CONNECT_TIMEOUT_MS = 10_000;

/** Node's verdicts on a server certificate that does not chain to a CA we trust. */
const UNTRUSTED_SERVER = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_UNTRUSTED',
  'CERT_SIGNATURE_FAILURE',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
]);

const SERVER_AUTH_REFUSAL = /^(WRONGPASS|NOAUTH|NOPERM)\b/;

/** The probe's own code: the server closed the connection after the handshake, before its first frame. */
const HUNG_UP = 'HUNG_UP_AFTER_TLS_HANDSHAKE';

function codeOf(err: unknown): string {
  return (err as NodeJS.ErrnoException | undefined)?.code ?? '';
}

/** The messages of an error and its causes, one line. */
function messageChain(err: unknown): string {
  const messages: string[] = [];
  for (let e: unknown = err; e instanceof Error && messages.length < 4; e = e.cause) {
    const line = (e.message.split('\n')[0] ?? '').trim();
    if (line !== '' && !messages.includes(line)) messages.push(line);
  }
  return messages.join(': ') || String(err);
}

/**
 * True for a refusal that trying again will not cure: the TLS handshake failed, or the server refused the
 * password. A refused or timed-out connection is not one: the server may be starting.
 */
function isRefusal(err: unknown): boolean {
  const code = codeOf(err);
  return (
    code === HUNG_UP ||
    code.startsWith('ERR_SSL_') ||
    code.startsWith('ERR_TLS_') ||
    UNTRUSTED_SERVER.has(code) ||
    (err instanceof Error && SERVER_AUTH_REFUSAL.test(err.message))
  );
}

/** One line saying why a connection failed, naming the variables that fix it. */
function explain(err: unknown, names: TransportNames): string {
  const code = codeOf(err);
  const message = messageChain(err);
  if (code === 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED') {
    return `TLS: the server requires a client certificate (set ${names.cert} and ${names.key})`;
  }
  const alert =
    /^ERR_SSL_(?:SSLV3|TLSV1|TLSV13)_ALERT_(BAD_CERTIFICATE|UNKNOWN_CA|CERTIFICATE_\w+|ACCESS_DENIED)$/.exec(code);
  if (alert) {
    const reason = (alert[1] ?? '').toLowerCase().replace(/_/g, ' ');
    return `TLS: the server refused the client certificate (${reason}): ${names.cert} must hold a certificate from a CA it trusts`;
  }
  if (code === HUNG_UP) {
    return `TLS: the server hung up right after the handshake: does it accept the client certificate in ${names.cert}?`;
  }
  if (UNTRUSTED_SERVER.has(code)) {
    return `TLS: the server's certificate is not trusted (${message}): ${names.ca} must hold the CA that signed it`;
  }
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    const reason = (err as { reason?: string }).reason ?? message;
    const fix = names.serverName ? `: set ${names.serverName} to a name it holds` : '';
    return `TLS: the server's certificate is not for this host (${reason})${fix}`;
  }
  if (code === 'ERR_SSL_WRONG_VERSION_NUMBER' || code === 'ERR_SSL_PACKET_LENGTH_TOO_LONG') {
    return 'TLS: the server did not answer in TLS (a plain-text port?)';
  }
  if (code === 'ECONNREFUSED') return 'nothing answers (connection refused)';
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return `unknown host (${message})`;
  if (err instanceof Error && SERVER_AUTH_REFUSAL.test(err.message)) {
    return `${message.replace(/\.$/, '')}${names.password ? ` (check ${names.password})` : ''}`;
  }
  return message;
}

/**
 * A Redis error as one line naming the variable to fix, without a password; `refused` says whether it is a refusal
 * that trying again will not cure (a password or certificate the server turns down), and `auth` whether the refusal
 * is of the credentials.
 */
export function explainRedisError(err: unknown): { line: string; refused: boolean; auth: boolean } {
  return {
    line: redactUrl(explain(err, REDIS_NAMES)),
    refused: isRefusal(err),
    auth: err instanceof Error && SERVER_AUTH_REFUSAL.test(err.message),
  };
}

/** The TLS material named by a config, read now: certificates may be renewed between two starts. */
function readTls(files: TlsFiles): { ca?: Buffer; cert?: Buffer; key?: Buffer } {
  return {
    ...(files.caFile !== undefined ? { ca: readFileSync(files.caFile) } : {}),
    ...(files.client ? { cert: readFileSync(files.client.certFile), key: readFileSync(files.client.keyFile) } : {}),
  };
}

/** The ioredis options for the chain's Redis: its TLS material for a `rediss://` URL, and its retry policy. */
export function redisOptions(config: Pick<ChainConfig, 'redisTls'>): RedisOptions {
  return {
    // A command fails (and its caller retries) while Redis is away, instead of waiting without bound.
    maxRetriesPerRequest: 3,
    enableOfflineQueue: true,
    ...(config.redisTls ? { tls: readTls(config.redisTls) } : {}),
  };
}

export interface RedisConnectOptions {
  /** Where connection losses are reported, once per kind; default `console.warn`. */
  log?: (line: string) => void;
  /**
   * True (the default): wait until Redis answers, and throw when it refuses us or is not there within the
   * timeout. False: throw only when it refuses us; while it is not there, report that and reconnect in the
   * background (the intake waits for Redis).
   */
  waitForReady?: boolean;
  /** How long to wait for Redis to answer; default 10 s, the Temporal SDK's connect timeout. */
  timeoutMs?: number;
  /**
   * The process's view of Redis, shared by its connections: once connected, an outage is one line when it starts and
   * one when it ends (lib/connection-state.ts), not a line per error. A refusal is still reported through `log`.
   */
  state?: ConnectionState;
}

let connectionCount = 0;

/**
 * The one way the chain connects to Redis (`REDIS_URL`, `REDIS_TLS_*`). A refused TLS handshake or password
 * throws a {@link ConnectionError} with one line naming the variable to fix; the URL is printed without its
 * password. Once connected, the client reconnects on its own and reports each kind of error once.
 */
export async function connectRedis(
  config: Pick<ChainConfig, 'redisUrl' | 'redisTls'>,
  options: RedisConnectOptions = {},
): Promise<Redis> {
  const { log = (line: string) => console.warn(line), waitForReady = true, timeoutMs = CONNECT_TIMEOUT_MS } = options;
  const { state } = options;
  const where = `Redis at ${redactUrl(config.redisUrl)}`;
  // Loaded on the first connection: a CLI command that only asks Temporal (status, list) does not load ioredis.
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- the lazy load above
  const { Redis: RedisClient } = require('ioredis') as typeof IoRedis;
  const redis = new RedisClient(config.redisUrl, redisOptions(config));
  const who = `redis-${++connectionCount}`;
  let reporting = false;
  let last = '';
  const report = (err: unknown) => {
    const line = `redis: ${redactUrl(explain(err, REDIS_NAMES))}`;
    if (state && !isRefusal(err)) {
      // An outage: the state's two lines tell it; the reconnect attempts' errors are its symptoms.
      if (reporting) state.connectionDown(who, line.replace(/^redis: /, ''));
      last = line;
      return;
    }
    if (reporting && line !== last) log(line);
    last = line;
  };
  redis.on('error', report);
  redis.on('ready', () => {
    last = '';
    if (reporting) state?.connectionUp(who);
  });
  // Emitted only when it will reconnect (not on a deliberate disconnect): the connection was lost.
  redis.on('reconnecting', () => {
    if (reporting) state?.connectionDown(who, last.replace(/^redis: /, '') || 'connection closed');
  });
  const failure = await new Promise<unknown>((done) => {
    let seen: unknown;
    const timer = setTimeout(() => finish(seen ?? new Error(`no answer within ${timeoutMs / 1000} s`)), timeoutMs);
    const onReady = () => finish(undefined);
    const onError = (err: unknown) => {
      seen = err;
      if (isRefusal(err) || !waitForReady) finish(err);
    };
    function finish(err: unknown) {
      clearTimeout(timer);
      redis.off('ready', onReady);
      redis.off('error', onError);
      done(err);
    }
    redis.once('ready', onReady);
    redis.on('error', onError);
  });
  if (failure !== undefined && (waitForReady || isRefusal(failure))) {
    redis.disconnect();
    throw new ConnectionError(`${where}: ${redactUrl(explain(failure, REDIS_NAMES))}`, { cause: failure });
  }
  reporting = true;
  if (failure !== undefined) {
    last = '';
    report(failure);
  }
  return redis;
}

/** The options `Connection.connect` (client) and `NativeConnection.connect` (worker) share. */
export interface TemporalConnectionOptions {
  address: string;
  tls?: TLSConfig;
  apiKey?: string;
}

/**
 * The one place the chain's connection to Temporal is described (`TEMPORAL_ADDRESS`, `TEMPORAL_TLS_*`,
 * `TEMPORAL_API_KEY`), for the worker's native connection and every client's alike. The key is revealed here
 * and nowhere else.
 */
export function temporalConnectionOptions(
  config: Pick<ChainConfig, 'temporalAddress' | 'temporalTls' | 'temporalApiKey'>,
): TemporalConnectionOptions {
  const tls = config.temporalTls;
  const material = tls ? readTls(tls) : {};
  return {
    address: config.temporalAddress,
    ...(tls
      ? {
          tls: {
            ...(tls.serverName !== undefined ? { serverNameOverride: tls.serverName } : {}),
            ...(material.ca ? { serverRootCACertificate: material.ca } : {}),
            ...(material.cert && material.key ? { clientCertPair: { crt: material.cert, key: material.key } } : {}),
          },
        }
      : {}),
    ...(config.temporalApiKey ? { apiKey: config.temporalApiKey.reveal() } : {}),
  };
}

/** HTTP/2's client preface and an empty SETTINGS frame: any gRPC server answers it with its own SETTINGS. */
const HTTP2_PREFACE = Buffer.concat([
  Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'),
  Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]),
]);

/**
 * Opens a connection to the Temporal server as the SDK would (same TLS material, server name and ALPN) and
 * returns what refuses it: a TLS alert, an untrusted certificate, a refused connection. Undefined when the server
 * answers, or says nothing definite within `waitMs`. TLS 1.3 refuses a client certificate only after the
 * handshake, so it waits for the server's first HTTP/2 frame or its alert.
 */
function probeTemporal(
  config: Pick<ChainConfig, 'temporalAddress' | 'temporalTls'>,
  waitMs: number,
): Promise<Error | undefined> {
  const split = config.temporalAddress.lastIndexOf(':');
  const host = config.temporalAddress.slice(0, split);
  const port = Number(config.temporalAddress.slice(split + 1));
  const tls = config.temporalTls;
  return new Promise((done) => {
    const servername = tls?.serverName ?? (isIP(host) ? undefined : host);
    const options: TlsOptions = {
      host,
      port,
      ...(servername !== undefined ? { servername } : {}),
      ALPNProtocols: ['h2'],
      ...(tls ? readTls(tls) : {}),
    };
    const socket = tls ? tlsConnect(options) : tcpConnect({ host, port });
    const timer = setTimeout(() => finish(undefined), waitMs);
    function finish(err: Error | undefined) {
      clearTimeout(timer);
      socket.destroy();
      done(err);
    }
    let handshaken = false;
    socket.once('error', finish);
    socket.once('data', () => finish(undefined));
    socket.once('end', () => {
      // Some servers refuse a client certificate by hanging up after the handshake, without an alert.
      const hungUp = Object.assign(new Error('the server hung up'), { code: handshaken ? HUNG_UP : 'ECONNRESET' });
      finish(hungUp);
    });
    socket.once(tls ? 'secureConnect' : 'connect', () => {
      handshaken = true;
      if (tls) socket.write(HTTP2_PREFACE);
      else finish(undefined);
    });
  });
}

/**
 * Throws a {@link ConnectionError} when the Temporal server refuses our TLS handshake: a wrong certificate does not
 * cure itself, and the SDK's client would only wait out its timeout and say that it could not connect. A server
 * that is not there is no error here (a lazy connection waits for it).
 */
export async function checkTemporalHandshake(
  config: Pick<ChainConfig, 'temporalAddress' | 'temporalTls'>,
): Promise<void> {
  if (!config.temporalTls) return;
  const err = await probeTemporal(config, CONNECT_TIMEOUT_MS);
  if (err && isRefusal(err)) {
    throw new ConnectionError(`Temporal at ${config.temporalAddress}: ${explain(err, TEMPORAL_NAMES)}`, { cause: err });
  }
}

/**
 * Connects to Temporal with the chain's options and `connect` (the client's or the worker's connection); a failure
 * is a {@link ConnectionError} of one line saying why. With TLS the handshake is tried first, alone: a refusal then
 * ends at once, with nothing of the SDK's left waiting out its connect timeout in the process.
 */
export async function connectTemporalWith<C>(
  config: Pick<ChainConfig, 'temporalAddress' | 'temporalTls' | 'temporalApiKey'>,
  connect: (options: TemporalConnectionOptions) => Promise<C>,
): Promise<C> {
  await checkTemporalHandshake(config);
  try {
    return await connect(temporalConnectionOptions(config));
  } catch (err) {
    const found = await probeTemporal(config, 2_000);
    throw new ConnectionError(`Temporal at ${config.temporalAddress}: ${explain(found ?? err, TEMPORAL_NAMES)}`, {
      cause: err,
    });
  }
}

/**
 * For the `.catch` of a connection opened after others: closes those, then rethrows. An open connection left
 * behind would keep a failed command's process alive.
 */
export function closeOnFailure(...open: ({ disconnect(): void } | { close(): Promise<void> })[]) {
  return async (err: unknown): Promise<never> => {
    for (const resource of open) {
      if ('disconnect' in resource) resource.disconnect();
      else await resource.close().catch(() => undefined);
    }
    throw err;
  };
}
