import { deleteVolumeGuarded } from '../../storage/deletion-guard';
import type { StorageActivities } from '../contracts';
import { nonRetryable } from '../failures';
import type { StorageActivityDeps } from './deps';
import { openDomain } from './deps';

/**
 * Step 8. Idempotent: a volume already gone counts as deleted. Each deletion passes the guard (not in any
 * domain's live or persistent chain, no LEGAL child) and is refused for a volume still LEGAL.
 */
export function makeDeleteVolumes(deps: StorageActivityDeps): StorageActivities['deleteVolumes'] {
  return async (input) => {
    const sd = await openDomain(deps, input.storageDomainId);
    const deleted: string[] = [];
    const alreadyGone: string[] = [];
    for (const volumeId of input.volumeIds) {
      const v = await sd.findVolume(input.imageId, volumeId);
      if (v && v.legality === 'LEGAL')
        throw nonRetryable(
          'DeletionRefused',
          `volume ${volumeId} is LEGAL: only ILLEGAL volumes are deleted`,
        );
      const res = await deleteVolumeGuarded(
        { imageId: input.imageId, volumeId },
        { domain: sd, domainXmls: deps.domainXmls },
      );
      (res.deleted ? deleted : alreadyGone).push(volumeId);
    }
    return { deleted, alreadyGone };
  };
}

/** createSnapshot's compensation: new leaves nothing uses are made ILLEGAL, then deleted behind the guard. */
export function makeDiscardVolumes(deps: StorageActivityDeps): StorageActivities['discardVolumes'] {
  const del = makeDeleteVolumes(deps);
  return async (input) => {
    const sd = await openDomain(deps, input.storageDomainId);
    for (const volumeId of input.volumeIds) {
      const v = await sd.findVolume(input.imageId, volumeId);
      if (v && v.legality === 'LEGAL') await sd.setLegality(input.imageId, volumeId, 'ILLEGAL');
    }
    await del(input);
  };
}
