import type { StoredVolume } from '../storage/storage-domain';
import type { VolumeInfo } from './contracts';

/** A stored volume as activities return it (metadata plus path, without storage internals). */
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
