import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { extname, join, relative } from 'node:path';
import type { WorkerOptions } from '@temporalio/worker';

/** True when this module runs compiled (`npm run build` → dist/), false when it runs from the TypeScript sources. */
const COMPILED = extname(__filename) === '.js';
/** The checkout: this file's folder's parent from the sources, dist/'s parent when compiled. */
const SOURCE_ROOT = join(__dirname, ...(COMPILED ? ['..', '..'] : ['..']));

/** The workflows' entry in the sources: what webpack bundles, at build time or at a worker's start. */
export const WORKFLOWS_PATH = join(SOURCE_ROOT, 'workflows', 'index.ts');
/**
 * Loaded into the workflow sandbox beside `workflows/` (and into every prebuilt bundle: scripts/build.ts,
 * test/global-setup.ts): they tell the worker when plans start and end (workflows/observe.ts).
 */
export const WORKFLOW_INTERCEPTOR_MODULES = [join(SOURCE_ROOT, 'workflows', 'observe.ts')];
/** webpack's report (bundleWorkflowCode's logger) only when something is wrong: for the build and the tests' bundles. */
export const QUIET_BUNDLE_LOGGER = {
  log: () => undefined,
  trace: () => undefined,
  debug: () => undefined,
  info: () => undefined,
  warn: (message: string) => console.warn(message),
  error: (message: string) => console.error(message),
};
/** What `npm run build` writes beside the compiled code: the workflow bundle and what the build was made from. */
export const BUNDLE_FILE = 'workflow-bundle.js';
export const BUILD_INFO_FILE = 'build-info.json';
/** The folders tsc compiles (tsconfig.build.json); with package-lock.json, the inputs of a build. */
export const BUILD_FOLDERS = ['contract', 'lib', 'activities', 'workflows', 'client', 'workers', 'cli'] as const;

export interface BuildInfo {
  builtAt: string;
  node: string;
  /** sha256 of each input, by path from the checkout's root. */
  sources: Record<string, string>;
}

/** How a worker gets its workflow code, and the line that says so at its start. */
export interface WorkflowCode {
  option: Pick<WorkerOptions, 'workflowBundle' | 'workflowsPath'>;
  description: string;
}

/**
 * The worker's workflow code. Compiled, it is the bundle `npm run build` wrote beside it, and no webpack runs at start;
 * a missing bundle, or sources here that differ from those it was built from, stop the worker (a stale bundle never
 * runs). From the TypeScript sources (tsx: dev, tests), webpack bundles `workflows/` at start.
 */
export function workflowCode(): WorkflowCode {
  if (!COMPILED) {
    return {
      option: { workflowsPath: WORKFLOWS_PATH },
      description: 'workflows/ bundled at start (the TypeScript sources; npm run build makes a prebuilt bundle)',
    };
  }
  return prebuiltWorkflowCode(join(__dirname, '..'), SOURCE_ROOT);
}

/** The bundle in a build's folder, checked against the sources under `sourceRoot` where they are present. */
export function prebuiltWorkflowCode(outDir: string, sourceRoot: string): WorkflowCode {
  const codePath = join(outDir, BUNDLE_FILE);
  const infoPath = join(outDir, BUILD_INFO_FILE);
  if (!existsSync(codePath) || !existsSync(infoPath)) {
    throw new Error(`no workflow bundle at ${codePath}: run npm run build`);
  }
  const info = JSON.parse(readFileSync(infoPath, 'utf8')) as BuildInfo;
  const current = hashSources(sourceRoot);
  const stale = staleSources(info.sources, current);
  if (stale.length > 0) {
    const shown = stale.slice(0, 3).join(', ') + (stale.length > 3 ? ` and ${stale.length - 3} more` : '');
    throw new Error(
      `${outDir} was built from other sources (${shown} changed since ${info.builtAt}): run npm run build`,
    );
  }
  const compared = hasSources(current) ? 'the sources unchanged' : 'no sources here to compare';
  return {
    option: { workflowBundle: { codePath } },
    description: `the prebuilt bundle ${codePath} (built ${info.builtAt}, ${compared})`,
  };
}

/** sha256 of each build input under `root`: the .ts files of the compiled folders (tests aside), package-lock.json. */
export function hashSources(root: string): Record<string, string> {
  const files: string[] = [];
  const walk = (dir: string): void => {
    if (!existsSync(dir)) return;
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.test.ts')) files.push(path);
    }
  };
  for (const folder of BUILD_FOLDERS) walk(join(root, folder));
  const lock = join(root, 'package-lock.json');
  if (existsSync(lock)) files.push(lock);
  const hashes: Record<string, string> = {};
  for (const file of files.sort()) {
    hashes[relative(root, file)] = createHash('sha256').update(readFileSync(file)).digest('hex');
  }
  return hashes;
}

/**
 * The inputs that differ between a build's and the current ones. Where no TypeScript source is present (the
 * production image holds dist/ and the lock file only), the files present on both sides are compared; otherwise
 * an input added or removed counts too.
 */
export function staleSources(built: Record<string, string>, current: Record<string, string>): string[] {
  const paths = hasSources(current)
    ? new Set([...Object.keys(built), ...Object.keys(current)])
    : Object.keys(current).filter((path) => path in built);
  return [...paths].filter((path) => built[path] !== current[path]).sort();
}

function hasSources(hashes: Record<string, string>): boolean {
  return Object.keys(hashes).some((path) => path.endsWith('.ts'));
}
