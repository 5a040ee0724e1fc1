import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Redis } from 'ioredis';
import { explainRedisError } from '../lib/connections';
import type { Logger } from '../lib/log';
import { redactUrl } from '../lib/redact';
import type { ChainMetrics } from './metrics';

/** One part of readiness: undefined when fine, else why not, in a few words an operator can act on. */
export interface ReadinessCheck {
  name: string;
  check(): Promise<string | undefined>;
  /** A risk the process runs with by an explicit setting: ready, and said beside `ok`. */
  risk?: string;
}

/** A check that does not answer in this long counts as failed: a probe must not hang. */
const CHECK_TIMEOUT_MS = 2_000;

/**
 * Redis answers a PING over the process's own connection, with its configured user and password. A refusal names
 * what was refused (the credentials, a certificate) and the variable to fix, never the password.
 */
export function redisReadiness(redis: Redis, name = 'redis', risk?: string): ReadinessCheck {
  let lastError: unknown;
  redis.on('error', (err: unknown) => (lastError = err));
  redis.on('ready', () => (lastError = undefined));
  return {
    name,
    ...(risk !== undefined ? { risk } : {}),
    async check() {
      try {
        await withTimeout(redis.ping(), 'no answer to PING');
        return undefined;
      } catch (err) {
        return describeRedisFailure(lastError ?? err);
      }
    },
  };
}

/** A Redis failure as readiness and the worker's refusal line say it: credentials refused are named as such. */
export function describeRedisFailure(err: unknown): string {
  const { line, auth } = explainRedisError(err);
  return auth ? `authentication refused: ${line}` : line;
}

/** Temporal's frontend answers (GetSystemInfo, the cheapest call every server serves), within the timeout. */
export function temporalReadiness(ping: () => Promise<unknown>): ReadinessCheck {
  return {
    name: 'temporal',
    async check() {
      try {
        await withTimeout(ping(), 'no answer');
        return undefined;
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err);
        return `unreachable (${message.split('\n')[0] ?? ''})`;
      }
    },
  };
}

async function withTimeout<T>(work: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, fail) => {
    timer = setTimeout(() => fail(new Error(`${what} within ${CHECK_TIMEOUT_MS} ms`)), CHECK_TIMEOUT_MS);
  });
  try {
    return await Promise.race([work, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** The outcome of every check: ready only if all pass. */
export async function readiness(checks: ReadinessCheck[]): Promise<{ ready: boolean; body: string }> {
  const results = await Promise.all(
    checks.map(async (c) => ({
      name: c.name,
      risk: c.risk,
      why: await c.check().catch((err: unknown) => String(err)),
    })),
  );
  const failed = results.filter((r) => r.why !== undefined);
  const lines = results.map((r) => `${r.name}: ${r.why ?? (r.risk !== undefined ? `ok, at risk: ${r.risk}` : 'ok')}`);
  const head = failed.length === 0 ? 'ready' : `not ready: ${failed.map((r) => `${r.name}: ${r.why}`).join('; ')}`;
  // The last guard, as for every line the chain prints: no connection URL's password.
  return { ready: failed.length === 0, body: redactUrl([head, ...lines].join('\n') + '\n') };
}

export interface TelemetryServer {
  /** Where it listens, e.g. `http://127.0.0.1:9464`. */
  url: string;
  port: number;
  close(): Promise<void>;
}

export interface TelemetryServerOptions {
  port: number;
  host: string;
  metrics: ChainMetrics;
  /** The Temporal SDK's own metrics, served after the chain's (workers/runtime.ts). */
  sdkMetrics?: () => Promise<string>;
  checks: () => ReadinessCheck[];
  logger: Logger;
}

/**
 * `/metrics` (Prometheus text: the chain's series, the process's, and the Temporal SDK's where the runtime exports
 * them), `/healthz` (the process answers) and `/readyz` (every check passes; else 503 with the reasons) on one port.
 */
export async function serveTelemetry(options: TelemetryServerOptions): Promise<TelemetryServer> {
  const { metrics, logger } = options;
  const server: Server = createServer((request, response) => {
    const path = (request.url ?? '/').split('?')[0];
    const reply = (status: number, body: string, type = 'text/plain; charset=utf-8') => {
      response.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
      response.end(request.method === 'HEAD' ? undefined : body);
    };
    if (request.method !== 'GET' && request.method !== 'HEAD') return reply(405, 'GET only\n');
    if (path === '/healthz') return reply(200, 'ok\n');
    if (path === '/readyz') {
      void readiness(options.checks()).then(
        ({ ready, body }) => reply(ready ? 200 : 503, body),
        (err: unknown) => reply(503, `not ready: ${String(err)}\n`),
      );
      return;
    }
    if (path === '/metrics') {
      void metrics.text(options.sdkMetrics).then(
        (text) => reply(200, text, metrics.registry.contentType),
        (err: unknown) => {
          logger.warn(`metrics: scrape failed (${err instanceof Error ? err.message : String(err)})`);
          reply(500, 'scrape failed\n');
        },
      );
      return;
    }
    reply(404, 'not found: /metrics, /healthz, /readyz\n');
  });
  await new Promise<void>((done, fail) => {
    server.once('error', fail);
    server.listen(options.port, options.host, () => {
      server.off('error', fail);
      done();
    });
  });
  const { port } = server.address() as AddressInfo;
  const shownHost = options.host === '0.0.0.0' || options.host === '::' ? '127.0.0.1' : options.host;
  return {
    url: `http://${shownHost.includes(':') ? `[${shownHost}]` : shownHost}:${port}`,
    port,
    close: () =>
      new Promise<void>((done) => {
        server.close(() => done());
        // A scraper's kept-alive connection would hold the close open.
        server.closeAllConnections();
      }),
  };
}
