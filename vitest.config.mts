import { configDefaults, defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // The Temporal native bridge does not live well in worker threads.
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // The summary reporter's last line, `tests: N passed, N failed`, is what CI reads.
    reporters: ['default', './test/summary-reporter.ts'],
    projects: [
      {
        // The chain's branches with in-memory activities on the time-skipping test server: no Redis, no dev server,
        // under 30 s. `npm test` runs it first, and the rest only when it passes.
        extends: true,
        test: {
          name: 'fast',
          include: ['test/fast/**/*.test.ts'],
          globalSetup: ['test/fast/global-setup.ts'],
        },
      },
      {
        extends: true,
        test: {
          name: 'suite',
          globalSetup: ['test/global-setup.ts'],
          // Decision tables stand beside the layers they test; everything else under test/.
          include: ['test/**/*.test.ts', 'activities/**/*.test.ts'],
          // The cluster test builds and starts a real cluster: `npm run test:cluster` (vitest.cluster.config.mts).
          exclude: [...configDefaults.exclude, 'test/cluster/**', 'test/fast/**'],
        },
      },
    ],
  },
});
