import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // The Temporal native bridge does not live well in worker threads.
    pool: 'forks',
    globalSetup: ['test/global-setup.ts'],
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Failures print the one plan's story; the servers' own logs stay quiet.
    reporters: ['default'],
  },
});
