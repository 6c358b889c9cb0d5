import type { StorageActivities } from '../contracts';
import { nonRetryable } from '../failures';
import type { StorageActivityDeps } from './deps';
import { toVolumeInfo } from '../volume-info';
import { openDomain } from './deps';

/** Read-only. */
export function makeReadChain(deps: StorageActivityDeps): StorageActivities['readChain'] {
  return async ({ storageDomainId, imageId, leafVolumeId }) => {
    const sd = await openDomain(deps, storageDomainId);
    return (await sd.readChain(imageId, leafVolumeId)).map(toVolumeInfo);
  };
}

/** Idempotent: a volume already there with the same parent is the one a previous attempt created. */
export function makeCreateVolume(deps: StorageActivityDeps): StorageActivities['createVolume'] {
  return async (input) => {
    const sd = await openDomain(deps, input.storageDomainId);
    const existing = await sd.findVolume(input.imageId, input.volumeId);
    if (existing) {
      if (existing.parentId !== input.parentId)
        throw nonRetryable('InvalidRequest', `volume ${input.volumeId} exists with another parent`);
      return toVolumeInfo(existing);
    }
    const v = await sd.createVolume({
      imageId: input.imageId,
      parentId: input.parentId,
      volumeId: input.volumeId,
      ...(input.description !== undefined ? { description: input.description } : {}),
    });
    return toVolumeInfo(v);
  };
}

/** Idempotent: writes only when the id (or the description given) differs. */
export function makeSetSnapshotId(deps: StorageActivityDeps): StorageActivities['setSnapshotId'] {
  return async (input) => {
    const sd = await openDomain(deps, input.storageDomainId);
    const v = await sd.readVolume(input.imageId, input.volumeId);
    const description = input.description ?? v.description;
    if (v.snapshotId !== input.snapshotId || v.description !== description)
      await sd.updateVolume(input.imageId, input.volumeId, (m) => ({
        ...m,
        snapshotId: input.snapshotId,
        description,
      }));
  };
}
