import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // Worker threads crash the Temporal SDK's native core: every test file runs in its own forked process.
    pool: 'forks',
    poolOptions: { forks: { singleFork: false, maxForks: 2, minForks: 1 } },
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/helpers/global-setup.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    reporters: ['default'],
  },
});
