import { configDefaults, defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // The Temporal native bridge does not live well in worker threads.
    pool: 'forks',
    globalSetup: ['test/global-setup.ts'],
    // Decision tables stand beside the layers they test; everything else under test/.
    include: ['test/**/*.test.ts', 'activities/**/*.test.ts'],
    // The cluster test builds and starts a real cluster: `npm run test:cluster` (vitest.cluster.config.mts).
    exclude: [...configDefaults.exclude, 'test/cluster/**'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // The summary reporter's last line, `tests: N passed, N failed`, is what CI reads.
    reporters: ['default', './test/summary-reporter.ts'],
  },
});
