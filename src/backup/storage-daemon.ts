// One qemu-storage-daemon child per copy: started with its blockdevs on the command line and a QMP
// monitor on a unix socket in a private run directory, stopped by QMP `quit` (SIGKILL if it does
// not go), killed on abort. Its stderr is kept for the error. No daemon outlives its caller: every
// exit path waits for the process to be gone, a still-running child is SIGKILLed if Node exits, and
// gets SIGKILL from the kernel if Node is killed (its parent-death signal, set through setpriv).
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { QmpClient } from './qmp';

/** qemu-storage-daemon could not start or died; `stderr` is what it said. */
export class StorageDaemonError extends Error {
  override readonly name = 'StorageDaemonError';
  readonly code = 'STORAGE_DAEMON_FAILED' as const;
  constructor(
    readonly args: readonly string[],
    readonly exitCode: number | null,
    readonly signal: NodeJS.Signals | null,
    readonly stderr: string,
    detail: string,
    options?: { cause?: unknown },
  ) {
    super(`qemu-storage-daemon ${detail}: ${stderr.trim() || 'no stderr'}`, options);
  }
}

/** Values inside QEMU's `key=value,…` option syntax: a comma is written twice. */
export function qemuOptValue(v: string): string {
  return v.replaceAll(',', ',,');
}

export interface StorageDaemon {
  pid: number;
  qmp: QmpClient;
  /** What the daemon wrote to stderr so far. */
  stderr: () => string;
  /** Settles when the process is gone. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** QMP `quit`, SIGKILL after `graceMs` (default 5 s); resolves once the process is gone. Idempotent. */
  stop: (graceMs?: number) => Promise<void>;
  /** SIGKILL; resolves once the process is gone. Idempotent. */
  kill: () => Promise<void>;
}

export interface StartDaemonOptions {
  /** Options after the monitor (`--blockdev …`, `--nbd-server …`, `--export …`). */
  args: readonly string[];
  /** A private directory for the QMP socket (`qmp.sock`). */
  runDir: string;
  /** Abort: the daemon is killed (also while starting). */
  signal?: AbortSignal;
  binary?: string;
  /** How long the QMP socket may take to appear (default 10 s). */
  startTimeoutMs?: number;
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // 'exit' handlers run synchronously: kill() is all that can be done there, and it is enough.
  process.on('exit', () => {
    for (const c of live) c.kill('SIGKILL');
  });
}

/**
 * util-linux setpriv, when there is one: it sets the child's parent-death signal (PR_SET_PDEATHSIG) to
 * SIGKILL and execs the daemon in place (same pid). The exit hook above cannot run when the agent itself
 * is SIGKILLed; without this the daemon would live on, an orphan holding its images' locks (a frozen
 * image it reads cannot be committed into while it runs: the backup's merge back would fail for ever).
 */
const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => fs.existsSync(p));

export async function startStorageDaemon(o: StartDaemonOptions): Promise<StorageDaemon> {
  o.signal?.throwIfAborted();
  installExitHook();
  const qmpSock = path.join(o.runDir, 'qmp.sock');
  const args = [
    '--chardev',
    `socket,id=lmqmp,path=${qmpSock},server=on,wait=off`,
    '--monitor',
    'chardev=lmqmp',
    ...o.args,
  ];
  const binary = o.binary ?? process.env.LIVEMERGE_QEMU_STORAGE_DAEMON ?? 'qemu-storage-daemon';
  const [cmd, argv] = SETPRIV ? [SETPRIV, ['--pdeathsig', 'KILL', '--', binary, ...args]] : [binary, args];
  const child = spawn(cmd, argv, {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, LC_ALL: 'C' },
  });
  live.add(child);
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  let spawnError: Error | undefined;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('error', (e) => {
      spawnError = e;
      // A binary that cannot be run emits 'error' and no 'exit'.
      if (child.pid === undefined) resolve({ code: null, signal: null });
    });
    child.once('close', (code, signal) => resolve({ code, signal }));
  });
  void exited.then(() => live.delete(child));

  const kill = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined)
      child.kill('SIGKILL');
    await exited;
  };
  const onAbort = (): void => void kill();
  o.signal?.addEventListener('abort', onAbort, { once: true });

  // Stop waiting for the socket as soon as the daemon is gone (bad option, unreadable image…).
  const startAbort = new AbortController();
  void exited.then(() => startAbort.abort(new Error('exited')));
  o.signal?.addEventListener('abort', () => startAbort.abort(o.signal?.reason), { once: true });

  let qmp: QmpClient;
  try {
    qmp = await QmpClient.connect(qmpSock, {
      timeoutMs: o.startTimeoutMs ?? 10_000,
      signal: startAbort.signal,
    });
  } catch (e) {
    await kill();
    o.signal?.removeEventListener('abort', onAbort);
    const { code, signal } = await exited;
    if (o.signal?.aborted) throw o.signal.reason;
    throw new StorageDaemonError(
      args,
      code,
      signal,
      stderr,
      spawnError ? `could not run: ${spawnError.message}` : `did not start (exit ${code ?? signal})`,
      { cause: spawnError ?? e },
    );
  }

  let stopping: Promise<void> | undefined;
  const stop = (graceMs = 5_000): Promise<void> => {
    stopping ??= (async () => {
      if (child.exitCode === null && child.signalCode === null) {
        // The reply may never come (the daemon closes the socket as it quits): the exit is what counts.
        qmp.execute('quit').catch(() => undefined);
        const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
        await exited;
        clearTimeout(timer);
      }
      qmp.close();
      o.signal?.removeEventListener('abort', onAbort);
    })();
    return stopping;
  };

  return {
    pid: child.pid ?? -1,
    qmp,
    stderr: () => stderr,
    exited,
    stop,
    kill: async () => {
      await kill();
      qmp.close();
      o.signal?.removeEventListener('abort', onAbort);
    },
  };
}
