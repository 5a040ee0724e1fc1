/** A Binance error: the HTTP status and the `{code, msg}` body, as Binance answers a request it refuses. */
export class BinanceError extends Error {
  constructor(
    readonly status: number,
    readonly code: number,
    msg: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(msg);
  }
}

export const missing = (name: string) =>
  new BinanceError(400, -1102, `Mandatory parameter '${name}' was not sent, was empty/null, or malformed.`);
export const invalidSymbol = () => new BinanceError(400, -1121, 'Invalid symbol.');

/** -1001 with a 5xx: Binance could not say what became of the request. */
export const internalError = (status: number) =>
  new BinanceError(status, -1001, 'Internal error; unable to process your request. Please try again.');
