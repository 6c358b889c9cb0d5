// createSnapshot: a new leaf volume per disk; live, one atomic external disk-only snapshot of all disks.
import { CancellationScope, isCancellation, uuid4 } from '@temporalio/workflow';
import type { VolumeRef } from '../activities/contracts';
import { CreateSnapshotInput } from '../schemas/inputs';
import type { CreateSnapshotResult } from '../schemas/results';
import { hostActivities, storage, storageSettled } from './activities';
import { audit, inspectWholeVm, validated } from './common';
import { fail, failureType, parseInput } from './failures';
import { ProgressTracker } from './progress';

export type { CreateSnapshotResult };

export async function createSnapshot(raw: CreateSnapshotInput): Promise<CreateSnapshotResult> {
  const tracker = new ProgressTracker('createSnapshot');
  const input = validated(tracker, () => parseInput(CreateSnapshotInput, raw));
  // uuid4() is deterministic in a workflow: a replay or a retried activity reuses the same ids.
  const snapshotId = input.snapshotId ?? uuid4();
  tracker.vm(input.vmId);
  const inspected = await inspectWholeVm(tracker, input.vmId, input.hostId);
  const { vm, mode } = inspected;
  const located = { hostId: inspected.hostId };
  const host = hostActivities(located.hostId);

  const planned = vm.disks.map((d) => ({
    target: d.target,
    frozen: d.volume!,
    leaf: { ...d.volume!, volumeId: uuid4() },
  }));
  const created: VolumeRef[] = [];
  await audit('started', input.vmId, located.hostId, { snapshotId, mode });
  try {
    for (const p of planned) {
      // The frozen leaf gets the snapshot id only after the new leaf is in use.
      const { storageDomainId, imageId, volumeId } = p.frozen;
      const chain = await storage.readChain({ storageDomainId, imageId, leafVolumeId: volumeId });
      if (chain.some((v) => v.snapshotId === snapshotId && v.volumeId !== p.frozen.volumeId))
        fail('InvalidRequest', `snapshot ${snapshotId} already exists on image ${p.frozen.imageId}`);
    }
    tracker.stage('starting');
    const leaves = [];
    for (const p of planned) {
      const v = await storageSettled.createVolume({
        ...p.leaf,
        parentId: p.frozen.volumeId,
        description: `leaf after snapshot ${snapshotId}`,
      });
      created.push(p.leaf);
      leaves.push({ target: p.target, newLeafPath: v.path, newLeafFormat: v.format });
    }
    tracker.stage('pivoting');
    // A cancellation waits for the host's call to end: a leaf QEMU may be opening is never unlinked.
    if (mode === 'live') await host.settled.snapshotDisks({ vmId: input.vmId, disks: leaves });
    else
      await host.settled.setDiskSources({
        vmId: input.vmId,
        disks: leaves.map((l) => ({ target: l.target, path: l.newLeafPath, format: l.newLeafFormat })),
      });
  } catch (err) {
    await CancellationScope.nonCancellable(async () => {
      // Nothing uses the new leaves: remove them, the VM keeps its chain. (After a cancel, the snapshot
      // may have been taken: discarding is guarded and refuses leaves that are in use.)
      for (const v of created) await storage.discardVolumes({ ...v, volumeIds: [v.volumeId] });
      const cancelled = isCancellation(err);
      tracker.stage(cancelled ? 'cancelled' : 'failed');
      await audit(cancelled ? 'cancelled' : 'failed', input.vmId, located.hostId, {
        snapshotId,
        failureType: cancelled ? 'Cancelled' : (failureType(err) ?? 'Unknown'),
        message: err instanceof Error ? err.message : String(err),
      });
    });
    throw err;
  }
  // The VM uses the new leaves: the snapshot exists, whatever cancellation came meanwhile.
  return await CancellationScope.nonCancellable(async () => {
    tracker.stage('recording');
    for (const p of planned)
      await storage.setSnapshotId({
        ...p.frozen,
        snapshotId,
        ...(input.description !== undefined ? { description: input.description } : {}),
      });
    tracker.stage('done');
    const result: CreateSnapshotResult = {
      vmId: input.vmId,
      snapshotId,
      hostId: located.hostId,
      mode,
      disks: planned.map((p) => ({
        target: p.target,
        storageDomainId: p.frozen.storageDomainId,
        imageId: p.frozen.imageId,
        frozenVolumeId: p.frozen.volumeId,
        leafVolumeId: p.leaf.volumeId,
      })),
    };
    await audit('completed', input.vmId, located.hostId, { ...result });
    return result;
  });
}
