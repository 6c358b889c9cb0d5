// removeSnapshot: one mergeDisk child per disk that holds the snapshot, all in parallel.
import {
  CancellationScope,
  CancelledFailure,
  ParentClosePolicy,
  isCancellation,
  patched,
  setHandler,
  startChild,
} from '@temporalio/workflow';
import type { DescribeVmResult, VmDisk, VolumeInfo } from '../activities/contracts';
import { RemoveSnapshotInput } from '../schemas/inputs';
import type { Progress, RemoveSnapshotProgress } from '../schemas/progress';
import { FailureType, stageRank } from '../schemas/progress';
import type { RemoveSnapshotResult } from '../schemas/results';
import { storage } from './activities';
import { audit, locateAndDescribe, validated } from './common';
import { fail, failureType, parseInput } from './failures';
import { lean, leanV2, leanV3 } from './lean';
import { mergeDisk } from './merge-disk';
import { MergeMetric } from './metrics';
import { ProgressTracker, childSearchAttributes, initialProgress, progressQuery } from './progress';
import { diskHostStageSignal, diskProgressSignal } from './signals';
import { VM_LOCK_PATCH, inheritVmLock, startVmLock, withVmLock } from './vm-lock';

export type { RemoveSnapshotResult };

type DiskProgress = RemoveSnapshotProgress['disks'][number];

export async function removeSnapshot(raw: RemoveSnapshotInput): Promise<RemoveSnapshotResult> {
  const metric = new MergeMetric();
  return await metric.around(() => removeSnapshotOf(raw, metric));
}

async function removeSnapshotOf(
  raw: RemoveSnapshotInput,
  metric: MergeMetric,
): Promise<RemoveSnapshotResult> {
  const tracker = new ProgressTracker('removeSnapshot', undefined, false);
  const disks: DiskProgress[] = [];
  setHandler(progressQuery, () => aggregate(tracker.state, disks));
  setHandler(diskProgressSignal, ({ imageId, target, progress }) => {
    const d = disks.find((x) => x.imageId === imageId);
    if (d) Object.assign(d, progress, { imageId, target: target || d.target });
  });
  // Lean histories: a live merge's host unit reports its stages here directly; they only move forward.
  setHandler(diskHostStageSignal, ({ imageId, stage, cur, end }) => {
    const d = disks.find((x) => x.imageId === imageId);
    if (!d || stageRank(stage) <= stageRank(d.stage)) return;
    Object.assign(d, { stage, cur, end, mode: 'live' });
  });

  const input = validated(tracker, () => parseInput(RemoveSnapshotInput, raw));
  tracker.vm(input.vmId);
  metric.labels.direction = input.direction;
  tracker.stage('inspecting');
  // Lean v3: the lock first, then one probe finds the VM, describes it and reads its chains, all under it.
  if (leanV3())
    return await withVmLock(input.vmId, tracker, async () => {
      const found = await locateAndDescribe(input.vmId, input.hostId, (l) => tracker.host(l.hostId), true);
      const merges = await mergesOf(input, found.vm, metric, (disk) => disk.chain);
      return await mergeAll(
        input,
        found.located.hostId,
        merges,
        disks,
        tracker,
        metric,
        inheritVmLock(input.vmId),
      );
    });
  // Lean v2: the lock is taken while the VM is located (a read: its refusal still comes before any change),
  // and the chains are read under it.
  const taking = leanV2() ? startVmLock(input.vmId) : undefined;
  const { located, vm } = await locateAndDescribe(input.vmId, input.hostId, (l) => tracker.host(l.hostId));
  const merges = await mergesOf(input, vm, metric, undefined);

  // One snapshot removal, merge or backup per VM at a time; its merges run under its lock.
  if (!lean() && !patched(VM_LOCK_PATCH))
    return await mergeAll(input, located.hostId, merges, disks, tracker, metric);
  return await withVmLock(
    input.vmId,
    tracker,
    () => mergeAll(input, located.hostId, merges, disks, tracker, metric, inheritVmLock(input.vmId)),
    taking,
  );
}

/**
 * For each disk in a storage domain: the volume frozen by the snapshot and its child. The chain comes
 * with the disk (v3) or is read from storage.
 */
async function mergesOf(
  input: ParsedInput,
  vm: DescribeVmResult,
  metric: MergeMetric,
  given: ((disk: VmDisk) => VolumeInfo[] | undefined) | undefined,
): Promise<Merge[]> {
  const merges: Merge[] = [];
  for (const disk of vm.disks) {
    if (!disk.volume) continue;
    const { storageDomainId, imageId, volumeId } = disk.volume;
    const chain =
      given?.(disk) ?? (await storage.readChain({ storageDomainId, imageId, leafVolumeId: volumeId }));
    const base = chain.find((v) => v.snapshotId === input.snapshotId);
    if (!base) continue;
    const top = chain.find((v) => v.parentId === base.volumeId);
    if (!top) fail('ChainMismatch', `volume ${base.volumeId} of snapshot ${input.snapshotId} has no child`);
    merges.push({ target: disk.target, chain, base, top });
    // The snapshot's child is the disk's leaf: the disks' active layer is merged (all disks alike).
    metric.labels.kind = top.volumeId === volumeId ? 'active' : 'intermediate';
  }
  if (merges.length === 0)
    fail('SnapshotNotFound', `no disk of VM ${input.vmId} has a volume of snapshot ${input.snapshotId}`);
  return merges;
}

type ParsedInput = ReturnType<typeof RemoveSnapshotInput.parse>;
type Merge = { target: string; chain: VolumeInfo[]; base: VolumeInfo; top: VolumeInfo };

async function mergeAll(
  input: ParsedInput,
  hostId: string,
  merges: Merge[],
  disks: DiskProgress[],
  tracker: ProgressTracker,
  metric: MergeMetric,
  childOptions: { memo?: Record<string, unknown> } = {},
): Promise<RemoveSnapshotResult> {
  const located = { hostId };
  for (const m of merges)
    disks.push({
      ...initialProgress(),
      stage: 'inspecting',
      hostId,
      imageId: m.base.imageId,
      target: m.target,
    });
  await audit('started', input.vmId, located.hostId, { input, disks: merges.map((m) => m.target) });

  const outcomes = await Promise.allSettled(
    merges.map(async (m) => {
      const child = await startChild(mergeDisk, {
        workflowId: `merge-disk:${input.vmId}:${m.base.imageId}`,
        // A merge already running on this disk makes the start fail (child ids never attach): its
        // request may differ from ours.
        parentClosePolicy: ParentClosePolicy.REQUEST_CANCEL,
        ...childOptions,
        ...childSearchAttributes(input.vmId, hostId),
        args: [
          {
            vmId: input.vmId,
            storageDomainId: m.base.storageDomainId,
            imageId: m.base.imageId,
            baseVolumeId: m.base.volumeId,
            topVolumeId: m.top.volumeId,
            direction: input.direction,
            hostId: located.hostId,
            ...(input.bandwidthBytesPerSec ? { bandwidthBytesPerSec: input.bandwidthBytesPerSec } : {}),
          },
        ],
      });
      const merged = await child.result();
      metric.labels.mode = merged.mode;
      return merged;
    }),
  );

  // Each disk's outcome is its child's (a child tells its parent only the stages it shows while running).
  outcomes.forEach((o, i) => {
    const d = disks[i]!;
    if (o.status === 'fulfilled')
      Object.assign(d, {
        stage: 'done',
        mode: o.value.mode,
        cur: d.end,
        etaSeconds: 0,
        removedVolumeIds: o.value.removedVolumeIds,
      });
    else d.stage = isCancellation(o.reason) ? 'cancelled' : 'failed';
  });
  // What is merged is merged: the rest of the bookkeeping runs even when a cancel came in meanwhile.
  return await CancellationScope.nonCancellable(() =>
    conclude(input, located.hostId, merges, outcomes, tracker),
  );
}

async function conclude(
  input: ReturnType<typeof RemoveSnapshotInput.parse>,
  hostId: string,
  merges: Array<{ target: string; base: VolumeInfo }>,
  outcomes: Array<PromiseSettledResult<{ removedVolumeIds: string[] }>>,
  tracker: ProgressTracker,
): Promise<RemoveSnapshotResult> {
  const located = { hostId };
  const removed = outcomes.flatMap((o) => (o.status === 'fulfilled' ? o.value.removedVolumeIds : []));
  tracker.removed(removed);
  const result: RemoveSnapshotResult = {
    vmId: input.vmId,
    snapshotId: input.snapshotId,
    hostId,
    removedVolumeIds: removed,
    disks: merges.map((m, i) => {
      const o = outcomes[i]!;
      return o.status === 'fulfilled'
        ? { target: m.target, imageId: m.base.imageId, status: 'merged' as const }
        : {
            target: m.target,
            imageId: m.base.imageId,
            status: 'failed' as const,
            failureType: childFailureType(o.reason),
            message: o.reason instanceof Error ? o.reason.message : String(o.reason),
          };
    }),
  };
  const failed = result.disks.filter((d) => d.status === 'failed');
  if (failed.some((d) => d.failureType === 'Cancelled')) {
    tracker.stage('cancelled');
    await audit('cancelled', input.vmId, located.hostId, { ...result });
    throw new CancelledFailure(`removal of snapshot ${input.snapshotId} cancelled`, [result]);
  }
  if (failed.length > 0) {
    tracker.stage('failed');
    await audit('failed', input.vmId, located.hostId, { ...result });
    // One disk's cause names the failure when it is the only one (e.g. VmCrashed); the snapshot stays
    // with the disks that are not merged.
    const types = [...new Set(failed.map((d) => d.failureType))];
    const single = types.length === 1 ? FailureType.safeParse(types[0]) : undefined;
    fail(
      single?.success ? single.data : 'PartialFailure',
      `snapshot ${input.snapshotId}: ${failed.length} of ${result.disks.length} disk(s) not merged: ` +
        failed.map((d) => `${d.target} (${d.failureType}: ${d.message})`).join('; '),
      result,
    );
  }
  tracker.stage('done');
  await audit('completed', input.vmId, located.hostId, { ...result });
  return result;
}

/** A disk's failure cause; a merge already running on the disk makes the child's start fail. */
function childFailureType(reason: unknown): string {
  if (isCancellation(reason)) return 'Cancelled';
  if (reason instanceof Error && reason.name === 'WorkflowExecutionAlreadyStartedError')
    return 'MergeInProgress';
  return failureType(reason) ?? 'Unknown';
}

function aggregate(own: Progress, disks: DiskProgress[]): RemoveSnapshotProgress {
  if (disks.length === 0) return { ...own, disks };
  // The least advanced disk speaks for the whole snapshot until the snapshot's own outcome is known.
  const least = disks.reduce((a, b) => (stageRank(b.stage) < stageRank(a.stage) ? b : a));
  const cur = disks.reduce((s, d) => s + d.cur, 0);
  const end = disks.reduce((s, d) => s + d.end, 0);
  const finished = ['done', 'failed', 'cancelled'].includes(own.stage);
  return { ...own, stage: finished ? own.stage : least.stage, mode: least.mode, cur, end, disks };
}
