/** The signed-request check, as Binance does it: the API key, the HMAC signature, the timestamp and its window. */
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { DoubleBook } from './book';
import { BinanceError, missing } from './errors';
import type { FaultQueue } from './faults';

const DEFAULT_RECV_WINDOW = 5000;
const MAX_RECV_WINDOW = 60_000;
/** Binance refuses a timestamp more than this far ahead of its clock. */
const MAX_AHEAD_MS = 1000;

export interface Credentials {
  apiKey: string;
  apiSecret: string;
}

/**
 * Throws Binance's error for a request that is not signed as Binance wants it; a queued `timestamp` fault refuses
 * one that is.
 */
export function authenticate(
  req: IncomingMessage,
  rawQuery: string,
  rawBody: string,
  params: URLSearchParams,
  credentials: Credentials,
  book: DoubleBook,
  faults: FaultQueue,
): void {
  const key = req.headers['x-mbx-apikey'];
  if (typeof key !== 'string' || key === '') throw new BinanceError(401, -2014, 'API-key format invalid.');
  if (key !== credentials.apiKey) throw new BinanceError(401, -2015, 'Invalid API-key, IP, or permissions for action.');
  const signature = params.get('signature');
  if (!signature) throw missing('signature');
  const unsigned = (raw: string) =>
    raw
      .split('&')
      .filter((part) => part !== '' && !part.startsWith('signature='))
      .join('&');
  // Binance signs totalParams: the query string concatenated with the body.
  const expected = createHmac('sha256', credentials.apiSecret)
    .update(unsigned(rawQuery) + unsigned(rawBody))
    .digest();
  const given = Buffer.from(signature, 'hex');
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
    throw new BinanceError(400, -1022, 'Signature for this request is not valid.');
  }
  const timestampText = params.get('timestamp');
  if (!timestampText || !/^\d+$/.test(timestampText)) throw missing('timestamp');
  const recvWindowText = params.get('recvWindow');
  const recvWindow = recvWindowText ? Number(recvWindowText) : DEFAULT_RECV_WINDOW;
  if (!Number.isFinite(recvWindow) || recvWindow <= 0 || recvWindow > MAX_RECV_WINDOW) {
    throw new BinanceError(400, -1131, 'recvWindow must be less than 60000');
  }
  const timestamp = Number(timestampText);
  const now = book.serverTime();
  const stale = () => new BinanceError(400, -1021, 'Timestamp for this request is outside of the recvWindow.');
  if (timestamp < now - recvWindow) throw stale();
  if (timestamp > now + MAX_AHEAD_MS) {
    throw new BinanceError(400, -1021, "Timestamp for this request was 1000ms ahead of the server's time.");
  }
  const here = new URL(req.url ?? '/', 'http://x').pathname;
  if (faults.take(here, req.method ?? 'GET', (fault) => fault.kind === 'timestamp')) throw stale();
}
