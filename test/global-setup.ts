import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bundleWorkflowCode } from '@temporalio/worker';
import type { TestProject } from 'vitest/node';
import { PROJECT_ROOT, ensureServersInstalled, freePort, startRedis, startTemporalDevServer } from '../cli/servers';
import { WORKFLOWS_PATH, WORKFLOW_INTERCEPTOR_MODULES } from '../workers/worker';
import { QUIET_BUNDLE_LOGGER } from '../workers/workflow-code';

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
  requireEnginesNode();
  ensureServersInstalled({ forTests: true });
  const uiPort = await freePort();
  const [redis, temporal, bundle] = await Promise.all([
    // `$` as well: tests act the moment a permit (a string) is written, as a racing operator would.
    freePort().then((port) => startRedis({ port, keyspaceEvents: 'Kgh$' })),
    startTemporalDevServer({
      uiPort,
      // A drained build is reported within seconds, not the server's minutes (test/integration/deploy.test.ts).
      dynamicConfig: {
        'matching.wv.VersionDrainageStatusVisibilityGracePeriod': '"2s"',
        'matching.wv.VersionDrainageStatusRefreshInterval': '"1s"',
      },
    }),
    // The worker's own workflow interceptors too, as `Worker.create` would bundle them.
    bundleWorkflowCode({
      workflowsPath: WORKFLOWS_PATH,
      workflowInterceptorModules: WORKFLOW_INTERCEPTOR_MODULES,
      logger: QUIET_BUNDLE_LOGGER,
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

/**
 * Says which Node runs the suite (CI's log shows it) and refuses one older than `engines`: `npm test` runs on the
 * pinned Node (scripts/with-node.sh), a bare `npx vitest` on the system's may not.
 */
export function requireEnginesNode(): void {
  const engines = (
    JSON.parse(readFileSync(join(PROJECT_ROOT, 'package.json'), 'utf8')) as { engines: { node: string } }
  ).engines.node;
  console.log(`tests: Node ${process.version} (${process.execPath})`);
  const floor = Number(/\d+/.exec(engines)?.[0]);
  if (Number(process.versions.node.split('.')[0]) < floor) {
    throw new Error(`Node ${process.version} is older than engines ${engines}: run the tests with npm test`);
  }
}
