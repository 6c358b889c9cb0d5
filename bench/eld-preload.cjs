// Event-loop delay sampler for profiling runs (issue 13): `node --require bench/eld-preload.cjs`, e.g. through
// NODE_OPTIONS, with LM_ELD_DIR=DIR (bench/merge-scale.ts --profile DIR sets both for the stack it starts).
// Without LM_ELD_DIR it does nothing. Every thread that loads it (the main thread, and worker threads when
// they inherit the preload) keeps perf_hooks.monitorEventLoopDelay histograms: one over its whole life and
// one per phase, a phase being the text in DIR/phase (read every 500 ms; the bench writes e.g. "N=8" there
// for the concurrent batch and "idle" after it). At exit, or on SIGTERM, it writes
// DIR/<pid>-eld.json (a worker thread: DIR/<pid>-t<threadId>-eld.json) with p50/p99/max/mean in ms.
// A SIGTERM listener replaces Node's default "terminate", so when it is the only listener it exits the
// process itself (code 143), as the default would; when the program handles SIGTERM (the Temporal SDK's
// shutdown signals do) it only writes the file and leaves the shutdown to the program.
/* global require, process, setInterval */
/* eslint-disable @typescript-eslint/no-require-imports -- a CommonJS preload (node --require) */
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { monitorEventLoopDelay } = require('node:perf_hooks');
const { isMainThread, threadId } = require('node:worker_threads');

const dir = process.env.LM_ELD_DIR;
if (dir) {
  const RESOLUTION_MS = 10;
  const total = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
  const phase = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
  total.enable();
  phase.enable();
  const phaseFile = path.join(dir, 'phase');
  const readPhase = () => {
    try {
      return fs.readFileSync(phaseFile, 'utf8').trim() || 'start';
    } catch {
      return 'start';
    }
  };
  const ms = (ns) => Math.round(ns / 1e4) / 100;
  const stats = (h) =>
    h.count === 0
      ? { count: 0 }
      : {
          count: h.count,
          p50: ms(h.percentile(50)),
          p99: ms(h.percentile(99)),
          max: ms(h.max),
          mean: ms(h.mean),
        };
  const phases = [];
  let current = readPhase();
  let since = Date.now();
  const closePhase = () => {
    phases.push({
      phase: current,
      from: new Date(since).toISOString(),
      to: new Date().toISOString(),
      ...stats(phase),
    });
    phase.reset();
    since = Date.now();
  };
  const timer = setInterval(() => {
    const p = readPhase();
    if (p !== current) {
      closePhase();
      current = p;
    }
  }, 500);
  timer.unref();
  let written = false;
  const write = () => {
    if (written) return;
    written = true;
    closePhase();
    const file = path.join(
      dir,
      isMainThread ? `${process.pid}-eld.json` : `${process.pid}-t${threadId}-eld.json`,
    );
    const out = {
      pid: process.pid,
      threadId,
      argv: process.argv.slice(1),
      resolutionMs: RESOLUTION_MS,
      total: stats(total),
      phases,
    };
    try {
      fs.mkdirSync(dir, { recursive: true });
      fs.writeFileSync(file, JSON.stringify(out, null, 1) + '\n');
    } catch (e) {
      process.stderr.write(`eld-preload: ${file}: ${e}\n`);
    }
  };
  process.on('exit', write);
  if (isMainThread)
    process.on('SIGTERM', () => {
      write();
      if (process.listenerCount('SIGTERM') === 1) process.exit(143);
    });
}
