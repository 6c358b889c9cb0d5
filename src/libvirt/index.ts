// livemerge's typed bindings to libvirt's C API (libvirt.so.0).
//
// Why koffi (and not a compiled addon or virsh):
//  - koffi is an FFI with prebuilt binaries: no compiler, node-gyp or libvirt-dev on the hosts.
//  - Every call that talks to libvirtd runs through koffi's `.async()` on a libuv worker thread
//    and returns a Promise, so the Node event loop (Temporal heartbeats, timers) never blocks.
//  - Callbacks (domain events, error handler) may be invoked by libvirt on another thread; koffi
//    relays them to the JS thread. Events come from libvirt's own default event loop, iterated
//    on a worker thread while a connection is open (event-loop.ts).
//  - We never parse virsh output: everything goes through the C API with typed results and
//    LibvirtError (virErrorNumber `code`, virErrorDomain `domain`, `libvirtMessage`,
//    `functionName`), captured on the failing thread (errors.ts).
//
// Usage:
//   const conn = await LibvirtConnection.open();            // LIBVIRT_DEFAULT_URI or qemu:///system
//   const dom = await conn.lookupByName('vm1');
//   const ready = conn.waitForBlockJob((e) => e.domainUuid === dom.uuid && e.disk === 'vda'
//       && e.status === BlockJobStatus.READY, 60_000);
//   await dom.blockCommit('vda', null, null, 0, { active: true, relative: true });
//   await ready;
//   await dom.blockJobAbort('vda', { pivot: true });
//   dom.free();
//   await conn.close();
export { LibvirtConnection } from './connection';
export { readDomainXmls } from './domain-xmls';
export type { DomainXmls } from './domain-xmls';
export type { DomainSummary, OpenOptions } from './connection';
export { Domain } from './domain';
export type { DomainStateInfo, XmlOptions } from './domain';
export type {
  BlockCommitOptions,
  BlockJobAbortOptions,
  BlockJobInfo,
  BlockRebaseOptions,
} from './block-jobs';
export type { BlockJobEvent, CloseEventInfo, Disposer, LifecycleEventInfo, Listener } from './events';
export { waitForEvent } from './events';
export { LibvirtError, isLibvirtError, isNoDomainError } from './errors';
export type { LibvirtErrorDetails } from './errors';
export { ErrorCode, ErrorDomain, errorCodeName, errorDomainName } from './error-codes';
export {
  BlockCommitFlags,
  BlockJobAbortFlags,
  BlockJobInfoFlags,
  BlockJobSetSpeedFlags,
  BlockJobStatus,
  BlockJobType,
  BlockPullFlags,
  BlockRebaseFlags,
  ConnectCloseReason,
  DomainDefineFlags,
  DomainDestroyFlags,
  DomainEventId,
  DomainStartFlags,
  DomainState,
  DomainUndefineFlags,
  DomainXmlFlags,
  LifecycleEvent,
  LifecycleStoppedDetail,
  ListDomainsFlags,
  SnapshotCreateFlags,
  nameOf,
} from './constants';
export { QemuMonitorCommandFlags, hmpQemuIo, qemuMonitorCommand } from './qemu-monitor';
export { addBitmaps, removeBitmap } from './checkpoints';
