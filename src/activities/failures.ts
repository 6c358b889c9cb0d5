// Typed errors from the primitives become ApplicationFailures whose `type` workflows and users act on.
import { ApplicationFailure } from '@temporalio/common';
import { BackupError } from '../backup/errors';
import { LibvirtError } from '../libvirt/errors';
import { isRetryableLibvirtError } from '../libvirt/retryable';
import { QemuImgError } from '../qemu/qemu-img';
import { StorageError } from '../storage/errors';

const STORAGE_TO_FAILURE: Partial<Record<StorageError['code'], string>> = {
  PATH_REFUSED: 'InvalidRequest',
  VOLUME_NOT_FOUND: 'InvalidRequest',
  IMAGE_NOT_FOUND: 'InvalidRequest',
  DOMAIN_NOT_FOUND: 'InvalidRequest',
  INVALID_REQUEST: 'InvalidRequest',
  CHAIN_BROKEN: 'ChainMismatch',
  CHAIN_AMBIGUOUS: 'ChainMismatch',
  METADATA_CORRUPT: 'ChainMismatch',
  DELETION_REFUSED: 'DeletionRefused',
};

const BACKUP_TO_FAILURE: Record<BackupError['code'], string> = {
  BACKUP_REQUEST_INVALID: 'InvalidRequest',
  BACKUP_NOT_FOUND: 'BackupNotFound',
  BACKUP_CATALOG_CORRUPT: 'ChainMismatch',
  BACKUP_CHAIN_BROKEN: 'ChainMismatch',
};

export function nonRetryable(type: string, message: string, details?: unknown): ApplicationFailure {
  return ApplicationFailure.create({ type, message, nonRetryable: true, details: details ? [details] : [] });
}

/** Rethrows a primitive's error as the failure type it means; anything else stays retryable. */
export function asFailure(err: unknown): never {
  if (err instanceof ApplicationFailure) throw err;
  if (err instanceof StorageError) {
    const type = STORAGE_TO_FAILURE[err.code];
    if (type) throw nonRetryable(type, err.message, { code: err.code });
    throw ApplicationFailure.create({ type: err.code, message: err.message, cause: err });
  }
  if (err instanceof BackupError)
    throw ApplicationFailure.create({
      type: BACKUP_TO_FAILURE[err.code],
      message: err.message,
      nonRetryable: !err.retryable,
      details: [{ code: err.code }],
    });
  // Retryable: qemu-img fails for reasons that pass (an image lock, a file a concurrent step replaced).
  if (err instanceof QemuImgError)
    throw ApplicationFailure.create({ type: err.code, message: err.message, cause: err });
  if (err instanceof LibvirtError) {
    // The cause, as libvirt said it: code, its name, the failing call and libvirt's own message.
    throw ApplicationFailure.create({
      type: 'LibvirtError',
      message: err.message,
      nonRetryable: !isRetryableLibvirtError(err),
      details: [
        {
          code: err.code,
          codeName: err.codeName,
          domain: err.domain,
          function: err.functionName,
          libvirtMessage: err.libvirtMessage,
        },
      ],
    });
  }
  throw err;
}

/** Wraps an activity so that every thrown primitive error is typed. */
export function typed<A extends unknown[], R>(fn: (...args: A) => Promise<R>): (...args: A) => Promise<R> {
  return async (...args: A) => {
    try {
      return await fn(...args);
    } catch (err) {
      asFailure(err);
    }
  };
}
