import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ESLint } from 'eslint';
import { describe, expect, it } from 'vitest';
import { PROJECT_ROOT } from '../../cli/servers';

/**
 * The house's floors are a lint rule; this shows the rule bites. Probe files are written into the tree for the
 * length of the test (ESLint's typed rules read files from disk) and removed after.
 */
async function lintProbes(probes: Record<string, string>): Promise<string[]> {
  const paths = Object.keys(probes).map((file) => join(PROJECT_ROOT, file));
  try {
    for (const [file, code] of Object.entries(probes)) writeFileSync(join(PROJECT_ROOT, file), code);
    const results = await new ESLint({ cwd: PROJECT_ROOT }).lintFiles(paths);
    return results.flatMap((result) => result.messages.map((message) => message.ruleId ?? message.message));
  } finally {
    for (const path of paths) rmSync(path, { force: true });
  }
}

describe('the import graph', () => {
  it('refuses an import that runs up a floor: the contract importing a worker', async () => {
    const rules = await lintProbes({
      'contract/zz-probe-up.ts': "export { runWorker } from '../workers/worker';\n",
    });
    expect(rules).toContain('import-x/no-restricted-paths');
  }, 60_000);

  it('refuses an import that closes a loop', async () => {
    const rules = await lintProbes({
      'lib/zz-probe-a.ts': "import { b } from './zz-probe-b';\nexport const a = (): number => b() + 1;\n",
      'lib/zz-probe-b.ts': "import { a } from './zz-probe-a';\nexport const b = (): number => a() - 1;\n",
    });
    expect(rules).toContain('import-x/no-cycle');
  }, 60_000);

  it('keeps the product out of the tools and the tests: the CLI importing the bench, a tool importing a test helper', async () => {
    const rules = await lintProbes({
      'cli/zz-probe-tool.ts': "export { runBench } from '../scripts/bench';\n",
      'scripts/zz-probe-test.ts': "export { testEnv } from '../test/helpers';\n",
    });
    expect(rules).toEqual(['import-x/no-restricted-paths', 'import-x/no-restricted-paths']);
  }, 60_000);

  it('lets an import go down a floor', async () => {
    const rules = await lintProbes({
      'workers/zz-probe-down.ts': "export { redisKeys } from '../contract/keys';\n",
    });
    expect(rules).toEqual([]);
  }, 60_000);
});
