import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bundleWorkflowCode } from '@temporalio/worker';
import type { TestProject } from 'vitest/node';
import { ensureServersInstalled, freePort, startRedis, startTemporalDevServer } from '../scripts/servers';
import { WORKFLOWS_PATH, WORKFLOW_INTERCEPTOR_MODULES } from '../workers/worker';

declare module 'vitest' {
  export interface ProvidedContext {
    redisUrl: string;
    temporalAddress: string;
    temporalUiUrl: string;
    workflowBundlePath: string;
  }
}

/**
 * One real Redis and one real Temporal dev server (with its Web UI) for the whole run, and the workflow bundle
 * built once. Each test
 * file isolates itself with its own key prefix and task queue.
 */
export default async function setup(project: TestProject) {
  ensureServersInstalled({ forTests: true });
  const uiPort = await freePort();
  const [redis, temporal, bundle] = await Promise.all([
    // `$` as well: tests act the moment a permit (a string) is written, as a racing operator would.
    freePort().then((port) => startRedis({ port, keyspaceEvents: 'Kgh$' })),
    startTemporalDevServer({ uiPort }),
    // The worker's own workflow interceptors too, as `Worker.create` would bundle them.
    bundleWorkflowCode({
      workflowsPath: WORKFLOWS_PATH,
      workflowInterceptorModules: WORKFLOW_INTERCEPTOR_MODULES,
      logger: quietLogger,
    }),
  ]);
  const bundlePath = join(mkdtempSync(join(tmpdir(), 'permit-chain-bundle-')), 'workflow-bundle.js');
  writeFileSync(bundlePath, bundle.code);
  project.provide('redisUrl', redis.url);
  project.provide('temporalAddress', temporal.address);
  project.provide('temporalUiUrl', `http://127.0.0.1:${uiPort}`);
  project.provide('workflowBundlePath', bundlePath);
  return async () => {
    await temporal.teardown();
    await redis.stop();
  };
}

const quietLogger = {
  log: () => undefined,
  trace: () => undefined,
  debug: () => undefined,
  info: () => undefined,
  warn: (message: string) => console.warn(message),
  error: (message: string) => console.error(message),
};
