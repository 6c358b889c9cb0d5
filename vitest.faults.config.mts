// The failure-injection suite (test/faults, docs/failure-model.md): real processes killed and restarted,
// libvirtd and the Temporal dev server restarted. One file at a time, alone: a libvirtd restart must not
// hit another test. Each file starts its own Temporal dev server (test/helpers/process-stack.ts).
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    pool: 'forks',
    // One fork at a time, a fresh one per file (koffi's type registry cannot be loaded twice in a process).
    poolOptions: { forks: { singleFork: false, isolate: true, maxForks: 1, minForks: 1 } },
    fileParallelism: false,
    include: ['test/faults/**/*.test.ts'],
    globalSetup: ['test/faults/global-setup.ts'],
    testTimeout: 300_000,
    hookTimeout: 300_000,
    // The report names every cell of the matrix.
    reporters: ['verbose'],
  },
});
