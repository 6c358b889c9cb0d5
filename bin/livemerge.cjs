#!/usr/bin/env node
// Runs the TypeScript sources directly (tsx), so `npx livemerge` needs no build step.
// The CLI loads each command's implementation with import(): tsx's ESM hooks resolve those to the same
// CommonJS module instances that tsx/cjs gives require().
require('tsx/cjs');
import('tsx/esm/api').then(
  (tsx) => {
    tsx.register();
    require('../src/cli/main.ts');
  },
  (err) => {
    process.stderr.write(`livemerge: ${err.stack ?? err}\n`);
    process.exit(1);
  },
);
