import type * as BinancePackage from 'binance';
import type { BinanceConfig, ExchangeName } from '../../lib/config';
import {
  INVALID_SYMBOL_CODE,
  TIMESTAMP_CODE,
  binanceFailure,
  orderFailureKind,
  retryAfterMs,
  type BinanceFailure,
} from './binance-wire';
import { ExchangeAuthError, ExchangeBusyError, UnknownSymbolError } from './port';

/** The library waits 5 minutes by default; an Execute attempt lives within a permit of seconds. */
const REQUEST_TIMEOUT_MS = 10_000;
/**
 * The most of an answer read, per endpoint: an order, a position, a price or the time is a few hundred bytes (64 KiB
 * leaves room); exchangeInfo lists every symbol (some 2 MB on Binance: 8 MiB). A longer answer is not read further:
 * on a read it is an error, on an order an unknown result, looked up by client order id like a timeout.
 */
export const ANSWER_MAX_BYTES = 64 * 1024;
export const EXCHANGE_INFO_MAX_BYTES = 8 * 1024 * 1024;
/** Clocks drift slowly; -1021 resyncs at once in between. */
const TIME_SYNC_INTERVAL_MS = 3_600_000;
/** A 5xx or a network failure on a read: soon again, the activity's retry policy spaces further tries. */
export const READ_RETRY_MS = 1_000;

/**
 * One Binance USD-M session: the `binance` package's clients (one per answer bound) with our own time sync, signed
 * requests resent once on -1021, and every failure of a read turned into the port's errors, its text scrubbed of
 * anything that could be a credential or a signature.
 */
export function createBinanceSession({
  name,
  config,
  clock,
}: {
  name: Exclude<ExchangeName, 'paper'>;
  config: BinanceConfig;
  clock: () => number;
}) {
  const apiKey = config.apiKey.reveal();
  const apiSecret = config.apiSecret.reveal();
  // Loaded here, not at import: a CLI command that never trades (status, list) does not pay for the package's load.
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- the lazy load above
  const { USDMClient } = require('binance') as typeof BinancePackage;
  const clientOptions = {
    api_key: apiKey,
    api_secret: apiSecret,
    baseUrl: config.baseUrl,
    recvWindow: config.recvWindowMs,
    // Our own sync: the library's logs the axios error (with the key's header) when it fails.
    disableTimeSync: true,
    keepAlive: true,
    // The raw axios error keeps the HTTP status, which the library's parsed error drops.
    parseExceptions: false,
  };
  // axios stops reading an answer past maxContentLength (ERR_BAD_RESPONSE): one client per bound.
  const client = new USDMClient(clientOptions, { timeout: REQUEST_TIMEOUT_MS, maxContentLength: ANSWER_MAX_BYTES });
  const infoClient = new USDMClient(clientOptions, {
    timeout: REQUEST_TIMEOUT_MS,
    maxContentLength: EXCHANGE_INFO_MAX_BYTES,
  });

  /** Binance's text, with anything that could be a credential or a signature taken out. */
  const scrub = (text: string) =>
    text
      .split(apiKey)
      .join('***')
      .split(apiSecret)
      .join('***')
      .replace(/signature=[^&\s]*/gi, 'signature=***')
      .replace(/\b[0-9a-f]{64}\b/gi, '***');

  const describe = (failure: BinanceFailure): string => {
    if (failure.kind === 'network') {
      if (failure.code === 'ECONNABORTED' || failure.code === 'ETIMEDOUT') {
        return `no answer within ${REQUEST_TIMEOUT_MS / 1000} s`;
      }
      if (failure.code === 'ECONNRESET') return 'the connection was reset before an answer';
      if (failure.code === 'ERR_BAD_RESPONSE') return 'the answer was over its size bound or cut short: not read';
      return `network error ${failure.code}`;
    }
    if (failure.kind === 'other') return scrub(failure.message);
    const code = failure.code === null ? '' : ` ${failure.code}`;
    return `HTTP ${failure.status}${code}${failure.msg ? ` ${scrub(failure.msg)}` : ''}`;
  };

  const serverNow = () => clock() + client.getTimeOffset();

  const busyError = (what: string, failure: Extract<BinanceFailure, { kind: 'http' }>) => {
    const delay = retryAfterMs(failure, serverNow());
    const weight = failure.headers['x-mbx-used-weight-1m'];
    const banned = failure.status === 418 ? ' (this IP is banned for a while)' : '';
    return new ExchangeBusyError(
      `binance: ${what}: ${describe(failure)}${banned}${weight ? `; used weight ${weight} in the last minute` : ''}; ` +
        `retry after ${Math.ceil(delay / 1000)} s`,
      delay,
    );
  };

  const authError = (what: string, failure: BinanceFailure) =>
    new ExchangeAuthError(
      `binance: ${what}: ${describe(failure)}: the API key or its secret was refused; check BINANCE_API_KEY and ` +
        "BINANCE_API_SECRET (or their _FILE), the key's futures permission and its IP allow-list",
    );

  /** A read's failure as the port's errors: nothing a read does is executed, so it is busy or broken. */
  const readError = (what: string, err: unknown): Error => {
    const failure = binanceFailure(err);
    if (failure.kind === 'network')
      return new ExchangeBusyError(`binance: ${what}: ${describe(failure)}`, READ_RETRY_MS);
    if (failure.kind === 'other') return new Error(`binance: ${what}: ${describe(failure)}`);
    const kind = orderFailureKind(failure);
    if (kind === 'busy') return busyError(what, failure);
    if (kind === 'auth') return authError(what, failure);
    if (failure.code === INVALID_SYMBOL_CODE) return new UnknownSymbolError(`binance: ${what}: not listed on ${name}`);
    if (kind === 'clock' || failure.status >= 500) {
      const clockNote = kind === 'clock' ? ' (clock still off after a resync)' : '';
      return new ExchangeBusyError(`binance: ${what}: ${describe(failure)}${clockNote}`, READ_RETRY_MS);
    }
    return new Error(`binance: ${what}: ${describe(failure)}`);
  };

  let syncedAt: number | null = null;
  let syncing: Promise<void> | null = null;

  function syncTime(): Promise<void> {
    syncing ??= (async () => {
      // Date.now(), not the injected clock: the library adds the offset to Date.now().
      const start = Date.now();
      let serverTime: unknown;
      try {
        serverTime = await client.getServerTime();
      } catch (err) {
        throw readError('GET fapi/v1/time', err);
      }
      const end = Date.now();
      if (typeof serverTime !== 'number') throw new Error('binance: GET fapi/v1/time: no serverTime in the answer');
      client.setTimeOffset(Math.round(serverTime - (start + end) / 2));
      syncedAt = clock();
    })().finally(() => {
      syncing = null;
    });
    return syncing;
  }

  async function ensureSynced(): Promise<void> {
    if (syncedAt === null || clock() - syncedAt > TIME_SYNC_INTERVAL_MS) await syncTime();
  }

  /** A signed request, after a time sync when none is recent; on -1021 resync, `beforeResend`, and send once more. */
  async function signed<T>(request: () => Promise<T>, beforeResend?: () => Promise<void>): Promise<T> {
    await ensureSynced();
    try {
      return await request();
    } catch (err) {
      const failure = binanceFailure(err);
      if (failure.kind !== 'http' || failure.code !== TIMESTAMP_CODE) throw err;
      await syncTime();
      await beforeResend?.();
      return await request();
    }
  }

  async function read<T>(what: string, request: () => Promise<T>, isSigned: boolean): Promise<T> {
    try {
      return isSigned ? await signed(request) : await request();
    } catch (err) {
      if (err instanceof ExchangeBusyError || err instanceof ExchangeAuthError) throw err;
      throw readError(what, err);
    }
  }

  return {
    client,
    infoClient,
    scrub,
    describe,
    serverNow,
    busyError,
    authError,
    readError,
    syncTime,
    ensureSynced,
    signed,
    read,
  };
}
