// Raw koffi declarations of the libvirt C API (libvirt.so.0) and of libc's free().
//
// Why koffi: it ships prebuilt binaries (no compiler, no node-gyp on the hosts), and every
// declared function has an `.async()` twin that runs the native call on a libuv worker thread,
// so calls that talk to libvirtd never block the Node event loop. Callbacks that libvirt invokes
// on a secondary thread (event loop, error handler) are relayed by koffi to the main JS thread;
// the calling native thread waits until the JS callback has returned.
//
// Nothing here is public API: the typed wrappers live in connection.ts / domain.ts / events.ts.
// Only this file knows C signatures. Functions that talk to libvirtd are called through
// `callAsync()` (see invoke.ts); the few synchronous ones here only touch local memory
// (virDomainGetName, virDomainGetUUIDString, virDomainFree, virEventUpdateTimeout, ...).
import koffi from 'koffi';

/** Opaque native handles (koffi External objects), branded so they cannot be mixed up. */
export interface ConnectPtr {
  readonly __brand: 'virConnectPtr';
}
export interface DomainPtr {
  readonly __brand: 'virDomainPtr';
}
export interface SnapshotPtr {
  readonly __brand: 'virDomainSnapshotPtr';
}
export interface CheckpointPtr {
  readonly __brand: 'virDomainCheckpointPtr';
}
export interface ErrorPtr {
  readonly __brand: 'virErrorPtr';
}
/** A pointer that came back through an out-parameter (e.g. the array of virConnectListAllDomains). */
export interface RawPtr {
  readonly __brand: 'void*';
}

/** A declared native function with a typed synchronous and asynchronous (worker-thread) form. */
export interface NativeFn<A extends unknown[], R> {
  (...args: A): R;
  async(...args: [...A, (err: unknown, result: R) => void]): void;
}

const LIBVIRT_SONAME = 'libvirt.so.0';
const lib = koffi.load(LIBVIRT_SONAME);
const libc = koffi.load('libc.so.6');

function declare<A extends unknown[], R>(library: koffi.IKoffiLib, definition: string): NativeFn<A, R> {
  return library.func(definition) as NativeFn<A, R>;
}

// ---- types -------------------------------------------------------------------------------------

koffi.opaque('virConnect');
koffi.pointer('virConnectPtr', 'virConnect');
koffi.opaque('virDomain');
koffi.pointer('virDomainPtr', 'virDomain');
koffi.opaque('virDomainSnapshot');
koffi.pointer('virDomainSnapshotPtr', 'virDomainSnapshot');
koffi.opaque('virDomainCheckpoint');
koffi.pointer('virDomainCheckpointPtr', 'virDomainCheckpoint');

export const virErrorStruct = koffi.struct('virError', {
  code: 'int',
  domain: 'int',
  message: 'const char *',
  level: 'int',
  conn: 'void *',
  dom: 'void *',
  str1: 'const char *',
  str2: 'const char *',
  str3: 'const char *',
  int1: 'int',
  int2: 'int',
  net: 'void *',
});
koffi.pointer('virErrorPtr', virErrorStruct);

/** Shape koffi decodes a virError into. */
export interface VirErrorFields {
  code: number;
  domain: number;
  message: string | null;
  level: number;
  str1: string | null;
  str2: string | null;
  str3: string | null;
  int1: number;
  int2: number;
}

koffi.struct('virDomainBlockJobInfo', {
  type: 'int',
  bandwidth: 'unsigned long',
  cur: 'unsigned long long',
  end: 'unsigned long long',
});

/** Shape koffi fills for virDomainBlockJobInfo (64-bit fields may come back as bigint). */
export interface VirBlockJobInfoFields {
  type: number;
  bandwidth: number | bigint;
  cur: number | bigint;
  end: number | bigint;
}

export const libcFree = declare<[unknown], void>(libc, 'void free(void *ptr)');
/** A `char *` that libvirt allocated: koffi decodes it to a JS string, then frees it with libc free(). */
koffi.disposable('HeapStr', 'str', libcFree);

// Callback prototypes (used through koffi.register, always with `*`).
export const ErrorFuncProto = koffi.proto('void virErrorFunc(void *userData, virErrorPtr error)');
export const EventTimeoutCallbackProto = koffi.proto('void virEventTimeoutCallback(int timer, void *opaque)');
export const DomainEventLifecycleProto = koffi.proto(
  'int virConnectDomainEventCallback(virConnectPtr conn, virDomainPtr dom, int event, int detail, void *opaque)',
);
export const DomainEventBlockJobProto = koffi.proto(
  'void virConnectDomainEventBlockJobCallback(virConnectPtr conn, virDomainPtr dom, const char *disk, int type, int status, void *opaque)',
);
export const ConnectCloseFuncProto = koffi.proto(
  'void virConnectCloseFunc(virConnectPtr conn, int reason, void *opaque)',
);

type Cb = koffi.IKoffiRegisteredCallback;
type Str = string | null;

// ---- errors ------------------------------------------------------------------------------------

export const virSetErrorFunc = declare<[unknown, Cb | null], void>(
  lib,
  'void virSetErrorFunc(void *userData, virErrorFunc *handler)',
);
export const virConnSetErrorFunc = declare<[ConnectPtr, unknown, Cb | null], void>(
  lib,
  'void virConnSetErrorFunc(virConnectPtr conn, void *userData, virErrorFunc *handler)',
);

// ---- event loop --------------------------------------------------------------------------------

export const virEventRegisterDefaultImpl = declare<[], number>(lib, 'int virEventRegisterDefaultImpl(void)');
export const virEventRunDefaultImpl = declare<[], number>(lib, 'int virEventRunDefaultImpl(void)');
export const virEventAddTimeout = declare<[number, Cb, unknown, unknown], number>(
  lib,
  'int virEventAddTimeout(int frequency, virEventTimeoutCallback *cb, void *opaque, void *ff)',
);
export const virEventUpdateTimeout = declare<[number, number], void>(
  lib,
  'void virEventUpdateTimeout(int timer, int frequency)',
);

// ---- connection --------------------------------------------------------------------------------

export const virConnectOpen = declare<[string], ConnectPtr | null>(
  lib,
  'virConnectPtr virConnectOpen(const char *name)',
);
export const virConnectClose = declare<[ConnectPtr], number>(lib, 'int virConnectClose(virConnectPtr conn)');
export const virConnectIsAlive = declare<[ConnectPtr], number>(
  lib,
  'int virConnectIsAlive(virConnectPtr conn)',
);
export const virConnectListAllDomains = declare<[ConnectPtr, [RawPtr | null], number], number>(
  lib,
  'int virConnectListAllDomains(virConnectPtr conn, _Out_ void **domains, unsigned int flags)',
);
export const virConnectRegisterCloseCallback = declare<[ConnectPtr, Cb, unknown, unknown], number>(
  lib,
  'int virConnectRegisterCloseCallback(virConnectPtr conn, virConnectCloseFunc *cb, void *opaque, void *freecb)',
);
export const virConnectUnregisterCloseCallback = declare<[ConnectPtr, Cb], number>(
  lib,
  'int virConnectUnregisterCloseCallback(virConnectPtr conn, virConnectCloseFunc *cb)',
);
// virConnectDomainEventRegisterAny takes a generic function pointer (VIR_DOMAIN_EVENT_CALLBACK):
// one declaration per callback prototype we register through it.
export const virConnectDomainEventRegisterAnyLifecycle = declare<
  [ConnectPtr, DomainPtr | null, number, Cb, unknown, unknown],
  number
>(
  lib,
  'int virConnectDomainEventRegisterAny(virConnectPtr conn, virDomainPtr dom, int eventID, virConnectDomainEventCallback *cb, void *opaque, void *freecb)',
);
export const virConnectDomainEventRegisterAnyBlockJob = declare<
  [ConnectPtr, DomainPtr | null, number, Cb, unknown, unknown],
  number
>(
  lib,
  'int virConnectDomainEventRegisterAny(virConnectPtr conn, virDomainPtr dom, int eventID, virConnectDomainEventBlockJobCallback *cb, void *opaque, void *freecb)',
);
export const virConnectDomainEventDeregisterAny = declare<[ConnectPtr, number], number>(
  lib,
  'int virConnectDomainEventDeregisterAny(virConnectPtr conn, int callbackID)',
);

// ---- domains -----------------------------------------------------------------------------------

export const virDomainLookupByName = declare<[ConnectPtr, string], DomainPtr | null>(
  lib,
  'virDomainPtr virDomainLookupByName(virConnectPtr conn, const char *name)',
);
export const virDomainLookupByUUIDString = declare<[ConnectPtr, string], DomainPtr | null>(
  lib,
  'virDomainPtr virDomainLookupByUUIDString(virConnectPtr conn, const char *uuidstr)',
);
export const virDomainDefineXMLFlags = declare<[ConnectPtr, string, number], DomainPtr | null>(
  lib,
  'virDomainPtr virDomainDefineXMLFlags(virConnectPtr conn, const char *xml, unsigned int flags)',
);
export const virDomainFree = declare<[DomainPtr], number>(lib, 'int virDomainFree(virDomainPtr domain)');
/** Local (no RPC): returns a pointer into the virDomain object, not to be freed. */
export const virDomainGetName = declare<[DomainPtr], Str>(
  lib,
  'const char *virDomainGetName(virDomainPtr domain)',
);
/** Local (no RPC): writes VIR_UUID_STRING_BUFLEN (37) bytes. */
export const virDomainGetUUIDString = declare<[DomainPtr, Buffer], number>(
  lib,
  'int virDomainGetUUIDString(virDomainPtr domain, _Out_ char *buf)',
);
export const virDomainGetState = declare<[DomainPtr, [number], [number], number], number>(
  lib,
  'int virDomainGetState(virDomainPtr domain, _Out_ int *state, _Out_ int *reason, unsigned int flags)',
);
export const virDomainGetXMLDesc = declare<[DomainPtr, number], Str>(
  lib,
  'HeapStr virDomainGetXMLDesc(virDomainPtr domain, unsigned int flags)',
);
export const virDomainGetMetadata = declare<[DomainPtr, number, string | null, number], Str>(
  lib,
  'HeapStr virDomainGetMetadata(virDomainPtr domain, int type, const char *uri, unsigned int flags)',
);
export const virDomainSetMetadata = declare<
  [DomainPtr, number, string | null, string | null, string | null, number],
  number
>(
  lib,
  'int virDomainSetMetadata(virDomainPtr domain, int type, const char *metadata, const char *key, const char *uri, unsigned int flags)',
);
export const virDomainUndefineFlags = declare<[DomainPtr, number], number>(
  lib,
  'int virDomainUndefineFlags(virDomainPtr domain, unsigned int flags)',
);
export const virDomainCreateWithFlags = declare<[DomainPtr, number], number>(
  lib,
  'int virDomainCreateWithFlags(virDomainPtr domain, unsigned int flags)',
);
export const virDomainDestroyFlags = declare<[DomainPtr, number], number>(
  lib,
  'int virDomainDestroyFlags(virDomainPtr domain, unsigned int flags)',
);
export const virDomainIsActive = declare<[DomainPtr], number>(
  lib,
  'int virDomainIsActive(virDomainPtr domain)',
);

// ---- snapshots ---------------------------------------------------------------------------------

export const virDomainSnapshotCreateXML = declare<[DomainPtr, string, number], SnapshotPtr | null>(
  lib,
  'virDomainSnapshotPtr virDomainSnapshotCreateXML(virDomainPtr domain, const char *xmlDesc, unsigned int flags)',
);
export const virDomainSnapshotFree = declare<[SnapshotPtr], number>(
  lib,
  'int virDomainSnapshotFree(virDomainSnapshotPtr snapshot)',
);

// ---- checkpoints (persistent dirty bitmaps) ----------------------------------------------------

export const virDomainCheckpointCreateXML = declare<[DomainPtr, string, number], CheckpointPtr | null>(
  lib,
  'virDomainCheckpointPtr virDomainCheckpointCreateXML(virDomainPtr domain, const char *xmlDesc, unsigned int flags)',
);
export const virDomainCheckpointLookupByName = declare<[DomainPtr, string, number], CheckpointPtr | null>(
  lib,
  'virDomainCheckpointPtr virDomainCheckpointLookupByName(virDomainPtr domain, const char *name, unsigned int flags)',
);
export const virDomainCheckpointDelete = declare<[CheckpointPtr, number], number>(
  lib,
  'int virDomainCheckpointDelete(virDomainCheckpointPtr checkpoint, unsigned int flags)',
);
export const virDomainCheckpointFree = declare<[CheckpointPtr], number>(
  lib,
  'int virDomainCheckpointFree(virDomainCheckpointPtr checkpoint)',
);

// ---- block jobs --------------------------------------------------------------------------------

export const virDomainBlockCommit = declare<[DomainPtr, string, Str, Str, number | bigint, number], number>(
  lib,
  'int virDomainBlockCommit(virDomainPtr dom, const char *disk, const char *base, const char *top, unsigned long bandwidth, unsigned int flags)',
);
export const virDomainBlockRebase = declare<[DomainPtr, string, Str, number | bigint, number], number>(
  lib,
  'int virDomainBlockRebase(virDomainPtr dom, const char *disk, const char *base, unsigned long bandwidth, unsigned int flags)',
);
export const virDomainBlockPull = declare<[DomainPtr, string, number | bigint, number], number>(
  lib,
  'int virDomainBlockPull(virDomainPtr dom, const char *disk, unsigned long bandwidth, unsigned int flags)',
);
export const virDomainGetBlockJobInfo = declare<[DomainPtr, string, Record<string, unknown>, number], number>(
  lib,
  'int virDomainGetBlockJobInfo(virDomainPtr dom, const char *disk, _Out_ virDomainBlockJobInfo *info, unsigned int flags)',
);
export const virDomainBlockJobAbort = declare<[DomainPtr, string, number], number>(
  lib,
  'int virDomainBlockJobAbort(virDomainPtr dom, const char *disk, unsigned int flags)',
);
export const virDomainBlockJobSetSpeed = declare<[DomainPtr, string, number | bigint, number], number>(
  lib,
  'int virDomainBlockJobSetSpeed(virDomainPtr dom, const char *disk, unsigned long bandwidth, unsigned int flags)',
);

// ---- helpers -----------------------------------------------------------------------------------

/** Numeric address of a native pointer (used to map callback arguments back to JS objects). */
export function addressOf(ptr: unknown): bigint {
  return koffi.address(ptr);
}

/** Decodes `count` pointers from a native `void **` array. */
export function decodePointerArray(ptr: RawPtr, count: number): DomainPtr[] {
  return koffi.decode(ptr, 'virDomainPtr', count) as DomainPtr[];
}

export function decodeError(ptr: ErrorPtr): VirErrorFields {
  return koffi.decode(ptr, virErrorStruct) as VirErrorFields;
}

export function registerCallback(fn: (...args: never[]) => unknown, proto: koffi.IKoffiCType): Cb {
  return koffi.register(fn, koffi.pointer(proto));
}

// ---- libvirt-qemu.so.0 (QEMU-specific API, used for diagnostics and tests only) ---------------

let qemuLib: koffi.IKoffiLib | null = null;
let monitorCommandFn: NativeFn<[DomainPtr, string, [RawPtr | null], number], number> | null = null;

export function virDomainQemuMonitorCommand(): NativeFn<
  [DomainPtr, string, [RawPtr | null], number],
  number
> {
  qemuLib ??= koffi.load('libvirt-qemu.so.0');
  monitorCommandFn ??= declare(
    qemuLib,
    'int virDomainQemuMonitorCommand(virDomainPtr domain, const char *cmd, _Out_ void **result, unsigned int flags)',
  );
  return monitorCommandFn;
}

/** Decodes a NUL-terminated C string and frees it with libc free(). */
export function takeCString(ptr: RawPtr): string {
  try {
    return koffi.decode(ptr, 'char', -1) as string;
  } finally {
    libcFree(ptr);
  }
}
