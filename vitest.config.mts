import { configDefaults, defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // Worker threads crash the Temporal SDK's native core: every test file runs in its own forked process.
    pool: 'forks',
    poolOptions: { forks: { singleFork: false, maxForks: 2, minForks: 1 } },
    include: ['test/**/*.test.ts'],
    // The failure-injection suite restarts libvirtd and kills processes: it runs alone, after this one
    // (vitest.faults.config.mts, scripts/test.sh).
    // The production-shaped stage (test/production) runs on its own cluster: vitest.production.config.mts.
    exclude: [...configDefaults.exclude, 'test/faults/**', 'test/production/**'],
    globalSetup: ['test/helpers/global-setup.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    reporters: ['default'],
  },
});
