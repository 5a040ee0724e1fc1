import { spawnSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { bundleWorkflowCode } from '@temporalio/worker';
import {
  BUILD_INFO_FILE,
  BUNDLE_FILE,
  WORKFLOWS_PATH,
  QUIET_BUNDLE_LOGGER,
  WORKFLOW_INTERCEPTOR_MODULES,
  hashSources,
  type BuildInfo,
} from '../workers/workflow-code';

const ROOT = resolve(__dirname, '..');

/**
 * `npm run build [-- --out DIR]`: the compiled JavaScript (tsc, tsconfig.build.json) in dist/ (or DIR), and beside it
 * the workflow bundle that a compiled worker loads instead of running webpack at start, with the hashes of the
 * sources both were made from (build-info.json), which the worker checks at start.
 */
async function build(outDir: string): Promise<void> {
  const started = performance.now();
  // Hashed first: what the build is made from, even if a file changes while it runs.
  const info: BuildInfo = { builtAt: new Date().toISOString(), node: process.version, sources: hashSources(ROOT) };
  rmSync(outDir, { recursive: true, force: true });
  mkdirSync(outDir, { recursive: true });
  const tsc = spawnSync(
    process.execPath,
    [require.resolve('typescript/bin/tsc'), '-p', join(ROOT, 'tsconfig.build.json'), '--outDir', outDir],
    { stdio: 'inherit' },
  );
  if (tsc.status !== 0) throw new Error(`tsc failed (exit ${tsc.status ?? tsc.signal})`);
  const bundle = await bundleWorkflowCode({
    workflowsPath: WORKFLOWS_PATH,
    workflowInterceptorModules: WORKFLOW_INTERCEPTOR_MODULES,
    logger: QUIET_BUNDLE_LOGGER,
  });
  writeFileSync(join(outDir, BUNDLE_FILE), bundle.code);
  writeFileSync(join(outDir, BUILD_INFO_FILE), `${JSON.stringify(info, null, 2)}\n`);
  const shown = relative(process.cwd(), outDir) || '.';
  const size = (bundle.code.length / 1e6).toFixed(1);
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  console.log(
    `build: ${shown}/ (tsc) and ${shown}/${BUNDLE_FILE} (${size} MB) in ${seconds} s, Node ${process.version}`,
  );
}

function outArg(argv: string[]): string {
  const at = argv.indexOf('--out');
  if (at === -1) return join(ROOT, 'dist');
  const dir = argv[at + 1];
  if (!dir) throw new Error('--out needs a folder');
  return resolve(dir);
}

build(outArg(process.argv.slice(2))).catch((err: unknown) => {
  console.error(`build: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
