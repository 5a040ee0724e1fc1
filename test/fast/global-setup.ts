import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { bundleWorkflowCode } from '@temporalio/worker';
import type { TestProject } from 'vitest/node';
import { PROJECT_ROOT, ensureServersInstalled } from '../../cli/servers';
import { WORKFLOWS_PATH, WORKFLOW_INTERCEPTOR_MODULES } from '../../workers/worker';
import { QUIET_BUNDLE_LOGGER, hashSources } from '../../workers/workflow-code';
import { requireEnginesNode } from '../global-setup';

/**
 * The fast tier's setup: the workflow bundle, as the worker would bundle it (with its interceptors). No Redis and no
 * dev server: each test file starts its own time-skipping test server (test/fast/harness.ts). The bundle is kept by
 * the hash of the sources it could be built from, so that running the tier again after a change elsewhere (a test,
 * a doc) skips webpack, and a change to any source bundles again. It lives in the checkout's node_modules/.cache,
 * owner-only, not in a shared temporary folder where another user could leave workflow code for the tests to run;
 * a new bundle replaces the ones before it.
 */
export default async function setup(project: TestProject) {
  requireEnginesNode();
  // As the suite does: scripts/setup.sh --tests when the test server (or another tool of the tests) is missing.
  ensureServersInstalled({ forTests: true });
  const sources = createHash('sha256')
    .update(JSON.stringify(hashSources(PROJECT_ROOT)))
    .digest('hex');
  const dir = join(PROJECT_ROOT, 'node_modules', '.cache', 'permit-chain-fast');
  const bundlePath = join(dir, `workflow-bundle-${sources.slice(0, 16)}.js`);
  if (!existsSync(bundlePath)) {
    const bundle = await bundleWorkflowCode({
      workflowsPath: WORKFLOWS_PATH,
      workflowInterceptorModules: WORKFLOW_INTERCEPTOR_MODULES,
      logger: QUIET_BUNDLE_LOGGER,
    });
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    for (const old of readdirSync(dir)) rmSync(join(dir, old), { force: true });
    // Written whole or not at all: another run may read it at any moment.
    const partial = `${bundlePath}.${process.pid}.partial`;
    writeFileSync(partial, bundle.code, { mode: 0o600 });
    renameSync(partial, bundlePath);
  }
  project.provide('workflowBundlePath', bundlePath);
}
