import { defineConfig } from 'vitest/config';

// `npm run test:cluster`: the chain on a real Temporal cluster (scripts/cluster.sh), separate processes, minutes.
// Not part of `npm test`, which stays fast; the test starts its own cluster and Redis (no globalSetup).
export default defineConfig({
  test: {
    // The Temporal native bridge does not live well in worker threads.
    pool: 'forks',
    include: ['test/cluster/**/*.test.ts'],
    testTimeout: 600_000,
    hookTimeout: 300_000,
    reporters: ['default', './test/summary-reporter.ts'],
  },
});
