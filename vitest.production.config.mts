// The production-shaped stage (issue #11, docs/production.md): every test in test/production runs against a
// real Temporal cluster on PostgreSQL with mutual TLS (scripts/temporal-cluster.sh), started once for the
// run by test/production/global-setup.ts. Files run one at a time: one test kills the whole server.
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    pool: 'forks',
    poolOptions: { forks: { singleFork: false, isolate: true, maxForks: 1, minForks: 1 } },
    fileParallelism: false,
    include: ['test/production/**/*.test.ts'],
    globalSetup: ['test/production/global-setup.ts'],
    testTimeout: 300_000,
    hookTimeout: 300_000,
    reporters: ['verbose'],
  },
});
