// Step 4 of a backup, per disk: the frozen view (all of it for a full, the changed clusters for an
// incremental) into `<backupId>.qcow2` in the repository, by a qemu-storage-daemon blockdev-backup.
// The file appears only by rename of a checked, fsynced `.part`: a file that exists is complete.
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { qemuImgCreate, runQemuImg } from '../qemu/qemu-img';
import type { DiskBackupPlan, FrozenDisk } from './types';
import { dataExtents, totalLength } from './extents';
import type { QmpEvent } from './qmp';
import { qemuOptValue, startStorageDaemon, type StorageDaemon } from './storage-daemon';

/** The block job failed inside QEMU (`desc` is QEMU's error), or the plan cannot be copied. */
export class BackupCopyError extends Error {
  override readonly name = 'BackupCopyError';
  readonly code = 'BACKUP_COPY_FAILED' as const;
  constructor(
    readonly target: string,
    message: string,
    readonly qemuError?: string,
    options?: { cause?: unknown },
  ) {
    super(`backup of ${target}: ${message}`, options);
  }
}

export interface CopyOptions {
  /** Final path `…/<backupId>.qcow2`. */
  file: string;
  /** Incremental only: the parent backup's file as the backing reference (relative to `file`'s directory). */
  parentFile?: string;
  bandwidthBytesPerSec?: number;
  onProgress?: (copied: number, total: number) => void;
  signal?: AbortSignal;
}

export interface CopyResult {
  /** Bytes allocated with data in the backup file itself (not in its backing). */
  copiedBytes: number;
  file: string;
  status: 'copied' | 'already-copied';
}

const CLUSTER = 64 * 1024;
const POLL_MS = 250;
const JOB = 'livemerge-backup';

/** Bytes `file` holds itself (depth 0, data), from `qemu-img map`. */
export async function ownDataBytes(file: string, signal?: AbortSignal): Promise<number> {
  return totalLength(await dataExtents(file, 'qcow2', { ownOnly: true, signal }));
}

async function exists(p: string): Promise<boolean> {
  return fs.stat(p).then(
    () => true,
    (e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return false;
      throw e;
    },
  );
}

async function fsyncPath(p: string): Promise<void> {
  const fh = await fs.open(p, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export async function copyDiskBackup(
  disk: FrozenDisk,
  plan: DiskBackupPlan & { scratch?: string },
  opts: CopyOptions,
): Promise<CopyResult> {
  const { file, signal } = opts;
  signal?.throwIfAborted();
  if (await exists(file))
    return { copiedBytes: await ownDataBytes(file, signal), file, status: 'already-copied' };
  const leaf = disk.chain[disk.chain.length - 1];
  if (!leaf) throw new BackupCopyError(disk.target, 'the frozen chain is empty');
  const incremental = plan.mode === 'incremental';
  if (incremental && (!plan.scratch || !plan.bitmap))
    throw new BackupCopyError(disk.target, 'an incremental plan without its scratch overlay and bitmap');
  if (incremental && !opts.parentFile)
    throw new BackupCopyError(disk.target, 'an incremental backup needs the parent backup file');

  const part = `${file}.part`;
  await fs.mkdir(path.dirname(file), { recursive: true });
  await fs.rm(part, { force: true });
  const runDir = await fs.mkdtemp(path.join(os.tmpdir(), 'livemerge-copy-'));
  let daemon: StorageDaemon | undefined;
  try {
    // The source is always a throwaway overlay over the frozen leaf, opened read-write by the daemon
    // (the backup job's filter wants a writable node); the frozen images below it stay read-only.
    let source = plan.scratch;
    if (!incremental) {
      source = path.join(runDir, 'source.qcow2');
      await qemuImgCreate(
        {
          path: source,
          format: 'qcow2',
          size: disk.capacity,
          backing: { file: leaf.path, format: leaf.format },
        },
        { signal },
      );
    }
    await qemuImgCreate(
      {
        path: part,
        format: 'qcow2',
        size: disk.capacity,
        backing: incremental && opts.parentFile ? { file: opts.parentFile, format: 'qcow2' } : undefined,
        options: { cluster_size: String(CLUSTER) },
      },
      { signal },
    );
    daemon = await startStorageDaemon({
      runDir,
      signal,
      args: [
        '--blockdev',
        `driver=file,node-name=srcf,filename=${qemuOptValue(source ?? '')}`,
        '--blockdev',
        'driver=qcow2,node-name=src,file=srcf',
        '--blockdev',
        `driver=file,node-name=dstf,filename=${qemuOptValue(part)}`,
        '--blockdev',
        'driver=qcow2,node-name=dst,file=dstf',
      ],
    });
    await runBackupJob(daemon, disk.target, incremental ? plan.bitmap : undefined, opts);
    await daemon.stop();
    // Written by QEMU, checked before it can ever be taken for a backup.
    await runQemuImg(['check', '-q', '-f', 'qcow2', part], { signal });
    await fsyncPath(part);
    await fs.rename(part, file);
    await fsyncPath(path.dirname(file));
  } catch (e) {
    await daemon?.kill();
    await fs.rm(part, { force: true });
    if (signal?.aborted) throw signal.reason;
    throw e;
  } finally {
    await fs.rm(runDir, { recursive: true, force: true });
  }
  return { copiedBytes: await ownDataBytes(file, signal), file, status: 'copied' };
}

interface JobInfo {
  id: string;
  status: string;
  'current-progress': number;
  'total-progress': number;
  error?: string;
}

/** blockdev-backup src → dst, progress from query-jobs every 250 ms (or at once on a job event). */
async function runBackupJob(
  daemon: StorageDaemon,
  target: string,
  bitmap: string | undefined,
  opts: CopyOptions,
): Promise<void> {
  const { qmp } = daemon;
  let wake: (() => void) | undefined;
  const off = qmp.onEvent((e: QmpEvent) => {
    if (e.event === 'JOB_STATUS_CHANGE' && e.data?.id === JOB) wake?.();
  });
  try {
    await qmp.execute('blockdev-backup', {
      'job-id': JOB,
      device: 'src',
      target: 'dst',
      // bitmap-mode never: the scratch overlay's bitmap is left as it is (the copy can be redone).
      ...(bitmap ? { sync: 'bitmap', bitmap, 'bitmap-mode': 'never' } : { sync: 'full' }),
      'auto-dismiss': false,
      ...(opts.bandwidthBytesPerSec ? { speed: opts.bandwidthBytesPerSec } : {}),
    });
    for (;;) {
      const jobs = await qmp.execute<JobInfo[]>('query-jobs');
      const job = jobs.find((j) => j.id === JOB);
      if (!job) throw new BackupCopyError(target, 'the backup job vanished');
      opts.onProgress?.(job['current-progress'], job['total-progress']);
      if (job.status === 'concluded') {
        await qmp.execute('job-dismiss', { id: JOB });
        if (job.error !== undefined)
          throw new BackupCopyError(target, `the backup job failed: ${job.error}`, job.error);
        return;
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, POLL_MS);
        wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      wake = undefined;
    }
  } finally {
    off();
  }
}

/** Removes backup files and their leftover `.part` (idempotent). */
export async function discardBackupFiles(files: readonly string[]): Promise<void> {
  for (const f of files) {
    await fs.rm(f, { force: true });
    await fs.rm(`${f}.part`, { force: true });
  }
}
