#!/usr/bin/env node
// Runs the TypeScript sources directly (tsx), so `npx livemerge` needs no build step.
require('tsx/cjs');
require('../src/cli/main.ts');
