// Invariant 2: no volume is deleted while it is in the live or persistent chain of any domain on any host,
// or while a LEGAL volume names it as parent. Decoupled from libvirt: the caller supplies every host's
// domains through a callback (fleetDomainXmls). Which domains use the volume is findPathUsers' answer (path-users.ts), which fails closed: a
// guard that cannot see the domains or their chains refuses by failing.
import type { DomainXmls } from '../libvirt/domain-xmls';
import { domainLabel } from '../libvirt/domain-xmls';
import type { VolumeRef } from '../schemas/volume';
import { DeletionRefused } from '../storage/errors';
import type { StorageDomain } from '../storage/storage-domain';
import { findPathUsers } from './path-users';

export interface DeletionGuardDeps {
  domainXmls: () => Promise<DomainXmls[]>;
  domain: StorageDomain;
}

/** Throws DeletionRefused when `volume` may not be deleted now (see header); resolves otherwise. */
export async function assertDeletable(
  volume: Pick<VolumeRef, 'imageId' | 'volumeId'>,
  deps: DeletionGuardDeps,
): Promise<void> {
  const { domain } = deps;
  const target = domain.volumePath(volume.imageId, volume.volumeId); // validates both ids
  const [use] = await findPathUsers([target], deps.domainXmls);
  if (use)
    throw new DeletionRefused(
      use.view === 'live' ? 'in-live-chain' : 'in-persistent-chain',
      volume.volumeId,
      domainLabel(use.domain),
      `chain entry ${use.entry}`,
    );

  let volumes;
  try {
    volumes = await domain.listVolumes(volume.imageId);
  } catch (e) {
    if ((e as { code?: string }).code === 'IMAGE_NOT_FOUND') return;
    throw e;
  }
  const child = volumes.find((v) => v.parentId === volume.volumeId && v.legality === 'LEGAL');
  if (child) throw new DeletionRefused('parent-of-legal-volume', volume.volumeId, child.volumeId);
}

/**
 * The guard, then StorageDomain.deleteVolume (idempotent), which re-checks the LEGAL-child rule
 * under the image lock so a child created between the two steps is still seen.
 */
export async function deleteVolumeGuarded(
  volume: Pick<VolumeRef, 'imageId' | 'volumeId'>,
  deps: DeletionGuardDeps,
): Promise<{ deleted: boolean }> {
  await assertDeletable(volume, deps);
  return deps.domain.deleteVolume(volume.imageId, volume.volumeId, { refuseIfLegalChild: true });
}
