// Domain events (BLOCK_JOB_2, LIFECYCLE) and the connection-close callback.
//
// One koffi trampoline per callback type is registered for the life of the process (so libvirt can
// never call into a released trampoline, even for an event already in flight while a
// registration is being removed). libvirt passes the virConnectPtr to every callback; we map its
// address back to the connection's EventHub. Callbacks are invoked by libvirt on the event-loop
// thread (see event-loop.ts) and relayed by koffi to the JS thread; the virDomainPtr argument is
// only valid during the callback, so name and UUID are read right away (local calls, no RPC).
import type { BlockJobStatus, BlockJobType, ConnectCloseReason, LifecycleEvent } from './constants';
import type { ConnectPtr, DomainPtr } from './ffi';
import {
  ConnectCloseFuncProto,
  DomainEventBlockJobProto,
  DomainEventLifecycleProto,
  addressOf,
  registerCallback,
  virDomainGetName,
  virDomainGetUUIDString,
} from './ffi';

export interface BlockJobEvent {
  domainName: string;
  domainUuid: string;
  /** BLOCK_JOB_2 reports the disk target (e.g. 'vda'). */
  disk: string;
  type: BlockJobType;
  status: BlockJobStatus;
  /** performance.now() on the JS thread when the callback ran. */
  receivedAt: number;
}

export interface LifecycleEventInfo {
  domainName: string;
  domainUuid: string;
  event: LifecycleEvent;
  /** Event-specific detail (e.g. LifecycleStoppedDetail when event is STOPPED). */
  detail: number;
  receivedAt: number;
}

export interface CloseEventInfo {
  reason: ConnectCloseReason;
}

export type Listener<T> = (event: T) => void;
/** Call to unsubscribe. Idempotent. */
export type Disposer = () => void;

class ListenerSet<T> {
  private readonly listeners = new Set<Listener<T>>();

  add(listener: Listener<T>): Disposer {
    // Wrap so the same function can be subscribed twice and disposed independently.
    const entry: Listener<T> = (e) => listener(e);
    this.listeners.add(entry);
    return () => {
      this.listeners.delete(entry);
    };
  }

  emit(event: T, onListenerError: (err: unknown) => void): void {
    for (const l of [...this.listeners]) {
      try {
        l(event);
      } catch (err) {
        onListenerError(err);
      }
    }
  }

  clear(): void {
    this.listeners.clear();
  }

  get size(): number {
    return this.listeners.size;
  }
}

/** Per-connection fan-out of native callbacks to JS listeners. */
export class EventHub {
  readonly blockJob = new ListenerSet<BlockJobEvent>();
  readonly lifecycle = new ListenerSet<LifecycleEventInfo>();
  readonly close = new ListenerSet<CloseEventInfo>();
  /** Listener exceptions are reported here (never thrown into libvirt). */
  onListenerError: (err: unknown) => void = (err) => {
    process.emitWarning(`libvirt event listener threw: ${err instanceof Error ? err.stack : String(err)}`);
  };

  clear(): void {
    this.blockJob.clear();
    this.lifecycle.clear();
    this.close.clear();
  }
}

const hubs = new Map<bigint, EventHub>();

export function attachHub(conn: ConnectPtr, hub: EventHub): void {
  hubs.set(addressOf(conn), hub);
}

export function detachHub(conn: ConnectPtr): void {
  hubs.delete(addressOf(conn));
}

function hubFor(conn: ConnectPtr | null): EventHub | undefined {
  return conn ? hubs.get(addressOf(conn)) : undefined;
}

function domainIdentity(dom: DomainPtr): { domainName: string; domainUuid: string } {
  const buf = Buffer.alloc(37);
  const ok = virDomainGetUUIDString(dom, buf) === 0;
  const nul = buf.indexOf(0);
  return {
    domainName: virDomainGetName(dom) ?? '',
    domainUuid: ok ? buf.toString('latin1', 0, nul < 0 ? buf.length : nul) : '',
  };
}

function onBlockJob(
  conn: ConnectPtr | null,
  dom: DomainPtr,
  disk: string | null,
  type: number,
  status: number,
): void {
  const receivedAt = performance.now();
  const hub = hubFor(conn);
  if (!hub || hub.blockJob.size === 0) return;
  hub.blockJob.emit(
    {
      ...domainIdentity(dom),
      disk: disk ?? '',
      type: type as BlockJobType,
      status: status as BlockJobStatus,
      receivedAt,
    },
    hub.onListenerError,
  );
}

function onLifecycle(conn: ConnectPtr | null, dom: DomainPtr, event: number, detail: number): number {
  const receivedAt = performance.now();
  const hub = hubFor(conn);
  if (!hub || hub.lifecycle.size === 0) return 0;
  hub.lifecycle.emit(
    { ...domainIdentity(dom), event: event as LifecycleEvent, detail, receivedAt },
    hub.onListenerError,
  );
  return 0;
}

function onClose(conn: ConnectPtr | null, reason: number): void {
  const hub = hubFor(conn);
  if (!hub) return;
  hub.close.emit({ reason: reason as ConnectCloseReason }, hub.onListenerError);
}

type Trampoline = ReturnType<typeof registerCallback>;
let trampolines: { blockJob: Trampoline; lifecycle: Trampoline; close: Trampoline } | null = null;

/** The process-lifetime native trampolines for the three callback types. */
export function eventTrampolines(): { blockJob: Trampoline; lifecycle: Trampoline; close: Trampoline } {
  trampolines ??= {
    blockJob: registerCallback(onBlockJob, DomainEventBlockJobProto),
    lifecycle: registerCallback(onLifecycle, DomainEventLifecycleProto),
    close: registerCallback(onClose, ConnectCloseFuncProto),
  };
  return trampolines;
}

/** Resolves with the first event matching `predicate`, or rejects after `timeoutMs`. */
export function waitForEvent<T>(
  subscribe: (listener: Listener<T>) => Disposer,
  predicate: (event: T) => boolean,
  timeoutMs: number,
  what = 'event',
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      dispose();
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
    }, timeoutMs);
    const dispose = subscribe((event) => {
      if (!predicate(event)) return;
      clearTimeout(timer);
      dispose();
      resolve(event);
    });
  });
}
