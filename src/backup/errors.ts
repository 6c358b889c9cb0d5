// Typed errors of the backup repository, restore and prune. Each carries a stable `code` (activities map
// it to an ApplicationFailure type without parsing messages) and, where one exists, the error that caused it.
// A failing qemu-img stays a QemuImgError (src/qemu/qemu-img.ts); a lock that cannot be had a LockTimeout.

export type BackupErrorCode =
  'BACKUP_REQUEST_INVALID' | 'BACKUP_NOT_FOUND' | 'BACKUP_CATALOG_CORRUPT' | 'BACKUP_CHAIN_BROKEN';

export abstract class BackupError extends Error {
  abstract readonly code: BackupErrorCode;
  /** Whether the same call can succeed later without anyone changing anything. */
  abstract readonly retryable: boolean;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

export type BackupRequestInvalidReason =
  'invalid-id' | 'invalid-path' | 'invalid-record' | 'invalid-keep' | 'target-dir-missing';

/** The request itself is wrong (ids, paths, the record, keep, the target directory): nothing was touched. */
export class BackupRequestInvalid extends BackupError {
  override readonly name = 'BackupRequestInvalid';
  readonly code = 'BACKUP_REQUEST_INVALID' as const;
  readonly retryable = false;
  constructor(
    readonly reason: BackupRequestInvalidReason,
    detail: string,
    options?: { cause?: unknown },
  ) {
    super(`invalid backup request (${reason}): ${detail}`, options);
  }
}

/** The catalog has no such backup (or the backup has no such disk). */
export class BackupNotFound extends BackupError {
  override readonly name = 'BackupNotFound';
  readonly code = 'BACKUP_NOT_FOUND' as const;
  readonly retryable = false;
  constructor(
    readonly vmId: string,
    readonly backupId: string,
    readonly imageId?: string,
  ) {
    super(
      imageId === undefined
        ? `backup ${backupId} of VM ${vmId} is not in the catalog`
        : `backup ${backupId} of VM ${vmId} has no disk of image ${imageId}`,
    );
  }
}

/** backups.json (or the prune journal) exists but is not what this module writes: never read as empty. */
export class BackupCatalogCorrupt extends BackupError {
  override readonly name = 'BackupCatalogCorrupt';
  readonly code = 'BACKUP_CATALOG_CORRUPT' as const;
  readonly retryable = false;
  constructor(
    readonly path: string,
    detail: string,
    options?: { cause?: unknown },
  ) {
    super(`corrupt backup catalog ${path}: ${detail}`, options);
  }
}

/**
 * The backup files on disk disagree with the catalog (a backing reference that is neither before nor after
 * a prune's pull, a missing file, a file that still backs onto one about to be deleted). Nothing was deleted.
 */
export class BackupChainBroken extends BackupError {
  override readonly name = 'BackupChainBroken';
  readonly code = 'BACKUP_CHAIN_BROKEN' as const;
  readonly retryable = false;
  constructor(
    readonly file: string,
    detail: string,
    options?: { cause?: unknown },
  ) {
    super(`backup chain broken at ${file}: ${detail}`, options);
  }
}
