import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bundleWorkflowCode } from '@temporalio/worker';
import type { TestProject } from 'vitest/node';
import { WORKFLOWS_PATH, WORKFLOW_INTERCEPTOR_MODULES } from '../../workers/worker';
import { QUIET_BUNDLE_LOGGER } from '../../workers/workflow-code';
import { ensureServersInstalled } from '../../scripts/servers';
import { requireEnginesNode } from '../global-setup';

/**
 * The fast tier's setup: the workflow bundle, built once, as the worker would bundle it (with its interceptors). No
 * Redis and no dev server: each test file starts its own time-skipping test server (test/fast/harness.ts).
 */
export default async function setup(project: TestProject) {
  requireEnginesNode();
  // As the suite does: scripts/setup.sh --tests when the test server (or another tool of the tests) is missing.
  ensureServersInstalled({ forTests: true });
  const bundle = await bundleWorkflowCode({
    workflowsPath: WORKFLOWS_PATH,
    workflowInterceptorModules: WORKFLOW_INTERCEPTOR_MODULES,
    logger: QUIET_BUNDLE_LOGGER,
  });
  const bundlePath = join(mkdtempSync(join(tmpdir(), 'permit-chain-fast-bundle-')), 'workflow-bundle.js');
  writeFileSync(bundlePath, bundle.code);
  project.provide('workflowBundlePath', bundlePath);
}
