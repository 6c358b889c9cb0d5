#!/usr/bin/env node
// The `livemerge` command. Runs the compiled JavaScript in dist/ (scripts/build.sh, run by scripts/setup.sh)
// when it is at least as new as every source file, else the TypeScript sources directly (tsx), so that
// `npx livemerge` needs no build step and an edit under src/ is never shadowed by stale JavaScript.
// LIVEMERGE_CLI=tsx forces the sources.
'use strict';
const path = require('node:path');
const { ROOT, distIsFresh } = require('./dist-fresh.cjs');

if (process.env.LIVEMERGE_CLI !== 'tsx' && distIsFresh()) {
  require(path.join(ROOT, 'dist', 'cli', 'main.js'));
} else {
  // The CLI loads each command's implementation with import(): tsx's ESM hooks resolve those to the
  // same CommonJS module instances that tsx/cjs gives require().
  require('tsx/cjs');
  import('tsx/esm/api').then(
    (tsx) => {
      tsx.register();
      require(path.join(ROOT, 'src', 'cli', 'main.ts'));
    },
    (err) => {
      process.stderr.write(`livemerge: ${err.stack ?? err}\n`);
      process.exit(1);
    },
  );
}
