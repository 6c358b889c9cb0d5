import type { RecordMergeInput, StorageActivities } from '../contracts';
import { nonRetryable } from '../failures';
import { noBreakpoint } from '../breakpoints';
import { makeDeleteVolumes } from './delete-volumes';
import type { StorageActivityDeps } from './deps';
import { openDomain } from './deps';

/**
 * Step 7. Idempotent: each change is made only where the metadata does not show it yet, so a retry
 * after a crash midway finishes the rest. Order: the merged-away volumes turn ILLEGAL first (their
 * data is no longer valid on its own), then the survivor is re-parented, then snapshot ids move.
 */
export function makeRecordMerge(deps: StorageActivityDeps): StorageActivities['recordMerge'] {
  return async (input) => {
    const sd = await openDomain(deps, input.storageDomainId);
    const { imageId } = input;
    for (const id of input.removedVolumeIds) {
      const v = await sd.readVolume(imageId, id);
      if (v.legality !== 'ILLEGAL') await sd.setLegality(imageId, id, 'ILLEGAL');
    }
    if (input.direction === 'backward') {
      if (input.childOfTopId) {
        const child = await sd.readVolume(imageId, input.childOfTopId);
        if (child.parentId !== input.baseVolumeId)
          await sd.reparent(imageId, input.childOfTopId, input.baseVolumeId);
      }
      // The base now holds top's data, so it stands for whatever snapshot top stood for (none if top was the leaf).
      const top = await sd.readVolume(imageId, input.topVolumeId);
      const base = await sd.readVolume(imageId, input.baseVolumeId);
      if (base.snapshotId !== top.snapshotId)
        await sd.setSnapshotId(imageId, input.baseVolumeId, top.snapshotId);
    } else {
      // Forward: top now holds the pulled data and backs onto base's old parent.
      const base = await sd.readVolume(imageId, input.baseVolumeId);
      const top = await sd.readVolume(imageId, input.topVolumeId);
      if (top.parentId !== base.parentId) await sd.reparent(imageId, input.topVolumeId, base.parentId);
    }
  };
}

/**
 * Steps 7 and 8 as one task: nothing happens between them that a crash could leave half done which
 * the two alone would not. Idempotent: a merged-away volume already gone means the deletion began, which
 * only follows a finished record, so a retry then only deletes the rest (the remaining ones must be
 * ILLEGAL, as the record left them, or it refuses); otherwise each step redoes only what is not done.
 * The breakpoints carry the two steps' names, so a harness stops before either as before.
 */
export function makeRecordAndDelete(deps: StorageActivityDeps): StorageActivities['recordAndDelete'] {
  const record = makeRecordMerge(deps);
  const del = makeDeleteVolumes(deps);
  const breakpoint = deps.breakpoint ?? noBreakpoint;
  return async (input) => {
    await breakpoint('recordMerge');
    if (!(await deletionBegun(deps, input))) await record(input);
    await breakpoint('deleteVolumes');
    return await del({
      storageDomainId: input.storageDomainId,
      imageId: input.imageId,
      volumeIds: input.removedVolumeIds,
    });
  };
}

/** Whether a merged-away volume is gone (the record is then done); refuses a state no record leaves. */
async function deletionBegun(deps: StorageActivityDeps, input: RecordMergeInput): Promise<boolean> {
  const sd = await openDomain(deps, input.storageDomainId);
  const removed = await Promise.all(input.removedVolumeIds.map((id) => sd.findVolume(input.imageId, id)));
  if (!removed.includes(null)) return false;
  const legal = removed.filter((v) => v?.legality === 'LEGAL').map((v) => v?.volumeId);
  if (legal.length > 0)
    throw nonRetryable(
      'DeletionRefused',
      `image ${input.imageId}: merged volumes are partly gone but ${legal.join(', ')} still LEGAL: not what a recorded merge leaves`,
    );
  return true;
}
