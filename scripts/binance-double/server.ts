/**
 * A local double of Binance USD-M futures REST (fapi v1/v2/v3): the endpoints the exchange adapter uses, signed and
 * checked the way Binance checks them, with positions it keeps and faults a test can inject. Test code only; also
 * runnable by hand (`npx tsx scripts/binance-double/main.ts`).
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import { Dec, formatDec } from '../../lib/decimal';
import { exchangeInfo, orderView, positionRisk, positionRiskV3, premiumIndex } from './answers';
import { DoubleBook } from './book';
import { BinanceError, internalError, missing } from './errors';
import { FaultQueue } from './faults';
import { HISTORY_WEIGHT, WeightMeter, accountTrades, allOrders } from './history';
import { findOrder, placeOrder } from './orders';
import { authenticate } from './signing';
import { DEFAULT_SYMBOLS, type BinanceDouble, type BinanceDoubleOptions, type Fault, type PositionSide } from './types';

export type {
  BinanceDouble,
  BinanceDoubleOptions,
  DoubleOrder,
  DoublePosition,
  Fault,
  FaultKind,
  OrderStatus,
  PositionSide,
  SymbolRules,
} from './types';
export { DEFAULT_SYMBOLS } from './types';

const ORDER_PATH = '/fapi/v1/order';
/** The double's own control endpoints (not Binance's). */
const CONTROL_PREFIX = '/double/v1/';

/** Starts the double on 127.0.0.1. Stop it with `stop()`. */
export async function startBinanceDouble(options: BinanceDoubleOptions = {}): Promise<BinanceDouble> {
  const apiKey = options.apiKey ?? randomBytes(32).toString('hex');
  const apiSecret = options.apiSecret ?? randomBytes(32).toString('hex');
  const book = new DoubleBook(options.hedgeMode ?? false, options.skewMs ?? 0, options.symbols ?? DEFAULT_SYMBOLS);
  const faults = new FaultQueue();
  const weight = new WeightMeter();

  const send = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
    res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
    res.end(JSON.stringify(body));
  };

  /**
   * `GET /double/v1/ping` says it is the double; `POST /double/v1/position?symbol=&amount=[&positionSide=]` sets a
   * position; `POST /double/v1/fault` with a JSON fault body queues it; `GET /double/v1/orders` lists the orders,
   * `GET /double/v1/positions` the positions.
   */
  const control = (method: string, what: string, params: URLSearchParams, rawBody: string, res: ServerResponse) => {
    if (method === 'GET' && what === 'ping') return send(res, 200, { double: 'binance-usdm' });
    if (method === 'GET' && what === 'orders') return send(res, 200, book.orders);
    if (method === 'GET' && what === 'positions') return send(res, 200, book.positionList());
    if (method === 'POST' && what === 'position') {
      const symbol = params.get('symbol');
      const amount = params.get('amount');
      if (amount === null || !/^-?\d+(\.\d+)?$/.test(amount)) throw missing('amount');
      const side = (params.get('positionSide') ?? 'BOTH') as PositionSide;
      if (!book.positionSides.includes(side))
        throw new BinanceError(400, -4061, `positionSide ${side} not in this mode.`);
      if (symbol === null) throw missing('symbol');
      const value = book.setPosition(symbol, side, amount);
      return send(res, 200, { symbol, positionSide: side, positionAmt: formatDec(value) });
    }
    if (method === 'POST' && what === 'fault') {
      return send(res, 200, { pending: faults.add(JSON.parse(rawBody) as Fault) });
    }
    return send(res, 404, { code: -1000, msg: `No control ${method} ${what} in the double.` });
  };

  const route = (req: IncomingMessage, res: ServerResponse, rawBody: string) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const path = url.pathname;
    const method = req.method ?? 'GET';
    const rawQuery = url.search.replace(/^\?/, '');
    const params = new URLSearchParams(rawQuery);
    for (const [name, value] of new URLSearchParams(rawBody)) params.append(name, value);

    // The double's own controls, for a person (or the demo) driving it over HTTP; never faulted, never signed.
    if (path.startsWith(CONTROL_PREFIX))
      return control(method, path.slice(CONTROL_PREFIX.length), params, rawBody, res);

    const gateway = faults.take(path, method, (f) => f.kind === 'rate-limit' || (f.kind === 'http-5xx' && !f.executed));
    if (gateway?.kind === 'rate-limit') {
      const msg =
        gateway.status === 418
          ? `Way too many requests; IP banned until ${book.serverTime() + gateway.retryAfterS * 1000}.`
          : 'Too many requests; current limit of IP is 2400 requests per minute.';
      throw new BinanceError(gateway.status, -1003, msg, { 'Retry-After': String(gateway.retryAfterS) });
    }
    if (gateway?.kind === 'http-5xx') {
      throw internalError(gateway.status);
    }

    if (method === 'GET' && path === '/fapi/v1/ping') return send(res, 200, {});
    if (method === 'GET' && path === '/fapi/v1/time') return send(res, 200, { serverTime: book.serverTime() });
    if (method === 'GET' && path === '/fapi/v1/exchangeInfo') return send(res, 200, exchangeInfo(book));
    if (method === 'GET' && path === '/fapi/v1/premiumIndex') {
      const symbol = params.get('symbol');
      return send(
        res,
        200,
        symbol ? premiumIndex(book, symbol) : [...book.symbols.keys()].map((one) => premiumIndex(book, one)),
      );
    }

    const signed =
      (method === 'GET' &&
        (path === '/fapi/v2/positionRisk' ||
          path === '/fapi/v3/positionRisk' ||
          path === '/fapi/v1/positionSide/dual' ||
          path === '/fapi/v1/userTrades' ||
          path === '/fapi/v1/allOrders')) ||
      ((method === 'GET' || method === 'POST') && path === ORDER_PATH);
    if (!signed) return send(res, 404, { code: -1000, msg: `No route for ${method} ${path} in the double.` });
    authenticate(req, rawQuery, rawBody, params, { apiKey, apiSecret }, book, faults);

    if (path === '/fapi/v1/positionSide/dual') return send(res, 200, { dualSidePosition: book.hedgeMode });
    if (path === '/fapi/v2/positionRisk' || path === '/fapi/v3/positionRisk') {
      const symbol = params.get('symbol');
      if (symbol) book.symbol(symbol);
      const risk = path === '/fapi/v2/positionRisk' ? positionRisk : positionRiskV3;
      return send(
        res,
        200,
        (symbol ? [symbol] : [...book.symbols.keys()]).flatMap<object>((one) => risk(book, one)),
      );
    }
    if (path === '/fapi/v1/userTrades' || path === '/fapi/v1/allOrders') {
      const history = path === '/fapi/v1/userTrades' ? accountTrades : allOrders;
      const used = weight.charge(HISTORY_WEIGHT, book.serverTime());
      return send(res, 200, history(book, params), { 'X-MBX-USED-WEIGHT-1M': String(used) });
    }
    if (method === 'GET') return sendOrder(res, path, method, findOrder(book, params));

    const { stored, shown } = placeOrder(book, faults, params, path);
    const after = faults.take(
      path,
      'POST',
      (f) => f.kind === 'lose-response-after-fill' || (f.kind === 'http-5xx' && f.executed === true),
    );
    if (after?.kind === 'lose-response-after-fill') {
      req.socket.destroy();
      return;
    }
    if (after?.kind === 'http-5xx') {
      throw internalError(after.status);
    }
    // Binance's default for futures is ACK: the order as accepted, before its fills are reported.
    const ack = (params.get('newOrderRespType') ?? 'ACK') === 'ACK';
    const view = orderView(
      ack
        ? {
            ...stored,
            status: 'NEW',
            executedQty: book.qtyText(stored.symbol, new Dec(0)),
            avgPrice: '0.00',
            cumQuote: '0.00000000',
          }
        : shown,
    );
    return sendOrder(res, path, method, view);
  };

  /** An order answer, rewritten by a queued `rewrite-answer` fault when one applies. */
  const sendOrder = (res: ServerResponse, path: string, method: string, view: unknown) => {
    const fault = faults.take(path, method, (f) => f.kind === 'rewrite-answer');
    if (fault?.kind !== 'rewrite-answer') return send(res, 200, view);
    const body: Record<string, unknown> = { ...(view as Record<string, unknown>), ...fault.set };
    const text = JSON.stringify(body);
    if (fault.padTo !== undefined && fault.padTo > text.length) {
      body.padding = 'x'.repeat(fault.padTo - text.length - ',"padding":""'.length);
    }
    return send(res, 200, body);
  };

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const path = new URL(req.url ?? '/', 'http://127.0.0.1').pathname;
      const delay = path.startsWith(CONTROL_PREFIX)
        ? undefined
        : faults.take(path, req.method ?? 'GET', (f) => f.kind === 'delay');
      if (delay?.kind === 'delay') {
        setTimeout(() => handle(req, res, chunks), delay.ms);
        return;
      }
      handle(req, res, chunks);
    });
  });

  /** A request, read whole, answered (Binance's errors as Binance sends them). */
  function handle(req: IncomingMessage, res: ServerResponse, chunks: Buffer[]) {
    try {
      route(req, res, Buffer.concat(chunks).toString('utf8'));
    } catch (error) {
      if (error instanceof BinanceError) {
        send(res, error.status, { code: error.code, msg: error.message }, error.headers);
      } else {
        send(res, 500, {
          code: -1000,
          msg: `An unknown error occurred while processing the request: ${String(error)}`,
        });
      }
    }
  }
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    port,
    apiKey,
    apiSecret,
    setPosition(symbol, amount, positionSide = 'BOTH') {
      book.setPosition(symbol, positionSide, amount);
    },
    setMarkPrice(symbol, price) {
      book.symbol(symbol).markPrice = new Dec(price);
    },
    setRules(symbol, rules) {
      book.setRules(symbol, rules);
    },
    setClockSkew(ms) {
      book.skewMs = ms;
    },
    injectFault(fault) {
      faults.add(fault);
    },
    pendingFaults: () => faults.pending(),
    orders: () => book.orders.map((order) => ({ ...order })),
    positions: () => book.positionList(),
    stop: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((error) => (error ? reject(error) : resolve()));
      }),
  };
}
