/**
 * A second build of the chain, for a test that deploys one beside the checkout's: a copy of the checkout's build
 * inputs (the folders of workers/workflow-code.ts BUILD_FOLDERS, package.json, package-lock.json, tsconfig.json) in
 * a folder of its own, with one line of its sources changed, run exactly as the tests run the checkout (its own
 * cli/permit-chain.cjs through tsx, its workflows bundled by its worker at start, the checkout's node_modules).
 * Its build id is the one the product computes for those sources (workers/build-id.ts), so it differs from the
 * checkout's by that line alone; nothing is told which build it is. No compiled build (dist/, build-info.json) is
 * involved: the checkout's build runs from its sources too, and a compiled copy would only add a tsc run.
 */
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, realpathSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PROJECT_ROOT } from '../../cli/servers';
import { BUILD_FOLDERS } from '../../workers/workflow-code';

/** Besides the build folders: what the CLI reads at start (engines, the pinned Node) and tsx's compiler options. */
const ROOT_FILES = ['package.json', 'package-lock.json', 'tsconfig.json', '.node-version'] as const;

export interface SecondBuild {
  /** The copy's root. */
  root: string;
  /** Its `permit-chain` (cli/permit-chain.cjs), for workerSpec's `cli`. */
  cli: string;
  /** Its build id, as its own `permit-chain --version --json` prints it. */
  buildId: string;
}

/** One line of a source file, replaced: `from` must occur exactly once in `file` (a path from the root). */
export interface SourceChange {
  file: string;
  from: string;
  to: string;
}

/** Copies the checkout's build inputs to `into` (created; must not exist), applies `change`, reads its build id. */
export function makeSecondBuild(into: string, change: SourceChange): SecondBuild {
  if (existsSync(into)) throw new Error(`second build: ${into} exists already: give a new folder`);
  mkdirSync(into, { recursive: true });
  for (const folder of BUILD_FOLDERS) cpSync(join(PROJECT_ROOT, folder), join(into, folder), { recursive: true });
  for (const file of ROOT_FILES) {
    if (existsSync(join(PROJECT_ROOT, file))) cpSync(join(PROJECT_ROOT, file), join(into, file));
  }
  // The same libraries (the lock file is a build input, copied unchanged): the checkout's, not a second install.
  symlinkSync(realpathSync(join(PROJECT_ROOT, 'node_modules')), join(into, 'node_modules'), 'dir');

  const path = join(into, change.file);
  const source = readFileSync(path, 'utf8');
  const found = source.split(change.from).length - 1;
  if (found !== 1) {
    throw new Error(
      `second build: ${change.file} holds ${found} copies of the line to change (${change.from.slice(0, 80)}…), ` +
        'expected exactly 1: update the change in the test to the file as it is now',
    );
  }
  writeFileSync(path, source.replace(change.from, change.to));

  const cli = join(into, 'cli', 'permit-chain.cjs');
  const version = spawnSync(process.execPath, [cli, '--version', '--json'], { encoding: 'utf8', timeout: 60_000 });
  if (version.status !== 0) {
    throw new Error(`second build: permit-chain --version failed (${version.status}): ${version.stderr.slice(0, 500)}`);
  }
  const buildId = (JSON.parse(version.stdout) as { build_id?: unknown }).build_id;
  if (typeof buildId !== 'string') throw new Error(`second build: no build_id in ${version.stdout.slice(0, 300)}`);
  return { root: into, cli, buildId };
}
