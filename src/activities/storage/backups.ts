// The backup repository's activities on the storage role: it reads the storage domain's frozen images and
// writes the repository (src/backup holds the work; these wire it to Temporal: heartbeats, cancellation).
import { createHash } from 'node:crypto';
import path from 'node:path';
import fs from 'node:fs/promises';
import os from 'node:os';
import { Context } from '@temporalio/activity';
import { discardScratch, planDiskBackup } from '../../backup/changed-blocks';
import { copyDiskBackup, discardBackupFiles } from '../../backup/copy';
import { startNbdExports, stopNbdExports } from '../../backup/nbd-export';
import { pruneBackups } from '../../backup/prune';
import { validUuid } from '../../backup/paths';
import { diskFile, readCatalog, recordBackup, vmDir } from '../../backup/repository';
import { restoreBackupDisk } from '../../backup/restore';
import { listBitmaps } from '../../merge/cold/bitmaps';
import type { BackupActivities, BackupRef } from '../contracts';
import type { BackupProgressReport } from '../../common/backup-progress';
import { BACKUP_PROGRESS_SIGNAL, progressStep } from '../../common/backup-progress';
import { typed } from '../failures';
import type { StorageActivityDeps } from './deps';

const BITMAP_PREFIX = 'livemerge-';

/** A backup's scratch overlays (and, NBD mode, its export daemon's pid file): in the repository, or beside the storage domains. */
function workDir(deps: StorageActivityDeps, ref: BackupRef): string {
  return ref.repository
    ? path.join(vmDir(ref.repository, ref.vmId), '.work', ref.backupId)
    : path.join(deps.storageRoot, '.backup-exports', validUuid('backupId', ref.backupId));
}

/**
 * The export's unix socket: a short path of its own, since a socket path must be under 108 bytes (sun_path)
 * and the work directory's two UUIDs under any real storage root are longer. Derived from the backup's ids,
 * so a retried start finds the same one.
 */
export function nbdSocketPath(ref: BackupRef): string {
  const key = createHash('sha256').update(`${ref.vmId}/${ref.backupId}`).digest('hex').slice(0, 20);
  return path.join(os.tmpdir(), 'livemerge-nbd', `${key}.sock`);
}

export function createBackupActivities(deps: StorageActivityDeps): BackupActivities {
  const activities: BackupActivities = {
    /** Read-only. */
    readBackups: ({ repository, vmId }) => readCatalog(repository, vmId),

    /** Read-only. */
    backupBitmaps: async ({ disk }) => {
      const leaf = disk.chain[disk.chain.length - 1]!;
      return (await listBitmaps(leaf.path, leaf.format))
        .map((b) => b.name)
        .filter((n) => n.startsWith(BITMAP_PREFIX));
    },

    /** Idempotent: the scratch overlay is made afresh each time. */
    planBackupDisk: async (input) => {
      const dir = workDir(deps, input);
      await fs.mkdir(dir, { recursive: true });
      const ctx = activityContext();
      return await planDiskBackup(input.disk, {
        scratchDir: dir,
        ...(input.bitmap !== undefined ? { bitmap: input.bitmap } : {}),
        ...(input.reasonIfFull !== undefined ? { reasonIfFull: input.reasonIfFull } : {}),
        ...(ctx ? { signal: ctx.cancellationSignal } : {}),
      });
    },

    /** Idempotent: a final file exists only once complete (renamed from .part), and is then reported. */
    copyBackupDisk: async (input) => {
      const file = diskFile(input.repository, input.vmId, input.disk.imageId, input.backupId);
      await fs.mkdir(path.dirname(file), { recursive: true });
      const ctx = activityContext();
      const report = ctx ? progressReporter(ctx, input.disk.imageId) : undefined;
      const out = await copyDiskBackup(input.disk, input.plan, {
        file,
        ...(input.parentBackupId ? { parentFile: `${input.parentBackupId}.qcow2` } : {}),
        ...(input.bandwidthBytesPerSec ? { bandwidthBytesPerSec: input.bandwidthBytesPerSec } : {}),
        onProgress: (copied, total) => {
          ctx?.heartbeat({ copied, total });
          report?.(copied, total);
        },
        ...(ctx ? { signal: ctx.cancellationSignal } : {}),
      });
      await discardScratch(input.plan);
      return out;
    },

    /** Idempotent: a daemon still serving this backup's exports is reused. */
    startBackupExports: async (input) => {
      const dir = workDir(deps, input);
      await fs.mkdir(dir, { recursive: true });
      const socketPath = nbdSocketPath(input);
      await fs.mkdir(path.dirname(socketPath), { recursive: true, mode: 0o755 });
      const started = await startNbdExports({
        disks: input.disks.map((d) => ({ name: d.disk.target, disk: d.disk, plan: d.plan })),
        socketPath,
        pidFile: path.join(dir, 'nbd.pid'),
      });
      return {
        exports: started.exports.map((e) => ({
          target: e.name,
          uri: e.uri,
          ...(e.bitmap ? { bitmap: e.bitmap } : {}),
        })),
      };
    },

    /** Idempotent: no daemon, nothing to stop; the work directory and the socket go with it. */
    stopBackupExports: async (ref) => {
      const dir = workDir(deps, ref);
      await stopNbdExports(path.join(dir, 'nbd.pid'));
      await fs.rm(nbdSocketPath(ref), { force: true });
      await fs.rm(dir, { recursive: true, force: true });
    },

    /**
     * Idempotent: a record of that backup id already there is 'already-recorded'. The backup's work
     * directory (its copies' scratch overlays, removed by each copy) goes once it is recorded.
     */
    recordBackup: async ({ repository, vmId, record }) => {
      const status = await recordBackup(repository, vmId, record);
      await fs.rm(workDir(deps, { repository, vmId, backupId: record.backupId }), {
        recursive: true,
        force: true,
      });
      return { status };
    },

    /** Idempotent: files already gone are skipped. */
    discardBackup: async (input) => {
      await discardBackupFiles(
        input.imageIds.map((imageId) => diskFile(input.repository, input.vmId, imageId, input.backupId)),
      );
      await fs.rm(workDir(deps, input), { recursive: true, force: true });
    },

    /** Idempotent: a restored file already there is reported. */
    restoreBackupDisk: async (input) => ({ path: (await restoreBackupDisk(input)).path }),

    /** Idempotent: each step is recognised by the files' headers and the prune journal. */
    pruneBackups: (input) => pruneBackups(input),
  };
  // Every thrown primitive error becomes the failure type it means.
  return Object.fromEntries(
    Object.entries(activities).map(([name, fn]) => [
      name,
      typed(fn as (...a: unknown[]) => Promise<unknown>),
    ]),
  ) as unknown as BackupActivities;
}

/**
 * Copy progress to the workflow, a tenth at a time, best effort: a report that cannot be sent (Temporal
 * down) never holds the copy up; the workflow learns the end from the activity's result.
 */
function progressReporter(ctx: Context, imageId: string): (copied: number, total: number) => void {
  const wf = ctx.info.workflowExecution;
  let last = -1;
  let sending: Promise<void> = Promise.resolve();
  return (copied, total) => {
    const step = progressStep(copied, total);
    if (step === last || step === 10) return; // the last tenth is the result
    last = step;
    const report: BackupProgressReport = { imageId, copied, total };
    sending = sending.then(async () => {
      if (!wf) return; // not started by a workflow
      try {
        await ctx.client.workflow.getHandle(wf.workflowId, wf.runId).signal(BACKUP_PROGRESS_SIGNAL, report);
      } catch (err) {
        ctx.log.warn('copyBackupDisk: progress report not delivered', { error: String(err) });
      }
    });
  };
}

/** The running activity's context; none when called directly (a test). */
function activityContext(): Context | undefined {
  try {
    return Context.current();
  } catch {
    return undefined;
  }
}
