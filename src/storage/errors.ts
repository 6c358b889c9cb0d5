// Typed storage errors. Every error carries a stable `code` string that activities can map to
// Temporal ApplicationFailure types without parsing messages.

export type StorageErrorCode =
  | 'PATH_REFUSED'
  | 'VOLUME_NOT_FOUND'
  | 'IMAGE_NOT_FOUND'
  | 'DOMAIN_NOT_FOUND'
  | 'ALREADY_EXISTS'
  | 'METADATA_CORRUPT'
  | 'CHAIN_BROKEN'
  | 'CHAIN_AMBIGUOUS'
  | 'INVALID_REQUEST'
  | 'LOCK_TIMEOUT'
  | 'LOCK_LOST'
  | 'DELETION_REFUSED';

export abstract class StorageError extends Error {
  abstract readonly code: StorageErrorCode;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

export type PathRefusedReason = 'invalid-id' | 'symlink' | 'outside-root' | 'not-a-directory' | 'not-a-file';

/** A path was refused before use: bad id, symlink below the domain root, escape from the root, wrong file type. */
export class PathRefused extends StorageError {
  override readonly name = 'PathRefused';
  readonly code = 'PATH_REFUSED' as const;
  constructor(
    readonly reason: PathRefusedReason,
    readonly path: string,
    detail?: string,
    options?: { cause?: unknown },
  ) {
    super(`path refused (${reason}): ${path}${detail ? `: ${detail}` : ''}`, options);
  }
}

export class VolumeNotFound extends StorageError {
  override readonly name = 'VolumeNotFound';
  readonly code = 'VOLUME_NOT_FOUND' as const;
  constructor(
    readonly imageId: string,
    readonly volumeId: string,
  ) {
    super(`volume ${volumeId} not found in image ${imageId}`);
  }
}

export class ImageNotFound extends StorageError {
  override readonly name = 'ImageNotFound';
  readonly code = 'IMAGE_NOT_FOUND' as const;
  constructor(readonly imageId: string) {
    super(`image ${imageId} not found`);
  }
}

export class StorageDomainNotFound extends StorageError {
  override readonly name = 'StorageDomainNotFound';
  readonly code = 'DOMAIN_NOT_FOUND' as const;
  constructor(
    readonly storageDomainId: string,
    readonly dir: string,
  ) {
    super(`storage domain ${storageDomainId} not found at ${dir}`);
  }
}

export class AlreadyExists extends StorageError {
  override readonly name = 'AlreadyExists';
  readonly code = 'ALREADY_EXISTS' as const;
  constructor(readonly path: string) {
    super(`already exists: ${path}`);
  }
}

export class MetadataCorrupt extends StorageError {
  override readonly name = 'MetadataCorrupt';
  readonly code = 'METADATA_CORRUPT' as const;
  constructor(
    readonly path: string,
    detail: string,
    options?: { cause?: unknown },
  ) {
    super(`corrupt volume metadata ${path}: ${detail}`, options);
  }
}

export class ChainBroken extends StorageError {
  override readonly name = 'ChainBroken';
  readonly code = 'CHAIN_BROKEN' as const;
  constructor(
    readonly imageId: string,
    detail: string,
  ) {
    super(`chain of image ${imageId} is broken: ${detail}`);
  }
}

export class ChainAmbiguous extends StorageError {
  override readonly name = 'ChainAmbiguous';
  readonly code = 'CHAIN_AMBIGUOUS' as const;
  constructor(
    readonly imageId: string,
    readonly leafIds: readonly string[],
  ) {
    super(
      `image ${imageId} has ${leafIds.length} LEGAL leaves (${leafIds.join(', ') || 'none'}); pass leafVolumeId`,
    );
  }
}

export class InvalidStorageRequest extends StorageError {
  override readonly name = 'InvalidStorageRequest';
  readonly code = 'INVALID_REQUEST' as const;
}

export class LockTimeout extends StorageError {
  override readonly name = 'LockTimeout';
  readonly code = 'LOCK_TIMEOUT' as const;
  constructor(
    readonly lockPath: string,
    readonly owner: unknown,
    readonly waitedMs: number,
  ) {
    super(`timed out after ${waitedMs} ms waiting for lock ${lockPath} held by ${JSON.stringify(owner)}`);
  }
}

export class LockLost extends StorageError {
  override readonly name = 'LockLost';
  readonly code = 'LOCK_LOST' as const;
  constructor(
    readonly lockPath: string,
    detail: string,
  ) {
    super(`lock ${lockPath} lost: ${detail}`);
  }
}

export type DeletionRefusedReason = 'in-live-chain' | 'in-persistent-chain' | 'parent-of-legal-volume';

export class DeletionRefused extends StorageError {
  override readonly name = 'DeletionRefused';
  readonly code = 'DELETION_REFUSED' as const;
  constructor(
    readonly reason: DeletionRefusedReason,
    readonly volumeId: string,
    /** The libvirt domain (for in-*-chain) or the LEGAL child volume id (for parent-of-legal-volume). */
    readonly by: string,
    detail?: string,
  ) {
    super(
      `deletion of volume ${volumeId} refused (${reason}): ${
        reason === 'parent-of-legal-volume' ? `LEGAL volume ${by} names it as parent` : `domain ${by}`
      }${detail ? `; ${detail}` : ''}`,
    );
  }
}

export function isErrnoException(e: unknown): e is NodeJS.ErrnoException {
  return e instanceof Error && typeof (e as NodeJS.ErrnoException).code === 'string';
}

export function errnoCode(e: unknown): string | undefined {
  return isErrnoException(e) ? e.code : undefined;
}
