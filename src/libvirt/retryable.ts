// libvirt's errors, classified once: may the same call succeed later (retry), or does it say the request
// itself is wrong (do not)? By virErrorNumber. What the table does not name is retryable: an unknown
// error must make a step wait and be retried (the operator sees it on the pending activity), never
// decide an outcome.
import { ErrorCode } from './error-codes';
import { LibvirtError } from './errors';

/** Codes that describe the request, not the moment: retrying the same call cannot succeed. */
const PERMANENT: ReadonlySet<number> = new Set([
  ErrorCode.NO_SUPPORT,
  ErrorCode.INVALID_ARG,
  ErrorCode.XML_ERROR,
  ErrorCode.XML_DETAIL,
  ErrorCode.XML_INVALID_SCHEMA,
  ErrorCode.CONFIG_UNSUPPORTED,
  ErrorCode.ARGUMENT_UNSUPPORTED,
  ErrorCode.OPERATION_UNSUPPORTED,
  ErrorCode.NO_SOURCE,
  ErrorCode.NO_TARGET,
  ErrorCode.NO_NAME,
  ErrorCode.DOM_EXIST,
  ErrorCode.OPERATION_DENIED,
  ErrorCode.ACCESS_DENIED,
  ErrorCode.NO_DOMAIN,
  ErrorCode.NO_DOMAIN_SNAPSHOT,
  ErrorCode.NO_DOMAIN_CHECKPOINT,
  ErrorCode.CHECKPOINT_INCONSISTENT,
]);

// Everything else is retried, on purpose: connection and RPC failures while libvirtd restarts
// (NO_CONNECT, INVALID_CONN, RPC, SYSTEM_ERROR), a busy QEMU monitor (OPERATION_TIMEOUT, RESOURCE_BUSY),
// a job still synchronising (BLOCK_COPY_ACTIVE: "not ready for pivot yet", which vdsm retries too),
// a state libvirt is still moving through (OPERATION_INVALID, OPERATION_FAILED, INTERNAL_ERROR).

export function isRetryableLibvirtError(err: LibvirtError): boolean {
  return !PERMANENT.has(err.code);
}

/** The copy of an active commit is not yet synchronised: the pivot must wait and be tried again. */
export function isNotReadyForPivot(err: unknown): boolean {
  return err instanceof LibvirtError && err.code === ErrorCode.BLOCK_COPY_ACTIVE;
}
