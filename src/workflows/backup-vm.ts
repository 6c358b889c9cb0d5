// backupVm: DESIGN "Backups" — checkpoint, snapshot, changed blocks, copy (or NBD export), merge, record.
// Until the record is written nothing is a backup: any failure before it merges the snapshot back,
// deletes the files, removes this backup's bitmap and records nothing, so the next backup is again
// relative to the last recorded one.
import {
  CancellationScope,
  condition,
  executeChild,
  isCancellation,
  setHandler,
  uuid4,
} from '@temporalio/workflow';
import type { BackupRecord, DescribeVmResult, DiskBackupPlan, FrozenDisk } from '../activities/contracts';
import { BackupVmInput } from '../schemas/inputs';
import type { BackupProgress } from '../schemas/progress';
import type { BackupDisk, BackupVmResult } from '../schemas/results';
import { backupCopies, backups, hostActivities, storage } from './activities';
import { audit, inspectWholeVm, validated } from './common';
import { createSnapshot } from './create-snapshot';
import { fail, failureType, parseInput } from './failures';
import { ProgressTracker, childSearchAttributes, progressQuery } from './progress';
import { removeSnapshot } from './remove-snapshot';
import { backupDoneSignal, backupProgressSignal } from './signals';
import { acquireVmLock, inheritVmLock } from './vm-lock';

export type { BackupVmResult };

type ParsedInput = ReturnType<typeof BackupVmInput.parse>;
type DiskProgress = BackupProgress['disks'][number];

/** What the backup's query and signal handlers share with its steps. */
interface BackupState {
  tracker: ProgressTracker;
  progress: DiskProgress[];
  served: NonNullable<BackupProgress['exports']>;
  /** Per disk (imageId) being copied: when its copy started (rate and ETA of its progress reports). */
  copyStarted: Map<string, number>;
  appDone: () => boolean;
}

/** A backup's bitmap: it records every write after the checkpoint, until a later backup is recorded. */
export const backupBitmap = (backupId: string): string => `livemerge-${backupId}`;
const BITMAP_PREFIX = 'livemerge-';

export async function backupVm(raw: BackupVmInput): Promise<BackupVmResult> {
  const tracker = new ProgressTracker('backupVm', undefined, false);
  const disks: DiskProgress[] = [];
  const served: NonNullable<BackupProgress['exports']> = [];
  setHandler(progressQuery, (): BackupProgress => ({
    ...tracker.state,
    disks,
    exports: served,
  }));
  const copyStarted = new Map<string, number>();
  setHandler(backupProgressSignal, ({ imageId, copied, total }) => {
    const d = disks.find((x) => x.imageId === imageId);
    const since = copyStarted.get(imageId);
    if (!d || since === undefined || copied < d.copiedBytes) return; // stale, or not copying
    d.copiedBytes = copied;
    const secs = (Date.now() - since) / 1000;
    d.bytesPerSecond = secs > 0 ? Math.round(copied / secs) : null;
    d.etaSeconds = d.bytesPerSecond ? Math.round((total - copied) / d.bytesPerSecond) : null;
  });
  let appDone = false;
  setHandler(backupDoneSignal, () => {
    appDone = true;
  });

  const input = validated(tracker, () => parseInput(BackupVmInput, raw));
  // uuid4() is deterministic in a workflow: a replay reuses the same id.
  const backupId = input.backupId ?? uuid4();
  tracker.vm(input.vmId);
  const { hostId, mode, vm } = await inspectWholeVm(tracker, input.vmId, input.hostId);
  if (input.quiesce)
    fail(
      'GuestAgentUnavailable',
      `VM ${input.vmId}: a quiesced backup needs the guest agent, and livemerge does not talk to guest agents yet`,
    );

  const lock = await acquireVmLock(input.vmId);
  try {
    return await backupLocked(input, backupId, hostId, mode, vm, {
      tracker,
      progress: disks,
      served,
      copyStarted,
      appDone: () => appDone,
    });
  } finally {
    await CancellationScope.nonCancellable(() => lock.release());
  }
}

async function backupLocked(
  input: ParsedInput,
  backupId: string,
  hostId: string,
  mode: 'live' | 'cold',
  vm: DescribeVmResult,
  { tracker, progress, served, copyStarted, appDone }: BackupState,
): Promise<BackupVmResult> {
  const host = hostActivities(hostId);
  const ref = { repository: input.repository ?? '', vmId: input.vmId, backupId };
  const bitmap = backupBitmap(backupId);
  const leaves = [];
  for (const d of vm.disks) {
    const { storageDomainId, imageId, volumeId } = d.volume!;
    const chain = await storage.readChain({ storageDomainId, imageId, leafVolumeId: volumeId });
    leaves.push({ target: d.target, imageId, leafFormat: chain[chain.length - 1]?.format ?? 'raw' });
  }
  const catalog = input.repository
    ? await backups.readBackups({ ...ref, repository: input.repository })
    : null;
  const parent = catalog?.backups[catalog.backups.length - 1] ?? null;
  await audit('started', input.vmId, hostId, {
    backupId,
    mode,
    repository: input.repository,
    parent: parent?.backupId ?? null,
  });

  let bitmapAdded = false;
  let snapshotTaken = false;
  let mergedBack = false;
  const touched: string[] = [];
  let exporting = false;
  let recorded:
    | { record: BackupRecord; results: BackupDisk[]; nbdExports: BackupVmResult['exports']; older: string[] }
    | undefined;
  try {
    // 1. Checkpoint: before the snapshot, so the next incremental is a superset. A raw leaf cannot hold one.
    tracker.stage('starting');
    const targets = leaves.filter((l) => l.leafFormat === 'qcow2').map((l) => l.target);
    await host.short.addBackupBitmap({ vmId: input.vmId, bitmap, targets });
    bitmapAdded = true;

    // 2. Snapshot: its id is the backup's.
    const snap = await executeChild(createSnapshot, {
      workflowId: `create-snapshot:${input.vmId}:${backupId}`,
      args: [{ vmId: input.vmId, snapshotId: backupId, hostId, description: `backup ${backupId}` }],
      ...inheritVmLock(input.vmId),
      ...childSearchAttributes(input.vmId, hostId),
    });
    snapshotTaken = true;

    // 3. Changed blocks, per disk, from the frozen chain.
    const frozen: FrozenDisk[] = [];
    for (const d of snap.disks) {
      const chain = await storage.readChain({
        storageDomainId: d.storageDomainId,
        imageId: d.imageId,
        leafVolumeId: d.frozenVolumeId,
      });
      frozen.push({
        target: d.target,
        imageId: d.imageId,
        chain: chain.map((v) => ({ path: v.path, format: v.format })),
        capacity: chain[chain.length - 1]!.capacity,
      });
    }
    tracker.stage('copying');
    const plans: DiskBackupPlan[] = [];
    for (const disk of frozen) {
      const parentBitmap = await parentBitmapOf(input, disk, parent, bitmap);
      touched.push(disk.imageId);
      const plan = await backups.planBackupDisk({ ...ref, disk, ...parentBitmap });
      plans.push(plan);
      progress.push({
        target: disk.target,
        imageId: disk.imageId,
        mode: plan.mode,
        changedBytes: plan.changedBytes,
        copiedBytes: 0,
        bytesPerSecond: null,
        etaSeconds: null,
      });
    }
    tracker.bytes(0, sum(plans.map((p) => p.changedBytes)));
    // Read while the frozen images are read-only (their bitmap directories current): every earlier
    // backup's bitmap, removed once this backup is recorded.
    const older = await olderBitmaps(frozen, bitmap);

    // 4. Copy into the repository, or export for a backup application until it is done.
    let results: BackupDisk[];
    // Not `exports`: compiled to CommonJS, that name would shadow the module's own exports object.
    let nbdExports: BackupVmResult['exports'] = [];
    if (input.repository) {
      const started = Date.now();
      const copied = await Promise.all(
        frozen.map(async (disk, i) => {
          const plan = plans[i]!;
          copyStarted.set(disk.imageId, Date.now());
          const c = await backupCopies.copyBackupDisk({
            ...ref,
            disk,
            plan,
            ...(plan.mode === 'incremental' && parent ? { parentBackupId: parent.backupId } : {}),
            ...(input.bandwidthBytesPerSec ? { bandwidthBytesPerSec: input.bandwidthBytesPerSec } : {}),
          });
          copyStarted.delete(disk.imageId);
          const p = progress[i]!;
          p.copiedBytes = c.copiedBytes;
          const secs = (Date.now() - started) / 1000;
          p.bytesPerSecond = secs > 0 ? Math.round(plan.changedBytes / secs) : null;
          p.etaSeconds = 0;
          return c;
        }),
      );
      tracker.bytes(sum(copied.map((c) => c.copiedBytes)), tracker.state.end);
      results = frozen.map((disk, i) => diskResult(disk, plans[i]!, copied[i]!));
    } else {
      exporting = true;
      const started = await backups.startBackupExports({
        ...ref,
        disks: frozen.map((disk, i) => ({ disk, plan: plans[i]! })),
      });
      nbdExports = started.exports;
      served.push(...nbdExports);
      tracker.stage('ready');
      const done = await condition(appDone, input.exportTimeoutSeconds * 1000);
      if (!done)
        fail(
          'BackupTimedOut',
          `backup ${backupId}: no backupDone within ${input.exportTimeoutSeconds} s: the exports were stopped`,
        );
      await backups.stopBackupExports(ref);
      exporting = false;
      served.length = 0;
      results = frozen.map((disk, i) => diskResult(disk, plans[i]!, { copiedBytes: 0, file: '' }));
    }

    // 5. Merge: the chain is back to its length.
    tracker.stage('recording');
    await mergeBack(input.vmId, backupId, hostId);
    mergedBack = true;

    // 6. Record: only now is it a backup, and the parent of the next incremental.
    const record: BackupRecord = {
      backupId,
      createdAt: new Date().toISOString(),
      parentBackupId: parentIdOf(plans),
      disks: results,
    };
    // Not cancellable: a cancel must not leave a record whose files the compensation then deletes.
    if (input.repository) {
      const repository = input.repository;
      await CancellationScope.nonCancellable(() =>
        backups.recordBackup({ repository, vmId: input.vmId, record }),
      );
    }
    recorded = { record, results, nbdExports, older };
  } catch (err) {
    await CancellationScope.nonCancellable(async () => {
      const notes: string[] = [];
      const attempt = async (what: string, fn: () => Promise<unknown>): Promise<void> => {
        try {
          await fn();
        } catch (e) {
          notes.push(`${what}: ${e instanceof Error ? e.message : String(e)}`);
        }
      };
      if (exporting) await attempt('stop the exports', () => backups.stopBackupExports(ref));
      // The snapshot is merged back; a VM that crashed keeps it for a later removeSnapshot (live or cold).
      if (snapshotTaken && !mergedBack)
        await attempt('merge the snapshot back', () => mergeBack(input.vmId, backupId, hostId));
      if (input.repository && touched.length > 0)
        await attempt('delete the files', () =>
          backups.discardBackup({ ...ref, repository: input.repository!, imageIds: touched }),
        );
      if (bitmapAdded)
        await attempt("remove the backup's bitmap", () =>
          host.short.removeBackupBitmaps({ vmId: input.vmId, bitmaps: [bitmap] }),
        );
      const cancelled = isCancellation(err);
      tracker.stage(cancelled ? 'cancelled' : 'failed');
      await audit(cancelled ? 'cancelled' : 'failed', input.vmId, hostId, {
        backupId,
        failureType: cancelled ? 'Cancelled' : (failureType(err) ?? 'Unknown'),
        message: err instanceof Error ? err.message : String(err),
        ...(notes.length > 0 ? { compensation: notes } : {}),
      });
    });
    throw err;
  }
  // Recorded: it is a backup, whatever comes now (a cancel, a bitmap that cannot be removed).
  const { record, results, nbdExports, older } = recorded;
  return await CancellationScope.nonCancellable(async () => {
    let leftBitmaps: string | undefined;
    try {
      if (older.length > 0) await host.short.removeBackupBitmaps({ vmId: input.vmId, bitmaps: older });
    } catch (err) {
      // Harmless but for the space and a little write cost: a later backup removes them again.
      leftBitmaps = err instanceof Error ? err.message : String(err);
    }
    tracker.stage('done');
    const result: BackupVmResult = {
      vmId: input.vmId,
      backupId,
      hostId,
      mode,
      repository: input.repository,
      parentBackupId: record.parentBackupId,
      disks: results,
      exports: nbdExports,
    };
    await audit('completed', input.vmId, hostId, {
      ...result,
      ...(leftBitmaps ? { olderBitmapsLeft: leftBitmaps } : {}),
    });
    return result;
  });
}

/** Which bitmap holds this disk's changes since its parent backup, or why the disk is backed up in full. */
async function parentBitmapOf(
  input: ParsedInput,
  disk: FrozenDisk,
  parent: BackupRecord | null,
  own: string,
): Promise<{ bitmap?: string; reasonIfFull?: string }> {
  if (input.mode === 'full') return { reasonIfFull: 'a full backup was asked for' };
  if (input.repository === null) {
    // NBD mode keeps no record: the parent is the newest earlier backup bitmap the disk carries.
    const names = (await backups.backupBitmaps({ disk })).filter((b) => b !== own);
    const newest = names[names.length - 1];
    return newest ? { bitmap: newest } : { reasonIfFull: 'no earlier backup bitmap on this disk' };
  }
  if (!parent) return { reasonIfFull: 'no earlier backup of this VM' };
  if (!parent.disks.some((d) => d.imageId === disk.imageId))
    return { reasonIfFull: `the last backup (${parent.backupId}) has no copy of this disk` };
  return { bitmap: backupBitmap(parent.backupId) };
}

/** The bitmaps of earlier backups on the frozen images: no later incremental is relative to them. */
async function olderBitmaps(frozen: FrozenDisk[], own: string): Promise<string[]> {
  const names = new Set<string>();
  for (const disk of frozen)
    for (const b of await backups.backupBitmaps({ disk })) if (b !== own) names.add(b);
  return [...names];
}

/** The backup the incremental disks are relative to (their bitmap is `livemerge-<id>`). */
function parentIdOf(plans: DiskBackupPlan[]): string | null {
  const b = plans.find((p) => p.mode === 'incremental')?.bitmap;
  return b?.startsWith(BITMAP_PREFIX) ? b.slice(BITMAP_PREFIX.length) : null;
}

async function mergeBack(vmId: string, backupId: string, hostId: string): Promise<void> {
  await executeChild(removeSnapshot, {
    workflowId: `remove-snapshot:${vmId}:${backupId}`,
    args: [{ vmId, snapshotId: backupId, hostId }],
    ...inheritVmLock(vmId),
    ...childSearchAttributes(vmId, hostId),
  });
}

function diskResult(
  disk: FrozenDisk,
  plan: DiskBackupPlan,
  copied: { copiedBytes: number; file: string },
): BackupDisk {
  return {
    target: disk.target,
    imageId: disk.imageId,
    mode: plan.mode,
    ...(plan.reason !== undefined ? { reason: plan.reason } : {}),
    changedBytes: plan.changedBytes,
    copiedBytes: copied.copiedBytes,
    extents: plan.extents.length,
    file: copied.file,
    capacity: disk.capacity,
  };
}

const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);
