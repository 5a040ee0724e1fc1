import { request } from 'node:http';
import { Runtime } from '@temporalio/worker';
import { sdkLogger, type Logger, type SdkLineFilter } from '../lib/log';
import { freePort } from '../lib/ports';

function get(url: string): Promise<string> {
  return new Promise((done, fail) => {
    const req = request(url, { timeout: 2_000 }, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (body += chunk));
      response.on('end', () =>
        response.statusCode === 200 ? done(body) : fail(new Error(`${url}: HTTP ${response.statusCode}`)),
      );
    });
    req.once('timeout', () => req.destroy(new Error(`${url}: no answer within 2 s`)));
    req.once('error', fail);
    req.end();
  });
}

/** The Temporal SDK's runtime of a process, installed once, when the first native connection is about to be made. */
export interface ProcessRuntime {
  /** Installs the runtime now, unless it is already: call it right before the SDK's first native object. */
  install(): Promise<void>;
  /** The SDK's metrics as Prometheus text ('' before the runtime is installed, or without `sdkMetrics`). */
  sdkMetrics(): Promise<string>;
}

/**
 * The SDK's runtime for this process: the SDK's lines (and its native core's, forwarded) go to the process's logger,
 * and with `sdkMetrics` its Prometheus exporter listens on a free loopback port, which nobody outside scrapes: its
 * text is served with the chain's on METRICS_PORT (the SDK binds its own server, and offers no other way to read it
 * in-process but an experimental buffer). Installed lazily because an installed runtime keeps the process alive
 * until its last native object closes: a process that stops before making one (a refused Redis password) must
 * still exit.
 */
export function processRuntime(
  logger: Logger,
  options: { sdkMetrics: boolean; shutdownSignals?: NodeJS.Signals[]; quiet?: SdkLineFilter },
): ProcessRuntime {
  let installing: Promise<string | undefined> | undefined;
  return {
    install: async () => {
      installing ??= install(logger, options.sdkMetrics, options.shutdownSignals, options.quiet);
      await installing;
    },
    async sdkMetrics() {
      const url = installing ? await installing : undefined;
      if (url === undefined) return '';
      try {
        return await get(url);
      } catch (err) {
        logger.warn(
          `metrics: the Temporal SDK's metrics are unavailable (${err instanceof Error ? err.message : String(err)})`,
        );
        return '';
      }
    },
  };
}

async function install(
  logger: Logger,
  sdkMetrics: boolean,
  shutdownSignals?: NodeJS.Signals[],
  quiet?: SdkLineFilter,
): Promise<string | undefined> {
  const port = sdkMetrics ? await freePort() : undefined;
  Runtime.install({
    logger: sdkLogger(logger, quiet),
    // Unset: the SDK's own SIGINT/SIGTERM handling; `dev` stops its processes in order itself.
    ...(shutdownSignals ? { shutdownSignals } : {}),
    telemetryOptions: {
      logging: { filter: { core: 'WARN', other: 'ERROR' }, forward: {} },
      ...(port !== undefined
        ? {
            metrics: {
              prometheus: {
                bindAddress: `127.0.0.1:${port}`,
                // Prometheus's conventions: counters end in _total, durations are seconds.
                countersTotalSuffix: true,
                unitSuffix: true,
                useSecondsForDurations: true,
              },
            },
          }
        : {}),
    },
  });
  return port === undefined ? undefined : `http://127.0.0.1:${port}/metrics`;
}
