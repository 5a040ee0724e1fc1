import { spawnSync } from 'node:child_process';
import {
  appendFileSync,
  cpSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PROJECT_ROOT } from '../../cli/servers';
import { buildIdOf } from '../../workers/build-id';
import { BUILD_FOLDERS, BUILD_INFO_FILE, hashSources, type BuildInfo } from '../../workers/workflow-code';
import { testEnv } from '../helpers';

// cli/launch.cjs is plain JavaScript, loaded as the launcher loads it.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const launch = require('../../cli/launch.cjs') as {
  BUILD_FOLDERS: string[];
  staleBuild(root: string): string[] | undefined;
};

/**
 * bin/permit-chain in a checkout of its own (a copy of the product's sources, BUILD_FOLDERS: no tools, no tests;
 * its node_modules and .tools linked),
 * compiled there with tsc as `npm run build` does. A preloaded probe writes down every module the process loaded.
 */
let root: string;
const probe = join(tmpdir(), `permit-chain-probe-${process.pid}.cjs`);

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'permit-chain-launcher-'));
  for (const entry of [...BUILD_FOLDERS, 'bin', 'package.json', 'package-lock.json', 'tsconfig.json']) {
    cpSync(join(PROJECT_ROOT, entry), join(root, entry), {
      recursive: true,
      filter: (path) => !path.endsWith('.test.ts'),
    });
  }
  cpSync(join(PROJECT_ROOT, 'tsconfig.build.json'), join(root, 'tsconfig.build.json'));
  for (const linked of ['node_modules', '.tools']) symlinkSync(join(PROJECT_ROOT, linked), join(root, linked));
  const info: BuildInfo = { builtAt: new Date().toISOString(), node: process.version, sources: hashSources(root) };
  const tsc = spawnSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', 'tsconfig.build.json'], {
    cwd: root,
    encoding: 'utf8',
  });
  expect(tsc.stdout + tsc.stderr).toBe('');
  writeFileSync(join(root, 'dist', BUILD_INFO_FILE), JSON.stringify(info));
  writeFileSync(
    probe,
    "process.on('exit', () => require('node:fs').writeFileSync(process.env.PROBE_OUT, " +
      'JSON.stringify({ modules: Object.keys(require.cache), execArgv: process.execArgv })));\n',
  );
}, 180_000);
afterAll(() => {
  rmSync(root, { recursive: true, force: true });
  rmSync(probe, { force: true });
});

/** Runs `launcher` (bin/permit-chain or a link to it) with the probe; what it printed and what it loaded. */
function launched(launcher: string, args: string[], env: Record<string, string> = {}) {
  const out = join(root, `probe-${Math.random().toString(16).slice(2)}.json`);
  const run = spawnSync(launcher, args, {
    env: { ...process.env, ...env, PROBE_OUT: out, NODE_OPTIONS: `--require ${probe}` },
    encoding: 'utf8',
  });
  const { modules } = JSON.parse(readFileSync(out, 'utf8')) as { modules: string[] };
  return { code: run.status, stdout: run.stdout, stderr: run.stderr, modules };
}

const tsx = (modules: string[]) => modules.filter((path) => path.includes('/node_modules/tsx/'));
const temporalClient = (modules: string[]) => modules.filter((path) => path.includes('/@temporalio/client/lib/'));

describe('bin/permit-chain', () => {
  it('keeps the folders a build is made from as the worker checks them', () => {
    expect(launch.BUILD_FOLDERS).toEqual([...BUILD_FOLDERS]);
  });

  it('runs the compiled CLI on the pinned Node, with no tsx, and --version loads no Temporal client', () => {
    expect(launch.staleBuild(root)).toEqual([]);
    const run = launched(join(root, 'bin', 'permit-chain'), ['--version']);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(
      /^permit-chain \d+\.\d+\.\d+\nbuild [0-9a-f]{16}\nTemporal TypeScript SDK \d+\.\d+\.\d+\n$/,
    );
    // The build id of a compiled copy is that of the sources it was built from (dist/build-info.json).
    const info = JSON.parse(readFileSync(join(root, 'dist', BUILD_INFO_FILE), 'utf8')) as BuildInfo;
    expect(run.stdout).toContain(`build ${buildIdOf(info.sources)}\n`);
    expect(run.modules).toContain(join(root, 'dist', 'cli', 'cli.js'));
    expect(tsx(run.modules)).toEqual([]);
    expect(temporalClient(run.modules)).toEqual([]);
    // No command's module: only the exit codes' and the context's, which every command shares.
    const commands = run.modules.filter((path) => path.includes('/dist/cli/commands/'));
    expect(commands).toEqual([join(root, 'dist', 'cli', 'commands', 'context.js')]);
  });

  it('runs a command against the server, compiled, through a link to it from another folder', () => {
    const onPath = mkdtempSync(join(tmpdir(), 'permit-chain-path-'));
    symlinkSync(join(root, 'bin', 'permit-chain'), join(onPath, 'permit-chain'));
    const run = launched(join(onPath, 'permit-chain'), ['status', 'feedfeedfeedfeed', '--json'], testEnv());
    expect(run.code).toBe(4);
    expect(JSON.parse(run.stderr)).toMatchObject({ exit_code: 4 });
    expect(tsx(run.modules)).toEqual([]);
    // The plans' commands and the client, not the worker's or the dev servers'.
    const ours = run.modules.filter((path) => path.startsWith(join(root, 'dist')));
    expect(ours).toContain(join(root, 'dist', 'cli', 'commands', 'plans.js'));
    for (const unused of ['workers/worker.js', 'cli/dev.js', 'cli/commands/processes.js']) {
      expect(ours).not.toContain(join(root, 'dist', unused));
    }
    // Nor the exchange's or Redis's client: status asks Temporal alone.
    for (const unused of ['/node_modules/binance/', '/node_modules/ioredis/']) {
      expect(run.modules.filter((path) => path.includes(unused))).toEqual([]);
    }
    rmSync(onPath, { recursive: true, force: true });
  });

  it('hashes a file touched since the build, and runs compiled while its content is the same', () => {
    const later = new Date(Date.now() + 60_000);
    utimesSync(join(root, 'lib', 'redact.ts'), later, later);
    expect(launch.staleBuild(root)).toEqual([]);
    expect(tsx(launched(join(root, 'bin', 'permit-chain'), ['--version']).modules)).toEqual([]);
  });

  it('notices sources changed since the build: one line naming them, then the sources run with tsx', () => {
    appendFileSync(join(root, 'lib', 'redact.ts'), '\n// changed after the build\n');
    mkdirSync(join(root, 'lib', 'extra'));
    writeFileSync(join(root, 'lib', 'extra', 'added.ts'), 'export const added = 1;\n');
    expect(launch.staleBuild(root)).toEqual(['lib/extra/added.ts', 'lib/redact.ts']);
    const run = launched(join(root, 'bin', 'permit-chain'), ['--version', '--json']);
    expect(run.code).toBe(0);
    expect(run.stderr).toBe(
      'permit-chain: dist/ was built from other sources (lib/extra/added.ts, lib/redact.ts changed): running the ' +
        'sources with tsx (slower); bash scripts/setup.sh builds it again\n',
    );
    expect(JSON.parse(run.stdout)).toMatchObject({ version: expect.any(String) as string });
    expect(tsx(run.modules).length).toBeGreaterThan(0);
    expect(run.modules).toContain(join(root, 'cli', 'cli.ts'));
  });

  it('counts a removed source as a change, and says so when there is no build at all', () => {
    rmSync(join(root, 'lib', 'extra'), { recursive: true });
    rmSync(join(root, 'client', 'search-attributes.ts'));
    expect(launch.staleBuild(root)).toEqual(['client/search-attributes.ts', 'lib/redact.ts']);
    rmSync(join(root, 'dist', BUILD_INFO_FILE));
    expect(launch.staleBuild(root)).toBeUndefined();
    const run = spawnSync(join(root, 'bin', 'permit-chain'), ['--version'], { encoding: 'utf8' });
    expect(run.stderr.split('\n')[0]).toBe(
      'permit-chain: no compiled CLI in dist/: running the sources with tsx (slower); bash scripts/setup.sh builds it again',
    );
  });
});
