// Typed libvirt failures, and how the error of a failed call is captured reliably.
//
// libvirt keeps "the last error" in thread-local storage. Our calls run on koffi/libuv worker
// threads, so reading virGetLastError() afterwards (from the main thread, or from another async
// call that may land on a different worker) would read the wrong thread's error. Instead we
// install an error handler (virSetErrorFunc globally, virConnSetErrorFunc per connection).
// libvirt invokes it from virDispatchError() *on the failing thread, before the API returns*;
// koffi relays the invocation to the JS thread and keeps the worker blocked until the handler has
// returned, so the virError it points to is still valid while we decode it. The handler's
// userData names the connection (its virConnectPtr), and calls are serialized per connection
// (see invoke.ts), so the error captured during a call belongs to that call.
// Installing a handler also stops libvirt's default handler from printing every error to stderr.
import { ErrorCode, errorCodeName, errorDomainName } from './error-codes';
import type { ConnectPtr, ErrorPtr, VirErrorFields } from './ffi';
import {
  ErrorFuncProto,
  addressOf,
  decodeError,
  registerCallback,
  virConnSetErrorFunc,
  virSetErrorFunc,
} from './ffi';

export interface LibvirtErrorDetails {
  /** virErrorNumber, e.g. 42 = VIR_ERR_NO_DOMAIN (see ErrorCode). */
  code: number;
  /** virErrorDomain, e.g. 10 = VIR_FROM_QEMU (see ErrorDomain). */
  domain: number;
  /** libvirt's own message text. */
  message: string;
  /** virErrorLevel: 1 warning, 2 error. */
  level: number;
  str1: string | null;
  str2: string | null;
  str3: string | null;
  int1: number;
  int2: number;
}

export class LibvirtError extends Error {
  override readonly name = 'LibvirtError';
  /** virErrorNumber (ErrorCode.NO_DOMAIN = 42, ...); -1 when libvirt reported no error object. */
  readonly code: number;
  /** virErrorDomain (ErrorDomain.QEMU = 10, ...). */
  readonly domain: number;
  /** libvirt's message, without our prefix. */
  readonly libvirtMessage: string;
  /** The C function that failed, e.g. `virDomainLookupByName`. */
  readonly functionName: string;
  readonly details: LibvirtErrorDetails | null;

  constructor(functionName: string, details: LibvirtErrorDetails | null, note?: string) {
    const libvirtMessage = details?.message ?? note ?? 'libvirt reported a failure but no error';
    const code = details?.code ?? -1;
    const domain = details?.domain ?? 0;
    super(`${functionName} failed: ${libvirtMessage} (${errorCodeName(code)}, ${errorDomainName(domain)})`);
    this.functionName = functionName;
    this.code = code;
    this.domain = domain;
    this.libvirtMessage = libvirtMessage;
    this.details = details;
  }

  get codeName(): string {
    return errorCodeName(this.code);
  }

  get domainName(): string {
    return errorDomainName(this.domain);
  }
}

export function isLibvirtError(err: unknown, code?: number): err is LibvirtError {
  return err instanceof LibvirtError && (code === undefined || err.code === code);
}

/** True when the error says the domain does not exist (VIR_ERR_NO_DOMAIN). */
export function isNoDomainError(err: unknown): boolean {
  return isLibvirtError(err, ErrorCode.NO_DOMAIN);
}

/** Where errors of one connection (or of connection-less calls) are captured. */
export class ErrorSlot {
  private captured: LibvirtErrorDetails | null = null;
  /** Set while a call of this slot is in flight; errors outside a call are not kept. */
  private armed = false;

  arm(): void {
    this.captured = null;
    this.armed = true;
  }

  /** Ends the current call and returns the error libvirt dispatched during it, if any. */
  disarm(): LibvirtErrorDetails | null {
    this.armed = false;
    const err = this.captured;
    this.captured = null;
    return err;
  }

  record(details: LibvirtErrorDetails): void {
    if (this.armed) this.captured = details;
  }
}

/** For errors dispatched without a connection (virConnectOpen failures). */
export const globalErrorSlot = new ErrorSlot();
const connectionSlots = new Map<bigint, ErrorSlot>();

function toDetails(fields: VirErrorFields): LibvirtErrorDetails {
  return {
    code: fields.code,
    domain: fields.domain,
    message: fields.message ?? '',
    level: fields.level,
    str1: fields.str1,
    str2: fields.str2,
    str3: fields.str3,
    int1: fields.int1,
    int2: fields.int2,
  };
}

function onLibvirtError(userData: unknown, errPtr: ErrorPtr | null): void {
  if (!errPtr) return;
  let details: LibvirtErrorDetails;
  try {
    details = toDetails(decodeError(errPtr));
  } catch {
    return;
  }
  const slot = userData ? connectionSlots.get(addressOf(userData)) : undefined;
  (slot ?? globalErrorSlot).record(details);
}

let errorCallback: ReturnType<typeof registerCallback> | null = null;

function ensureErrorHandler(): ReturnType<typeof registerCallback> {
  if (!errorCallback) {
    errorCallback = registerCallback(onLibvirtError, ErrorFuncProto);
    virSetErrorFunc(null, errorCallback);
  }
  return errorCallback;
}

/** Installs the process-wide handler (idempotent). Must run before the first libvirt call. */
export function installGlobalErrorHandler(): void {
  ensureErrorHandler();
}

/** Routes errors dispatched for `conn` into `slot` (local call, no RPC). */
export function attachConnectionErrors(conn: ConnectPtr, slot: ErrorSlot): void {
  const cb = ensureErrorHandler();
  connectionSlots.set(addressOf(conn), slot);
  virConnSetErrorFunc(conn, conn, cb);
}

export function detachConnectionErrors(conn: ConnectPtr): void {
  connectionSlots.delete(addressOf(conn));
}
