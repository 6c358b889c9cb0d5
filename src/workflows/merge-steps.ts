// The steps of mergeDisk that every version of it takes the same way (merge-disk.ts, and merge-disk-v1.ts
// for histories of earlier builds): the same commands in the same order, so both replay.
import type { JobRef, MergePlan, MergePlanInput, RecordMergeInput } from '../activities/contracts';
import type { MergeDiskInput } from '../schemas/inputs';
import type { hostActivities } from './activities';
import { storage } from './activities';
import type { ProgressTracker } from './progress';

export type ParsedMergeDiskInput = ReturnType<typeof MergeDiskInput.parse>;
type Host = ReturnType<typeof hostActivities>;

export function planInput(input: ParsedMergeDiskInput): MergePlanInput {
  return {
    vmId: input.vmId,
    storageDomainId: input.storageDomainId,
    imageId: input.imageId,
    baseVolumeId: input.baseVolumeId,
    topVolumeId: input.topVolumeId,
    direction: input.direction,
  };
}

/** What a merge's audit events say about it. */
export function summaryOf(input: ParsedMergeDiskInput, plan: MergePlan) {
  return { input, mode: plan.mode, removedVolumeIds: plan.removedVolumeIds, diskTarget: plan.diskTarget };
}

export function jobOf(input: ParsedMergeDiskInput, plan: MergePlan): JobRef {
  return {
    vmId: input.vmId,
    diskTarget: plan.diskTarget,
    jobKind: plan.jobKind,
    basePath: plan.basePath,
    topPath: plan.topPath,
    removedPaths: plan.chain.filter((v) => plan.removedVolumeIds.includes(v.volumeId)).map((v) => v.path),
  };
}

/** The disk's leaf once merged: base after committing the active leaf, else the leaf it has. */
export function newLeafPath(input: ParsedMergeDiskInput, plan: MergePlan): string {
  const leaf = plan.chain[plan.chain.length - 1]!;
  return input.direction === 'backward' && plan.topIsLeaf ? plan.basePath : leaf.path;
}

/** A cold merge that took the leaf's place: the shut-off VM's definition now names the new leaf. */
export async function pointDefinitionAtNewLeaf(input: ParsedMergeDiskInput, plan: MergePlan, host: Host) {
  const path = newLeafPath(input, plan);
  if (path === plan.chain[plan.chain.length - 1]!.path) return;
  const base = plan.chain.find((v) => v.volumeId === input.baseVolumeId)!;
  await host.short.setDiskSources({
    vmId: input.vmId,
    disks: [{ target: plan.diskTarget, path, format: base.format }],
  });
}

/** Steps 7 and 8: record the merge in the metadata, then delete the merged volumes behind the guard. */
export async function recordAndDelete(
  input: ParsedMergeDiskInput,
  plan: MergePlan,
  tracker: ProgressTracker,
  inOneTask = false,
): Promise<void> {
  tracker.stage('recording');
  const recorded: RecordMergeInput = {
    storageDomainId: input.storageDomainId,
    imageId: input.imageId,
    direction: input.direction,
    baseVolumeId: input.baseVolumeId,
    topVolumeId: input.topVolumeId,
    removedVolumeIds: plan.removedVolumeIds,
    childOfTopId: plan.childOfTopId,
  };
  // Lean v3: one storage task for both (the `deleting` stage is then inside it, not shown on its own).
  if (inOneTask) {
    await storage.recordAndDelete(recorded);
  } else {
    await storage.recordMerge(recorded);
    tracker.stage('deleting');
    await storage.deleteVolumes({
      storageDomainId: input.storageDomainId,
      imageId: input.imageId,
      volumeIds: plan.removedVolumeIds,
    });
  }
  tracker.removed(plan.removedVolumeIds);
  tracker.bytes(plan.capacity, plan.capacity);
}
