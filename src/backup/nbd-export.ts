// Step 4 with `repository: null`: the frozen disks exported read-only over NBD for a third-party backup
// application, by ONE detached qemu-storage-daemon (it outlives the activity that starts it: the
// workflow keeps the export up until `backupDone` or a timeout). Each export offers `base:allocation`
// and, for an incremental, `qemu:dirty-bitmap:<bitmap>` from the plan's scratch overlay.
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { DiskBackupPlan, FrozenDisk } from './types';
import { qemuOptValue, StorageDaemonError } from './storage-daemon';

export interface NbdExportDisk {
  /** Export name, e.g. the disk's target (vda). */
  name: string;
  plan: DiskBackupPlan & { scratch?: string };
  disk: FrozenDisk;
}

export interface NbdExport {
  name: string;
  /** `nbd+unix:///<name>?socket=<socketPath>` */
  uri: string;
  /** The dirty bitmap offered as `qemu:dirty-bitmap:<bitmap>` (incremental only). */
  bitmap?: string;
}

export interface NbdExports {
  exports: NbdExport[];
  pid: number;
}

export interface StartNbdOptions {
  disks: NbdExportDisk[];
  socketPath: string;
  pidFile: string;
  binary?: string;
}

function describe(o: StartNbdOptions): NbdExport[] {
  return o.disks.map((d) => {
    const e: NbdExport = {
      name: d.name,
      uri: `nbd+unix:///${encodeURIComponent(d.name)}?socket=${o.socketPath}`,
    };
    if (d.plan.mode === 'incremental' && d.plan.bitmap) e.bitmap = d.plan.bitmap;
    return e;
  });
}

/** The pid in `pidFile` if that process is alive and is a qemu-storage-daemon (not a reused pid). */
export async function liveDaemonPid(pidFile: string): Promise<number | undefined> {
  const text = await fs.readFile(pidFile, 'utf8').catch(() => undefined);
  const pid = text ? Number.parseInt(text.trim(), 10) : NaN;
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  const cmd = await daemonCmdline(pid);
  return cmd ? pid : undefined;
}

async function daemonCmdline(pid: number): Promise<string[] | undefined> {
  const [cmdline, stat] = await Promise.all([
    fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => ''),
    fs.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => ''),
  ]);
  // A zombie (state Z, after the ')' of the command name) is dead for every purpose here.
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  const argv = cmdline.split('\0').filter((a) => a !== '');
  if (state === 'Z' || !argv[0] || path.basename(argv[0]) !== 'qemu-storage-daemon') return undefined;
  return argv;
}

/**
 * Starts the export daemon, or answers the same for the one already running from `pidFile`. The daemon
 * is detached (`--daemonize`: its parent exits once every export is up, then this returns).
 */
export async function startNbdExports(o: StartNbdOptions): Promise<NbdExports> {
  const running = await liveDaemonPid(o.pidFile);
  if (running !== undefined) return { exports: describe(o), pid: running };
  await fs.rm(o.pidFile, { force: true });
  await fs.rm(o.socketPath, { force: true });

  const args = ['--daemonize', '--pidfile', o.pidFile];
  o.disks.forEach((d, i) => {
    const leaf = d.disk.chain[d.disk.chain.length - 1];
    if (!leaf) throw new Error(`disk ${d.disk.target}: the frozen chain is empty`);
    const incremental = d.plan.mode === 'incremental' && d.plan.scratch && d.plan.bitmap;
    // An incremental is served from its scratch overlay: the frozen view plus the unioned bitmap.
    const src = incremental ? { path: d.plan.scratch ?? '', format: 'qcow2' } : leaf;
    args.push(
      '--blockdev',
      `driver=file,node-name=f${i},filename=${qemuOptValue(src.path)},read-only=on`,
      '--blockdev',
      `driver=${src.format},node-name=n${i},file=f${i},read-only=on`,
    );
  });
  args.push('--nbd-server', `addr.type=unix,addr.path=${qemuOptValue(o.socketPath)}`);
  o.disks.forEach((d, i) => {
    const bm =
      d.plan.mode === 'incremental' && d.plan.bitmap ? `,bitmaps.0=${qemuOptValue(d.plan.bitmap)}` : '';
    args.push('--export', `type=nbd,id=e${i},node-name=n${i},name=${qemuOptValue(d.name)},writable=off${bm}`);
  });

  await new Promise<void>((resolve, reject) => {
    execFile(
      o.binary ?? process.env.LIVEMERGE_QEMU_STORAGE_DAEMON ?? 'qemu-storage-daemon',
      args,
      { env: { ...process.env, LC_ALL: 'C' }, timeout: 60_000 },
      (err, _stdout, stderr) => {
        if (!err) return resolve();
        const code = typeof err.code === 'number' ? err.code : null;
        reject(
          new StorageDaemonError(
            args,
            code,
            (err.signal as NodeJS.Signals | null) ?? null,
            stderr,
            'export failed',
            {
              cause: err,
            },
          ),
        );
      },
    );
  });
  const pid = await liveDaemonPid(o.pidFile);
  if (pid === undefined)
    throw new StorageDaemonError(args, 0, null, '', `started but no live daemon in ${o.pidFile}`);
  return { exports: describe(o), pid };
}

function signalPid(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch (e) {
    // Gone in between: that is what was wanted.
    if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw e;
  }
}

/** Stops the export daemon of `pidFile` (idempotent: no pid file or a dead pid is nothing to do). */
export async function stopNbdExports(pidFile: string): Promise<void> {
  const pid = await liveDaemonPid(pidFile);
  if (pid !== undefined) {
    const argv = (await daemonCmdline(pid)) ?? [];
    signalPid(pid, 'SIGTERM');
    // Not our child: no exit event to wait for, so its /proc entry is watched (bounded, then SIGKILL).
    const start = Date.now();
    let killed = false;
    while ((await daemonCmdline(pid)) !== undefined) {
      if (!killed && Date.now() - start > 10_000) {
        signalPid(pid, 'SIGKILL');
        killed = true;
      }
      if (Date.now() - start > 20_000)
        throw new StorageDaemonError([], null, 'SIGKILL', '', `pid ${pid} from ${pidFile} does not exit`);
      await new Promise((r) => setTimeout(r, 20));
    }
    const server = argv.find((a) => a.startsWith('addr.type=unix,addr.path='));
    if (server)
      await fs.rm(server.slice('addr.type=unix,addr.path='.length).replaceAll(',,', ','), { force: true });
  }
  await fs.rm(pidFile, { force: true });
}
