// A whole livemerge deployment as real processes, for failure injection (test/faults): its own Temporal dev
// server persistent on a SQLite file in a temp dir, the engine worker, the VM's host agent (host A, no
// storage role) and a storage-role agent (host B, --storage), each a `node bin/livemerge.cjs worker ...`
// child configured only by environment, exactly as an operator runs them. Every part can be SIGKILLed and
// restarted (the Temporal server on the same SQLite file); libvirtd can be restarted as a whole.
//
// Holds (src/testing/holds.ts) go through LIVEMERGE_HOLD_DIR=<dir>/holds of every worker.
// Logs: <dir>/logs/<part>.log (appended across restarts); `logTail()` for failure reports.
// Everything this module started is SIGKILLed by stop(), and also when the test process exits.
import { execFile, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { Client, Connection } from '@temporalio/client';
import { temporal as proto } from '@temporalio/proto';
import type { Held } from './holds';
import { Holds } from './holds';
import { pollUntil } from './poll';
import { freePort } from './procs';
import { ENGINE_TASK_QUEUE, STORAGE_TASK_QUEUE, hostTaskQueue } from '../../src/common/task-queues';
import { REPO_ROOT, loadConfig, temporalConnectionOptions } from '../../src/config';
import { temporalHealthy } from '../../src/devstack/health';
import { devServerArgs, temporalCliPath } from '../../src/devstack/temporal-server';

const exec = promisify(execFile);
const CLI = path.join(REPO_ROOT, 'bin', 'livemerge.cjs');

export type Part = 'temporal' | 'engine' | 'host' | 'storage';
export type WorkerPart = Exclude<Part, 'temporal'>;
const WORKER_PARTS = ['engine', 'host', 'storage'] as const;

interface Running {
  child: ChildProcess;
  exited: Promise<void>;
}

/** Every child of every stack in this process, killed on exit whatever happens to the test. */
const allChildren = new Set<ChildProcess>();
function killAllChildren(): void {
  for (const c of allChildren) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
}
process.once('exit', killAllChildren);
for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const)
  process.once(sig, () => {
    killAllChildren();
    process.kill(process.pid, sig); // the listener is gone: the default action ends the process
  });

/** pollUntil with the harness's argument order (what first) and a 50 ms default. */
export async function until<T>(
  what: string,
  check: () => Promise<T | undefined | null | false> | T | undefined | null | false,
  timeoutMs: number,
  everyMs = 50,
): Promise<T> {
  return await pollUntil(check, timeoutMs, what, everyMs);
}

export interface ProcessStackOptions {
  /** The VM's host (its agent has no storage role). */
  hostId?: string;
  /** The storage-role agent's host id. */
  storageHostId?: string;
  namespace?: string;
  /**
   * The VM host's own libvirtd (a simulated host's URI): then the two agents are two hosts, each told
   * every host's URI (LIVEMERGE_HOST_URIS), and the engine asks both. Default: both use qemu:///system.
   */
  vmHostUri?: string;
  /**
   * An external Temporal server instead of a dev server of the stack's own (the production stage's
   * cluster): the TEMPORAL_* variables its clients need (temporalEnv() of test/helpers/temporal.ts). The
   * namespace must exist there. The stack neither starts nor kills it.
   */
  externalTemporal?: Record<string, string>;
  /** More environment for one worker part (e.g. its metrics address). */
  workerEnv?: WorkerEnv;
}

/** Environment per worker part, on top of the stack's (a build's LIVEMERGE_BUILD_ID, a metrics address). */
export type WorkerEnv = Partial<Record<WorkerPart, Record<string, string>>>;

export class ProcessStack {
  readonly hostId: string;
  readonly storageHostId: string;
  readonly namespace: string;
  readonly storageRoot: string;
  readonly auditLogFile: string;
  readonly holdDir: string;
  readonly holds: Holds;
  readonly logDir: string;
  readonly dbFile: string;
  address = '';
  private uiPort = 0;
  private connection: Connection | undefined;
  client!: Client;
  /** Keyed by part, or `part@set` for the workers of a further set (startWorkerSet). */
  private readonly parts = new Map<string, Running>();
  /** Each worker set's extra environment; '' is the stack's own set. */
  private readonly sets = new Map<string, WorkerEnv>();
  private stopped = false;
  readonly vmHostUri: string | undefined;
  private readonly externalTemporal: Record<string, string> | undefined;

  private constructor(
    readonly dir: string,
    opts: ProcessStackOptions,
  ) {
    this.hostId = opts.hostId ?? 'fault-a';
    this.storageHostId = opts.storageHostId ?? 'fault-b';
    this.namespace = opts.namespace ?? 'livemerge-faults';
    this.vmHostUri = opts.vmHostUri;
    this.externalTemporal = opts.externalTemporal;
    this.storageRoot = path.join(dir, 'storage');
    this.auditLogFile = path.join(dir, 'audit.jsonl');
    this.holdDir = path.join(dir, 'holds');
    this.holds = new Holds(this.holdDir);
    this.logDir = path.join(dir, 'logs');
    this.dbFile = path.join(dir, 'temporal.sqlite');
    this.sets.set('', opts.workerEnv ?? {});
  }

  /** Starts the server and the three workers; resolves once every worker polls its queues. */
  static async start(opts: ProcessStackOptions = {}): Promise<ProcessStack> {
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'lm-faults-'));
    await fsp.chmod(dir, 0o755); // QEMU (libvirt-qemu) must reach the images below it
    const s = new ProcessStack(dir, opts);
    try {
      for (const d of [s.storageRoot, s.holdDir, s.logDir]) await fsp.mkdir(d, { recursive: true });
      await fsp.chmod(s.storageRoot, 0o755);
      if (s.externalTemporal) {
        const config = loadConfig(s.externalTemporal);
        s.address = config.temporalAddress;
        s.connection = await Connection.connect(temporalConnectionOptions(config));
      } else {
        s.address = `127.0.0.1:${await freePort()}`;
        s.uiPort = await freePort();
        await s.startPart('temporal');
        s.connection = await Connection.connect({ address: s.address });
      }
      s.client = new Client({ connection: s.connection, namespace: s.namespace });
      await Promise.all((['engine', 'host', 'storage'] as const).map((p) => s.startPart(p)));
      return s;
    } catch (err) {
      await s.stop();
      throw err;
    }
  }

  private command(part: Part): { cmd: string; args: string[] } {
    switch (part) {
      case 'temporal': {
        const i = this.address.lastIndexOf(':');
        return {
          cmd: temporalCliPath(),
          args: devServerArgs({
            dbFile: this.dbFile,
            host: this.address.slice(0, i),
            port: Number(this.address.slice(i + 1)),
            uiPort: this.uiPort,
            namespace: this.namespace,
          }),
        };
      }
      case 'engine':
        return { cmd: process.execPath, args: [CLI, 'worker', 'engine'] };
      case 'host':
        return { cmd: process.execPath, args: [CLI, 'worker', 'host', '--host-id', this.hostId] };
      case 'storage':
        return {
          cmd: process.execPath,
          args: [CLI, 'worker', 'host', '--host-id', this.storageHostId, '--storage'],
        };
    }
  }

  private env(part: Part, set = ''): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('VITEST')) env[k] = v;
    // Every agent is told every host's URI (a host it cannot read would make its checks refuse). By
    // default both agents' hosts are the one system libvirtd; the engine asks only the VM's host.
    const twoHosts = this.vmHostUri
      ? {
          LIVEMERGE_HOSTS: `${this.hostId},${this.storageHostId}`,
          LIVEMERGE_HOST_URIS: `${this.hostId}=${this.vmHostUri},${this.storageHostId}=qemu:///system`,
          LIBVIRT_DEFAULT_URI: part === 'host' ? this.vmHostUri : 'qemu:///system',
        }
      : { LIVEMERGE_HOST_URIS: `${this.hostId}=qemu:///system` };
    return {
      ...env,
      TEMPORAL_ADDRESS: this.address,
      TEMPORAL_NAMESPACE: this.namespace,
      LIVEMERGE_DATA_DIR: path.join(this.dir, 'data'),
      LIVEMERGE_STORAGE_ROOT: this.storageRoot,
      LIVEMERGE_HOSTS: this.hostId,
      LIVEMERGE_AUDIT_LOG: this.auditLogFile,
      LIBVIRT_DEFAULT_URI: 'qemu:///system',
      LIVEMERGE_HOLD_DIR: this.holdDir,
      ...twoHosts,
      ...this.externalTemporal,
      ...(part !== 'temporal' ? this.sets.get(set)?.[part] : undefined),
    };
  }

  private static key(part: Part, set = ''): string {
    return set ? `${part}@${set}` : part;
  }

  logFile(part: Part, set = ''): string {
    return path.join(this.logDir, `${ProcessStack.key(part, set)}.log`);
  }

  pid(part: Part, set = ''): number | undefined {
    const r = this.parts.get(ProcessStack.key(part, set));
    return r && r.child.exitCode === null && r.child.signalCode === null ? r.child.pid : undefined;
  }

  /**
   * Starts a further set of the three workers, `set`, with `env` on top of the stack's environment (a
   * second build of the same deployment, say); its parts are named by `set` in pid/kill/logFile.
   */
  async startWorkerSet(set: string, env: WorkerEnv): Promise<void> {
    if (set === '' || this.sets.has(set)) throw new Error(`worker set ${JSON.stringify(set)} exists`);
    this.sets.set(set, env);
    await Promise.all(WORKER_PARTS.map((p) => this.startPart(p, set)));
  }

  /** Starts a part that is not running; resolves once it serves (server healthy, worker polling). */
  async startPart(part: Part, set = ''): Promise<void> {
    if (this.stopped) throw new Error('the stack is stopped');
    if (part === 'temporal' && this.externalTemporal) throw new Error('the Temporal server is external');
    const key = ProcessStack.key(part, set);
    if (this.pid(part, set) !== undefined) throw new Error(`${key} is already running`);
    const { cmd, args } = this.command(part);
    const log = fs.openSync(this.logFile(part, set), 'a');
    fs.writeSync(log, `\n===== ${new Date().toISOString()} start ${key}: ${cmd} ${args.join(' ')}\n`);
    const env = this.env(part, set);
    const child = spawn(cmd, args, { cwd: REPO_ROOT, env, stdio: ['ignore', log, log] });
    fs.closeSync(log);
    allChildren.add(child);
    const exited = new Promise<void>((resolve) => {
      child.once('exit', () => resolve());
      child.once('error', () => resolve());
    });
    void exited.then(() => allChildren.delete(child));
    this.parts.set(key, { child, exited });
    await this.waitServing(part, part === 'engine' ? 120_000 : 60_000, set);
  }

  /** SIGKILL (a crash) or SIGTERM (a clean stop); resolves once the process is gone. */
  async kill(part: Part, signal: NodeJS.Signals = 'SIGKILL', set = ''): Promise<void> {
    const r = this.parts.get(ProcessStack.key(part, set));
    if (!r) return;
    if (r.child.exitCode === null && r.child.signalCode === null) r.child.kill(signal);
    await r.exited;
  }

  async restart(part: Part, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    await this.kill(part, signal);
    await this.startPart(part);
  }

  private async waitServing(part: Part, timeoutMs: number, set = ''): Promise<void> {
    const key = ProcessStack.key(part, set);
    const pid = this.parts.get(key)?.child.pid;
    await until(
      `${key} (pid ${pid}) to serve; log ${this.logFile(part, set)}:\n${this.logTail(part, 60, set)}`,
      async () => {
        if (this.pid(part, set) === undefined)
          throw new Error(`${key} exited while starting:\n${this.logTail(part, 60, set)}`);
        if (part === 'temporal') return await temporalHealthy({ address: this.address }, this.namespace);
        return await this.polling(part, pid!);
      },
      timeoutMs,
      200,
    );
  }

  /** True when the worker process `pid` polls all of its task queues (its identity is `<pid>@host`). */
  private async polling(part: WorkerPart, pid: number): Promise<boolean> {
    const queues: Array<[string, 'workflow' | 'activity']> =
      part === 'engine'
        ? [[ENGINE_TASK_QUEUE, 'workflow']]
        : part === 'host'
          ? [[hostTaskQueue(this.hostId), 'activity']]
          : [
              [hostTaskQueue(this.storageHostId), 'activity'],
              [STORAGE_TASK_QUEUE, 'activity'],
            ];
    if (!this.connection) return false;
    for (const [name, kind] of queues) {
      const res = await this.connection.workflowService
        .describeTaskQueue({
          namespace: this.namespace,
          taskQueue: { name, kind: proto.api.enums.v1.TaskQueueKind.TASK_QUEUE_KIND_NORMAL },
          taskQueueType:
            kind === 'workflow'
              ? proto.api.enums.v1.TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW
              : proto.api.enums.v1.TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
        })
        .catch(() => undefined);
      if (!res?.pollers?.some((p) => p.identity?.startsWith(`${pid}@`))) return false;
    }
    return true;
  }

  /** Every part runs and every worker polls again (after a server restart they reconnect by themselves). */
  async waitHealthy(timeoutMs = 60_000): Promise<void> {
    for (const part of ['temporal', 'engine', 'host', 'storage'] as const) {
      if (part === 'temporal' && this.externalTemporal) continue;
      if (this.pid(part) === undefined) throw new Error(`${part} is not running:\n${this.logTail(part)}`);
      await this.waitServing(part, timeoutMs);
    }
  }

  // ---- holds (src/testing/holds.ts) --------------------------------------------------------------

  /** Arms the breakpoint before activity (or at breakpoint) `name`. */
  hold(name: string): void {
    this.holds.hold(name);
  }

  release(name: string): void {
    this.holds.release(name);
  }

  /** Disarms every breakpoint and forgets every stale `held-*` marker (a killed process leaves its own). */
  releaseAll(): void {
    this.holds.releaseAll();
  }

  /** Resolves once a worker stopped at breakpoint `name` (for workflow `workflowId` when given). */
  async waitHeld(name: string, workflowId?: string, timeoutMs = 60_000): Promise<Held> {
    return await this.holds.waitHeld(name, workflowId, timeoutMs);
  }

  // ---- Temporal server --------------------------------------------------------------------------

  /** Kills the dev server (SIGKILL: a crash) and starts it again on the same SQLite file. */
  async restartTemporal(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    await this.kill('temporal', signal);
    await this.startPart('temporal');
  }

  // ---- reports and teardown ----------------------------------------------------------------------

  logTail(part: Part, lines = 60, set = ''): string {
    try {
      return fs.readFileSync(this.logFile(part, set), 'utf8').split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }

  allLogs(lines = 80): string {
    const parts: Array<[Part, string]> = [
      ['temporal', ''],
      ...[...this.sets.keys()].flatMap((set) => WORKER_PARTS.map((p): [Part, string] => [p, set])),
    ];
    return parts
      .map(
        ([p, set]) =>
          `----- ${ProcessStack.key(p, set)} (${this.logFile(p, set)}) -----\n${this.logTail(p, lines, set)}`,
      )
      .join('\n');
  }

  /** Kills everything it started, closes its client and removes its directory (keeps it with `keep`). */
  async stop(opts: { keep?: boolean } = {}): Promise<void> {
    this.stopped = true;
    for (const set of this.sets.keys())
      for (const part of WORKER_PARTS) await this.kill(part, 'SIGKILL', set);
    await this.kill('temporal', 'SIGKILL');
    await this.connection?.close().catch(() => undefined);
    if (!opts.keep) await fsp.rm(this.dir, { recursive: true, force: true });
  }
}

// ---- libvirtd ------------------------------------------------------------------------------------

function ppidOf(pid: number): number | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return undefined;
  }
}

function cmdline(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
  } catch {
    return '';
  }
}

/** vitest processes that are not part of this test run (another engineer's run on the same machine). */
export async function foreignVitestPids(): Promise<number[]> {
  const ancestors: number[] = [];
  for (let p: number | undefined = process.pid; p && p > 1; p = ppidOf(p)) ancestors.push(p);
  // The run's root: the outermost ancestor whose command line names vitest.
  const root = [...ancestors].reverse().find((p) => cmdline(p).includes('vitest')) ?? process.pid;
  const inRun = (pid: number): boolean => {
    for (let p: number | undefined = pid; p && p > 1; p = ppidOf(p)) if (p === root) return true;
    return ancestors.includes(pid);
  };
  const { stdout } = await exec('pgrep', ['-f', 'vitest']).catch(() => ({ stdout: '' }));
  return stdout
    .split('\n')
    .map(Number)
    .filter((pid) => pid > 0 && !inRun(pid) && cmdline(pid).includes('vitest'));
}

function libvirtdPid(): number | undefined {
  try {
    const pid = Number(fs.readFileSync('/run/libvirtd.pid', 'utf8').trim());
    return cmdline(pid).includes('libvirtd') ? pid : undefined;
  } catch {
    return undefined;
  }
}

export async function libvirtdAnswers(): Promise<boolean> {
  return await exec('virsh', ['-q', '-c', 'qemu:///system', 'list']).then(
    () => true,
    () => false,
  );
}

/**
 * Restarts libvirtd as an operator would (SIGTERM, wait for the exit, `libvirtd -d`, wait until it
 * answers). Running VMs survive (QEMU is not libvirtd's child); libvirtd reconnects to them.
 * First waits until no other vitest run is active: they use the same libvirtd.
 */
export async function restartLibvirtd(log: (line: string) => void = () => undefined): Promise<void> {
  await until(
    'other vitest runs to finish before restarting libvirtd',
    async () => {
      const others = await foreignVitestPids();
      if (others.length > 0) log(`libvirtd restart waits for vitest run(s) ${others.join(', ')}`);
      return others.length === 0;
    },
    30 * 60_000,
    2000,
  );
  const pid = libvirtdPid();
  if (pid === undefined) throw new Error('libvirtd is not running (no /run/libvirtd.pid)');
  process.kill(pid, 'SIGTERM');
  await until('libvirtd to exit', () => cmdline(pid) === '', 60_000);
  await exec('libvirtd', ['-d']);
  await until('libvirtd to answer', libvirtdAnswers, 60_000, 100);
}
