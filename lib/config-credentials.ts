import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { inspect } from 'node:util';
import { BINANCE_DEFAULT_BASE_URLS, ConfigError, ONE_LINE, shown, unreadable, type Env } from './config-schema';

/**
 * The settings that are secrets or point at them, checked as a whole: TLS to Redis and Temporal (a certificate needs
 * its key), Temporal's API key, Binance's key and secret (a variable or a file, never both, never printed).
 */

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
export function transport(e: Env): {
  redisTls: TlsFiles | null;
  temporalTls: (TlsFiles & { serverName?: string }) | null;
  temporalApiKey: Secret | null;
} {
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
function binanceCredential(name: 'BINANCE_API_KEY' | 'BINANCE_API_SECRET', e: Env) {
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
export function binance(e: Env): BinanceConfig | null {
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
