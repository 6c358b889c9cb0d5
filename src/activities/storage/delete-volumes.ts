import { assertDeletable, deleteVolumeGuarded } from '../../guard/deletion-guard';
import { DeletionRefused } from '../../storage/errors';
import type { StorageActivities } from '../contracts';
import { noBreakpoint } from '../breakpoints';
import { nonRetryable } from '../failures';
import type { StorageActivityDeps } from './deps';
import { openDomain } from './deps';

/**
 * Step 8. Idempotent: a volume already gone counts as deleted. Each deletion passes the guard (not in any
 * domain's live or persistent chain, no LEGAL child) and is refused for a volume still LEGAL.
 */
export function makeDeleteVolumes(deps: StorageActivityDeps): StorageActivities['deleteVolumes'] {
  const breakpoint = deps.breakpoint ?? noBreakpoint;
  return async (input) => {
    const sd = await openDomain(deps, input.storageDomainId);
    const deleted: string[] = [];
    const alreadyGone: string[] = [];
    for (const [i, volumeId] of input.volumeIds.entries()) {
      if (i > 0) await breakpoint('deleteVolumes-next');
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

/**
 * createSnapshot's compensation: new leaves that nothing uses are made ILLEGAL, then deleted behind the
 * guard. Idempotent: a leaf already gone is skipped. A leaf a domain already uses (the snapshot happened
 * after all) is kept LEGAL: an ILLEGAL volume is never attached to a VM.
 */
export function makeDiscardVolumes(deps: StorageActivityDeps): StorageActivities['discardVolumes'] {
  const del = makeDeleteVolumes(deps);
  return async (input) => {
    const sd = await openDomain(deps, input.storageDomainId);
    const discard: string[] = [];
    for (const volumeId of input.volumeIds) {
      try {
        await assertDeletable(
          { imageId: input.imageId, volumeId },
          { domain: sd, domainXmls: deps.domainXmls },
        );
      } catch (err) {
        if (err instanceof DeletionRefused) continue;
        throw err;
      }
      const v = await sd.findVolume(input.imageId, volumeId);
      if (v && v.legality === 'LEGAL') await sd.setLegality(input.imageId, volumeId, 'ILLEGAL');
      discard.push(volumeId);
    }
    await del({ ...input, volumeIds: discard });
  };
}
