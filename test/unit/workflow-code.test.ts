import { mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PROJECT_ROOT } from '../../cli/servers';
import { buildIdOf, currentBuildId } from '../../workers/build-id';
import { describe, expect, it } from 'vitest';
import {
  BUILD_INFO_FILE,
  BUNDLE_FILE,
  hashSources,
  prebuiltWorkflowCode,
  staleSources,
  workflowCode,
} from '../../workers/workflow-code';

describe('staleSources: the inputs that differ from a build', () => {
  const built = { 'workflows/index.ts': 'a', 'lib/plan.ts': 'b', 'package-lock.json': 'c' };
  it.each([
    ['the same sources', { ...built }, []],
    ['a changed source', { ...built, 'lib/plan.ts': 'B' }, ['lib/plan.ts']],
    ['a removed source', { 'workflows/index.ts': 'a', 'package-lock.json': 'c' }, ['lib/plan.ts']],
    ['an added source', { ...built, 'lib/new.ts': 'n' }, ['lib/new.ts']],
    ['a changed lock file', { ...built, 'package-lock.json': 'C' }, ['package-lock.json']],
    // The production image: dist/ and the lock file, no TypeScript to compare.
    ['no sources, the same lock file', { 'package-lock.json': 'c' }, []],
    ['no sources, another lock file', { 'package-lock.json': 'C' }, ['package-lock.json']],
    ['nothing at all', {}, []],
  ])('%s', (_name, current: Record<string, string>, expected) => {
    expect(staleSources(built, current)).toEqual(expected);
  });
});

describe('prebuiltWorkflowCode: a build folder checked against the sources', () => {
  function checkout(files: Record<string, string>): string {
    const root = mkdtempSync(join(tmpdir(), 'permit-chain-build-'));
    for (const [path, text] of Object.entries(files)) {
      mkdirSync(join(root, path, '..'), { recursive: true });
      writeFileSync(join(root, path), text);
    }
    return root;
  }
  function buildInto(root: string): string {
    const out = join(root, 'dist');
    mkdirSync(out, { recursive: true });
    writeFileSync(join(out, BUNDLE_FILE), '/* bundle */');
    const info = { builtAt: '2026-11-26T12:00:00.000Z', node: 'v24.21.0', sources: hashSources(root) };
    writeFileSync(join(out, BUILD_INFO_FILE), JSON.stringify(info));
    return out;
  }

  it('uses the bundle when the sources are those it was built from, and says so', () => {
    const root = checkout({ 'workflows/index.ts': 'export {};', 'package-lock.json': '{}' });
    const out = buildInto(root);
    const code = prebuiltWorkflowCode(out, root);
    expect(code.option).toEqual({ workflowBundle: { codePath: join(out, BUNDLE_FILE) } });
    expect(code.description).toContain('built 2026-11-26T12:00:00.000Z, the sources unchanged');
  });

  it('refuses a bundle whose sources changed since, naming them', () => {
    const root = checkout({ 'workflows/index.ts': 'export {};', 'workers/x.test.ts': 'ignored' });
    const out = buildInto(root);
    writeFileSync(join(root, 'workflows', 'index.ts'), 'export const changed = 1;');
    writeFileSync(join(root, 'workers', 'x.test.ts'), 'tests are not build inputs');
    expect(() => prebuiltWorkflowCode(out, root)).toThrow(
      /was built from other sources \(workflows\/index\.ts changed since 2026-11-26T12:00:00\.000Z\): run npm run build/,
    );
  });

  it('where only dist/ and the lock file are (the image), checks the lock file', () => {
    const root = checkout({ 'workflows/index.ts': 'export {};', 'package-lock.json': '{}' });
    const out = buildInto(root);
    const image = checkout({ 'package-lock.json': '{}' });
    expect(prebuiltWorkflowCode(out, image).description).toContain('no sources here to compare');
    writeFileSync(join(image, 'package-lock.json'), '{"other": true}');
    expect(() => prebuiltWorkflowCode(out, image)).toThrow(/package-lock\.json changed/);
  });

  it('refuses a build folder without a bundle', () => {
    const root = checkout({ 'workflows/index.ts': 'export {};' });
    expect(() => prebuiltWorkflowCode(join(root, 'dist'), root)).toThrow(/no workflow bundle at .*: run npm run build/);
  });

  it('from the TypeScript sources (as here), the worker bundles workflows/ at start', () => {
    expect(workflowCode().option).toEqual({ workflowsPath: expect.stringMatching(/workflows\/index\.ts$/) as string });
  });
});

describe('workflows/: one way through the workflow', () => {
  it('holds no patched() or deprecatePatch() call: a deploy is a new build, not a branch (docs/testing.md)', () => {
    const dir = join(PROJECT_ROOT, 'workflows');
    const files = readdirSync(dir).filter((name) => name.endsWith('.ts'));
    expect(files).toContain('permit-chain.ts');
    const calls = files.flatMap((name) =>
      readFileSync(join(dir, name), 'utf8')
        .split('\n')
        .map((line, at) => ({ where: `workflows/${name}:${at + 1}`, line }))
        .filter(({ line }) => /\b(patched|deprecatePatch)\s*\(/.test(line))
        .map(({ where, line }) => `${where}: ${line.trim()}`),
    );
    expect(calls).toEqual([]);
  });
});

describe('buildIdOf: one id for everything a worker runs', () => {
  function checkout(files: Record<string, string>): string {
    const root = mkdtempSync(join(tmpdir(), 'permit-chain-build-id-'));
    for (const [path, text] of Object.entries(files)) {
      mkdirSync(join(root, path, '..'), { recursive: true });
      writeFileSync(join(root, path), text);
    }
    return root;
  }
  const files = {
    'workflows/permit-chain.ts': 'export const w = 1;\n',
    'activities/execute.ts': 'export const a = 1;\n',
    'lib/plan.ts': 'export const p = 1;\n',
    'package-lock.json': '{"lockfileVersion":3}\n',
  };

  it('is 16 hex digits, the same for the same sources wherever they are', () => {
    const id = buildIdOf(hashSources(checkout(files)));
    expect(id).toMatch(/^[0-9a-f]{16}$/);
    expect(buildIdOf(hashSources(checkout(files)))).toBe(id);
  });

  it.each([
    ['an activity-only change', { 'activities/execute.ts': 'export const a = 2;\n' }],
    ['a workflow change', { 'workflows/permit-chain.ts': 'export const w = 2;\n' }],
    ['another lock file (the SDK or a library)', { 'package-lock.json': '{"lockfileVersion":3,"x":1}\n' }],
    ['an added source', { 'activities/new.ts': 'export const n = 1;\n' }],
  ])('changes with %s', (_name, change: Record<string, string>) => {
    const before = buildIdOf(hashSources(checkout(files)));
    expect(buildIdOf(hashSources(checkout({ ...files, ...change })))).not.toBe(before);
  });

  it("is, for this checkout, what permit-chain --version and the worker print: the sources' hash", () => {
    expect(currentBuildId()).toBe(buildIdOf(hashSources(PROJECT_ROOT)));
  });

  it('refuses to name a build from nothing', () => {
    expect(() => buildIdOf({})).toThrow(/no sources to hash/);
  });
});
