export * from './errors';
export {
  StorageDomain,
  chainFrom,
  type VolumeInfo,
  type CreateImageInput,
  type CreateVolumeInput,
  type ImageScan,
  type VolumeMutation,
  type StorageDomainOptions,
} from './storage-domain';
export { VolumeMetadataSchema, VolumeFormat, Legality, type VolumeMetadata } from './metadata';
export { DomainPaths, validId } from './paths';
export { withLock, lockOwner, ownerIsDead, type LockOwner, type LockOptions } from './lock';
export {
  runQemuImg,
  qemuImgCreate,
  qemuImgInfo,
  qemuImgRebaseUnsafe,
  type ImageInfo,
  type Qcow2Bitmap,
  type RunOptions,
} from './qemu-img';
export {
  assertDeletable,
  deleteVolumeGuarded,
  type DomainXmls,
  type DeletionGuardDeps,
  type VolumeRef,
} from './deletion-guard';
