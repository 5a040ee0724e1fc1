import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPlan } from '../../client/plans';
import { PROJECT_ROOT } from '../../cli/servers';
import { parseDockerfile, runStageLocally, type LocalStage, type Stage } from '../dockerfile';
import { chainHarness, eventually, makePlan, setPositions, testEnv, type ChainHarness } from '../helpers';
import { loadConfig } from '../../lib/config';

const { stages } = parseDockerfile(readFileSync(join(PROJECT_ROOT, 'Dockerfile'), 'utf8'));
const stage = (name: string): Stage => {
  const found = stages.find((s) => s.name === name);
  if (!found) throw new Error(`the Dockerfile has no stage ${name}`);
  return found;
};
const argsOf = (s: Stage, keyword: string) => s.instructions.filter((i) => i.keyword === keyword).map((i) => i.args);

describe('the Dockerfile', () => {
  it('builds on the pinned Node in a build stage and runs a runtime stage', () => {
    const nodeVersion = readFileSync(join(PROJECT_ROOT, '.node-version'), 'utf8').trim();
    expect(stages.map((s) => [s.name, s.image])).toEqual([
      ['build', `node:${nodeVersion}-bookworm-slim`],
      ['runtime', `node:${nodeVersion}-bookworm-slim`],
    ]);
    expect(argsOf(stage('build'), 'RUN')).toContain('npm run build');
  });

  it('runtime: production dependencies, dist/ from the build, a non-root user, the compiled CLI', () => {
    const runtime = stage('runtime');
    const installs = argsOf(runtime, 'RUN').filter((run) => /\bnpm (ci|install|i)\b/.test(run));
    expect(installs).toHaveLength(1);
    expect(installs[0]).toMatch(/\bnpm ci --omit=dev\b/);
    const copies = runtime.instructions.filter((i) => i.keyword === 'COPY');
    expect(copies.map((c) => [c.flags.from ?? 'context', c.args])).toEqual([
      ['context', 'package.json package-lock.json ./'],
      ['build', '/app/dist ./dist'],
    ]);
    expect(argsOf(runtime, 'USER')).toEqual(['node']);
    expect(argsOf(runtime, 'ENTRYPOINT')).toEqual(['["node", "dist/cli/cli.js"]']);
  });
});

/** The `node` user of the official Node images. */
const NODE_UID = 1000;

describe('the image, its two stages run without Docker', () => {
  let root: string;
  let app: LocalStage;
  let h: ChainHarness;
  const env = testEnv();
  /** The image's environment for a process started in it: its variables, the test's, Node on its PATH. */
  const imageEnv = (extra: Record<string, string> = {}) => ({
    ...process.env,
    ...app.env,
    ...env,
    PATH: `${join(app.root, 'usr', 'local', 'bin')}:${process.env.PATH ?? ''}`,
    ...extra,
  });

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'permit-chain-image-'));
    const build = runStageLocally(stage('build'), { root: join(root, 'build'), context: PROJECT_ROOT, stages: {} });
    app = runStageLocally(stage('runtime'), { root: join(root, 'runtime'), context: PROJECT_ROOT, stages: { build } });
    // As in the image: Node in /usr/local/bin, everything readable by the non-root user.
    mkdirSync(join(app.root, 'usr', 'local', 'bin'), { recursive: true });
    copyFileSync(process.execPath, join(app.root, 'usr', 'local', 'bin', 'node'));
    copyFileSync(join(PROJECT_ROOT, 'test', 'fixtures', 'no-webpack.cjs'), join(app.root, 'no-webpack.cjs'));
    for (const dir of [root, app.root]) chmodSync(dir, 0o755);
    h = await chainHarness(loadConfig(env));
  }, 300_000);
  afterAll(async () => {
    await h?.close();
    // Two node_modules and a Node: most of a gigabyte.
    rmSync(root, { recursive: true, force: true });
  });

  it('holds no dev-only package (tsx, vitest, typescript, @temporalio/testing…), and every production one', () => {
    const modules = join(app.root, app.workdir, 'node_modules');
    const lock = JSON.parse(readFileSync(join(PROJECT_ROOT, 'package-lock.json'), 'utf8')) as {
      packages: Record<string, { dev?: boolean; optional?: boolean }>;
    };
    const topLevel = Object.entries(lock.packages).filter(([path]) => /^node_modules\/(@[^/]+\/)?[^/]+$/.test(path));
    const devOnly = topLevel.filter(([, entry]) => entry.dev === true).map(([path]) => path);
    const production = topLevel.filter(([, entry]) => !entry.dev && !entry.optional).map(([path]) => path);
    expect(devOnly).toEqual(
      expect.arrayContaining(['node_modules/tsx', 'node_modules/vitest', 'node_modules/typescript']),
    );
    expect(devOnly.filter((path) => existsSync(join(modules, '..', path)))).toEqual([]);
    expect(production.filter((path) => !existsSync(join(modules, '..', path)))).toEqual([]);
    // One core bridge: this machine's.
    expect(readdirSync(join(modules, '@temporalio', 'core-bridge', 'releases'))).toHaveLength(1);
  });

  it('starts the worker from the prebuilt bundle as the non-root user, without webpack, and runs a plan to executed', async () => {
    const [command = '', ...args] = app.command;
    const asRoot = process.getuid?.() === 0;
    expect(app.command).toEqual(['node', 'dist/cli/cli.js', 'worker']);
    const worker = spawn(command, args, {
      cwd: join(app.root, app.workdir),
      env: imageEnv({ NODE_OPTIONS: `--require ${join(app.root, 'no-webpack.cjs')}` }),
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(asRoot ? { uid: NODE_UID, gid: NODE_UID } : {}),
    });
    const output = collect(worker);
    try {
      await eventually(
        () => Promise.resolve(/state: 'RUNNING'|"state":"RUNNING"/.test(output.text()) ? true : undefined),
        60_000,
        'RUNNING',
      ).catch((err: unknown) => {
        throw new Error(`${String(err)}; the worker said:\n${output.text().slice(-3000)}`);
      });
      if (asRoot)
        expect(readFileSync(`/proc/${worker.pid}/status`, 'utf8')).toMatch(new RegExp(`^Uid:\\s+${NODE_UID}\\s`, 'm'));

      await setPositions(h, 'BTCUSDT', '0.062', '0.062');
      const plan = makePlan({ symbol: 'BTCUSDT', side: 'SELL', qty: '0.062', reduce_only: true });
      const { handle } = await startPlan(h.client, h.config, plan);
      const final = await handle.result();
      expect(final.outcome).toBe('executed');
      expect(await h.redis.hget(h.keys.execution(plan.plan_id), 'status')).toBe('FILLED');
    } finally {
      worker.kill('SIGTERM');
      await output.exited;
    }
    const text = output.text();
    expect(text).toContain('no-webpack: webpack is a stub in this process');
    expect(text).toContain(`worker: workflow code from the prebuilt bundle ${join(app.root, app.workdir, 'dist')}`);
    expect(text).toContain('no sources here to compare');
    expect(text).not.toMatch(/was used|Workflow bundle created|webpack \d/);
    expect(text).toContain('worker: stopped');
  }, 120_000);

  it('holds the product only: no file of the tools (scripts/) or the tests (test/) in dist/, no bench workflow in the bundle', () => {
    const dist = join(app.root, app.workdir, 'dist');
    const files = readdirSync(dist, { recursive: true, withFileTypes: true })
      .filter((entry) => entry.isFile())
      .map((entry) => relative(dist, join(entry.parentPath, entry.name)));
    expect(files.filter((path) => /^(scripts|test)\//.test(path))).toEqual([]);
    const tops = new Set(files.map((path) => path.split('/')[0]));
    expect([...tops].sort()).toEqual([
      'activities',
      'build-info.json',
      'cli',
      'client',
      'contract',
      'lib',
      'workers',
      'workflow-bundle.js',
      'workflows',
    ]);
    expect(files).toContain(join('cli', 'cli.js'));
    // What the build id hashes: the product's sources and the lock file.
    const info = JSON.parse(readFileSync(join(dist, 'build-info.json'), 'utf8')) as { sources: Record<string, string> };
    const hashed = new Set(Object.keys(info.sources).map((path) => path.split('/')[0]));
    expect([...hashed].sort()).toEqual([
      'activities',
      'cli',
      'client',
      'contract',
      'lib',
      'package-lock.json',
      'workers',
      'workflows',
    ]);
    const bundle = readFileSync(join(dist, 'workflow-bundle.js'), 'utf8');
    expect(bundle).toMatch(/\bpermitChain\b/);
    expect(bundle).toMatch(/\boperatorOperation\b/);
    expect(bundle.match(/\bbench(Floor|Shape|Noop)\b/g)).toBeNull();
  });

  it("lists no tool among its commands (no bench, no chaos), and dev --exchange binance-double says the double is the checkout's", () => {
    const run = (args: string[]) =>
      spawnSync('node', ['dist/cli/cli.js', ...args], {
        cwd: join(app.root, app.workdir),
        env: imageEnv(),
        encoding: 'utf8',
      });
    const help = run(['--help']);
    expect(help.status).toBe(0);
    const commands = [...help.stdout.matchAll(/^ {2}([a-z-]+)\b/gm)].map((m) => m[1]);
    expect(commands).toEqual(expect.arrayContaining(['dev', 'worker', 'intake', 'demo', 'replay-check', 'what-if']));
    expect(commands.filter((name) => name === 'bench' || name === 'chaos')).toEqual([]);
    const dev = run(['dev', '--exchange', 'binance-double']);
    expect(dev.status).toBe(2);
    expect(dev.stderr).toBe(
      'permit-chain: --exchange binance-double: the Binance double is a tool of the checkout ' +
        '(scripts/binance-double), not of this install: run dev from a checkout with its dev dependencies, or use ' +
        '--exchange paper\n',
    );
  });
});

function collect(child: ChildProcess): { text: () => string; exited: Promise<number | null> } {
  let text = '';
  child.stdout?.on('data', (chunk: Buffer) => (text += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (text += chunk.toString()));
  const exited = new Promise<number | null>((done) => child.once('exit', (code) => done(code)));
  return { text: () => text, exited };
}
