import type { DomainXmls } from '../../storage/deletion-guard';
import { StorageDomain } from '../../storage/storage-domain';
import type { VolumeInfo as StoredVolume } from '../../storage/storage-domain';
import type { VolumeInfo } from '../contracts';

export interface StorageActivityDeps {
  storageRoot: string;
  /** Every domain's XML on this host, for the deletion guard (fails closed: an error refuses). */
  domainXmls: () => Promise<DomainXmls[]>;
}

export function openDomain(deps: StorageActivityDeps, storageDomainId: string): Promise<StorageDomain> {
  return StorageDomain.open(deps.storageRoot, storageDomainId);
}

export function toVolumeInfo(v: StoredVolume): VolumeInfo {
  return {
    storageDomainId: v.storageDomainId,
    imageId: v.imageId,
    volumeId: v.volumeId,
    parentId: v.parentId,
    format: v.format,
    legality: v.legality,
    snapshotId: v.snapshotId,
    capacity: v.capacity,
    description: v.description,
    path: v.path,
  };
}
