// Typed errors of the cold merge primitives (a failing qemu-img is a QemuImgError, src/qemu/qemu-img.ts). Each carries a stable `code` so activities can map
// them to Temporal ApplicationFailure types without parsing messages.

export type ColdMergeErrorCode = 'INVALID_REQUEST' | 'CHAIN_MISMATCH';

export abstract class ColdMergeError extends Error {
  abstract readonly code: ColdMergeErrorCode;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** The request itself is malformed (indices, file names, formats); nothing was touched. */
export class InvalidColdMergeRequest extends ColdMergeError {
  override readonly name = 'InvalidColdMergeRequest';
  readonly code = 'INVALID_REQUEST' as const;
}

/**
 * The qcow2 headers on disk disagree with the chain in the request (a backing reference or
 * backing format that is neither the "before" nor the "after" state of this merge, a missing
 * volume, an absolute backing name). Nothing was changed by the step that detected it.
 */
export class ChainMismatch extends ColdMergeError {
  override readonly name = 'ChainMismatch';
  readonly code = 'CHAIN_MISMATCH' as const;
  constructor(
    readonly file: string,
    readonly detail: string,
    options?: { cause?: unknown },
  ) {
    super(`chain mismatch at ${file}: ${detail}`, options);
  }
}
