// CPU profiles by phase for profiling runs (issue 13): `node --require bench/cpu-prof-preload.cjs`, through
// NODE_OPTIONS, with LM_CPU_PROF_DIR=DIR (bench/merge-scale.ts --profile DIR sets both for the stack it
// starts). Without LM_CPU_PROF_DIR it does nothing. Node 20 refuses --cpu-prof in NODE_OPTIONS and the dev
// stack spawns its workers as `node bin/livemerge.cjs ...` without extra flags, so this starts the same V8
// sampling profiler (1 ms interval, what --cpu-prof uses) through node:inspector from inside the process.
// A phase is the text in DIR/phase (read every 500 ms; the bench writes e.g. "N8" there for the concurrent
// batch and "idle" after it; "start" before the first): at each change the profile of the phase that
// ended is written as DIR/<pid>[-t<threadId>]-<phase>.cpuprofile (the usual .cpuprofile JSON, for
// bench/profile-summary.ts or Chrome DevTools) and a new one starts. The last phase is written at exit,
// or on SIGTERM (when it is the only SIGTERM listener it then exits with 143, as Node's default would).
// Worker threads that inherit the preload (the SDK's workflow threads) profile themselves the same way.
// It also counts the child processes the main thread starts (ChildProcess.prototype.spawn: execFile, spawn,
// exec), by program and phase, into DIR/<pid>-spawns.json at exit: a spawn forks on the JS thread.
/* global require, process, setInterval, clearInterval */
/* eslint-disable @typescript-eslint/no-require-imports -- a CommonJS preload (node --require) */
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const inspector = require('node:inspector');
const { isMainThread, threadId } = require('node:worker_threads');

const dir = process.env.LM_CPU_PROF_DIR;
if (dir) {
  const phaseFile = path.join(dir, 'phase');
  const readPhase = () => {
    try {
      return (
        fs
          .readFileSync(phaseFile, 'utf8')
          .trim()
          .replace(/[^\w.=-]/g, '_') || 'start'
      );
    } catch {
      return 'start';
    }
  };
  const session = new inspector.Session();
  session.connect();
  // An in-thread session answers synchronously: the callbacks below have run when post() returns, so
  // stopping and writing works inside an 'exit' listener too.
  const post = (method, params) => {
    let out;
    let failure;
    session.post(method, params ?? {}, (err, res) => {
      failure = err;
      out = res;
    });
    if (failure) throw failure;
    return out;
  };
  let current = readPhase();
  /** phase → program basename → count */
  const spawns = {};
  if (isMainThread) {
    const { ChildProcess } = require('node:child_process');
    const orig = ChildProcess.prototype.spawn;
    ChildProcess.prototype.spawn = function (options) {
      const prog = path.basename(String((options && options.file) || '?'));
      const byProg = (spawns[current] ??= {});
      byProg[prog] = (byProg[prog] ?? 0) + 1;
      return orig.apply(this, arguments);
    };
  }
  const start = () => {
    post('Profiler.enable');
    post('Profiler.setSamplingInterval', { interval: 1000 });
    post('Profiler.start');
  };
  const stopAndWrite = () => {
    const res = post('Profiler.stop');
    const base = isMainThread ? `${process.pid}` : `${process.pid}-t${threadId}`;
    const file = path.join(dir, `${base}-${current}.cpuprofile`);
    try {
      fs.mkdirSync(dir, { recursive: true });
      fs.writeFileSync(file, JSON.stringify(res.profile));
    } catch (e) {
      process.stderr.write(`cpu-prof-preload: ${file}: ${e}\n`);
    }
  };
  start();
  const timer = setInterval(() => {
    const p = readPhase();
    if (p === current) return;
    stopAndWrite();
    current = p;
    start();
  }, 500);
  timer.unref();
  let done = false;
  const finish = () => {
    if (done) return;
    done = true;
    clearInterval(timer);
    try {
      stopAndWrite();
      if (isMainThread)
        fs.writeFileSync(
          path.join(dir, `${process.pid}-spawns.json`),
          JSON.stringify(spawns, null, 1) + '\n',
        );
    } catch (e) {
      process.stderr.write(`cpu-prof-preload: ${e}\n`);
    }
  };
  process.on('exit', finish);
  if (isMainThread)
    process.on('SIGTERM', () => {
      finish();
      if (process.listenerCount('SIGTERM') === 1) process.exit(143);
    });
}
