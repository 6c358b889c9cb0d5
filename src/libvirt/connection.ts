// A libvirt connection (virConnectPtr): open/close, domain lookup and definition, events.
import { DomainEventId, DomainState, ListDomainsFlags, nameOf } from './constants';
import type { DomainStateInfo } from './domain';
import { Domain, DomainHandle, readUuid } from './domain';
import {
  ErrorSlot,
  attachConnectionErrors,
  detachConnectionErrors,
  globalErrorSlot,
  installGlobalErrorHandler,
  isNoDomainError,
} from './errors';
import { eventLoop } from './event-loop';
import type { BlockJobEvent, CloseEventInfo, Disposer, LifecycleEventInfo, Listener } from './events';
import { EventHub, attachHub, detachHub, eventTrampolines, waitForEvent } from './events';
import type { ConnectPtr, DomainPtr, RawPtr } from './ffi';
import {
  decodePointerArray,
  libcFree,
  virConnectClose,
  virConnectDomainEventDeregisterAny,
  virConnectDomainEventRegisterAnyBlockJob,
  virConnectDomainEventRegisterAnyLifecycle,
  virConnectIsAlive,
  virConnectListAllDomains,
  virConnectOpen,
  virConnectRegisterCloseCallback,
  virConnectUnregisterCloseCallback,
  virDomainDefineXMLFlags,
  virDomainFree,
  virDomainGetName,
  virDomainGetState,
  virDomainLookupByName,
  virDomainLookupByUUIDString,
} from './ffi';
import type { CallContext } from './invoke';
import { CallQueue, callAsync, failsIfNegative, invoke, invokePtr } from './invoke';

export interface OpenOptions {
  /** Register BLOCK_JOB_2 and LIFECYCLE callbacks at open so subscriptions are synchronous. Default true. */
  events?: boolean;
}

export interface DomainSummary extends DomainStateInfo {
  name: string;
  uuid: string;
  /** Lower-case DomainState name: 'running', 'paused', 'shutoff', 'crashed', ... */
  stateName: string;
}

/** virConnectOpen is connection-less: its errors land in the global slot, so opens are serialized. */
const openContext: CallContext = { queue: new CallQueue(), errors: globalErrorSlot };

export class LibvirtConnection {
  /** @internal */
  readonly ctx: CallContext;
  private readonly hub = new EventHub();
  private readonly handles = new Set<DomainHandle>();
  private readonly finalizer = new FinalizationRegistry<DomainHandle>((h) => {
    if (!this.closed && this.handles.delete(h)) h.release();
  });
  private callbackIds: number[] = [];
  private closeCallbackRegistered = false;
  private closed = false;
  private closing: Promise<void> | null = null;

  private constructor(
    private readonly conn: ConnectPtr,
    readonly uri: string,
  ) {
    this.ctx = { queue: new CallQueue(), errors: new ErrorSlot() };
  }

  /**
   * Opens a read-write connection. The libvirt event loop is registered (once per process)
   * before the connection is opened, and runs until the connection is closed.
   */
  static async open(
    uri: string = process.env.LIBVIRT_DEFAULT_URI ?? 'qemu:///system',
    opts: OpenOptions = {},
  ): Promise<LibvirtConnection> {
    installGlobalErrorHandler();
    eventLoop.acquire(); // registers virEventRegisterDefaultImpl before virConnectOpen
    let ptr: ConnectPtr;
    try {
      ptr = await invokePtr(openContext, 'virConnectOpen', virConnectOpen, uri);
    } catch (err) {
      await eventLoop.release();
      throw err;
    }
    const c = new LibvirtConnection(ptr, uri);
    attachConnectionErrors(ptr, c.ctx.errors);
    attachHub(ptr, c.hub);
    try {
      await c.registerCallbacks(opts.events ?? true);
    } catch (err) {
      await c.close();
      throw err;
    }
    return c;
  }

  private async registerCallbacks(events: boolean): Promise<void> {
    const t = eventTrampolines();
    await invoke(
      this.ctx,
      'virConnectRegisterCloseCallback',
      virConnectRegisterCloseCallback,
      failsIfNegative,
      this.conn,
      t.close,
      null,
      null,
    );
    this.closeCallbackRegistered = true;
    if (!events) return;
    this.callbackIds.push(
      await invoke(
        this.ctx,
        'virConnectDomainEventRegisterAny',
        virConnectDomainEventRegisterAnyBlockJob,
        failsIfNegative,
        this.conn,
        null,
        DomainEventId.BLOCK_JOB_2,
        t.blockJob,
        null,
        null,
      ),
    );
    this.callbackIds.push(
      await invoke(
        this.ctx,
        'virConnectDomainEventRegisterAny',
        virConnectDomainEventRegisterAnyLifecycle,
        failsIfNegative,
        this.conn,
        null,
        DomainEventId.LIFECYCLE,
        t.lifecycle,
        null,
        null,
      ),
    );
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /**
   * Deregisters callbacks, frees remaining domain handles, closes the connection and stops the
   * event loop when no other connection uses it. Never throws; idempotent.
   */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    this.closed = true;
    // Let queued calls finish first (they hold the connection).
    await this.ctx.queue.run(() => Promise.resolve());
    for (const id of this.callbackIds.splice(0)) {
      await invoke(
        this.ctx,
        'virConnectDomainEventDeregisterAny',
        virConnectDomainEventDeregisterAny,
        failsIfNegative,
        this.conn,
        id,
      ).catch(() => undefined);
    }
    if (this.closeCallbackRegistered) {
      this.closeCallbackRegistered = false;
      const t = eventTrampolines();
      await invoke(
        this.ctx,
        'virConnectUnregisterCloseCallback',
        virConnectUnregisterCloseCallback,
        failsIfNegative,
        this.conn,
        t.close,
      ).catch(() => undefined);
    }
    for (const h of this.handles) h.release();
    this.handles.clear();
    this.hub.clear();
    detachHub(this.conn);
    // virConnectClose may do an RPC (connection teardown): run it on a worker thread.
    await callAsync(virConnectClose, this.conn).catch(() => undefined);
    detachConnectionErrors(this.conn);
    await eventLoop.release();
  }

  private assertOpen(): void {
    if (this.closed) throw new Error(`libvirt connection ${this.uri} is closed`);
  }

  /** @internal DomainOwner */
  track(handle: DomainHandle, domain: Domain): void {
    this.handles.add(handle);
    this.finalizer.register(domain, handle, handle);
  }

  /** @internal DomainOwner */
  untrack(handle: DomainHandle): void {
    this.handles.delete(handle);
    this.finalizer.unregister(handle);
  }

  private wrap(ptr: DomainPtr): Domain {
    return new Domain(this, new DomainHandle(ptr));
  }

  /** virConnectIsAlive: false once the connection to libvirtd is broken. */
  async isAlive(): Promise<boolean> {
    if (this.closed) return false;
    return (await invoke(this.ctx, 'virConnectIsAlive', virConnectIsAlive, failsIfNegative, this.conn)) === 1;
  }

  /** All domains, running and shut off, with their state. */
  async listDomains(): Promise<DomainSummary[]> {
    this.assertOpen();
    const out: [RawPtr | null] = [null];
    const n = await invoke(
      this.ctx,
      'virConnectListAllDomains',
      virConnectListAllDomains,
      failsIfNegative,
      this.conn,
      out,
      ListDomainsFlags.ACTIVE | ListDomainsFlags.INACTIVE,
    );
    const array = out[0];
    if (!array) return [];
    const ptrs = n > 0 ? decodePointerArray(array, n) : [];
    const result: DomainSummary[] = [];
    try {
      for (const p of ptrs) {
        const name = virDomainGetName(p) ?? '';
        const uuid = readUuid(p);
        const state: [number] = [0];
        const reason: [number] = [0];
        try {
          await invoke(
            this.ctx,
            'virDomainGetState',
            virDomainGetState,
            failsIfNegative,
            p,
            state,
            reason,
            0,
          );
        } catch (err) {
          if (isNoDomainError(err)) continue; // undefined between listing and asking
          throw err;
        }
        result.push({
          name,
          uuid,
          state: state[0] as DomainSummary['state'],
          stateName: nameOf(DomainState, state[0]).toLowerCase(),
          reason: reason[0],
        });
      }
    } finally {
      for (const p of ptrs) virDomainFree(p);
      libcFree(array);
    }
    return result;
  }

  async lookupByName(name: string): Promise<Domain> {
    this.assertOpen();
    return this.wrap(
      await invokePtr(this.ctx, 'virDomainLookupByName', virDomainLookupByName, this.conn, name),
    );
  }

  async lookupByUuid(uuid: string): Promise<Domain> {
    this.assertOpen();
    return this.wrap(
      await invokePtr(this.ctx, 'virDomainLookupByUUIDString', virDomainLookupByUUIDString, this.conn, uuid),
    );
  }

  /** lookupByName, but null instead of a VIR_ERR_NO_DOMAIN error. */
  async findByName(name: string): Promise<Domain | null> {
    try {
      return await this.lookupByName(name);
    } catch (err) {
      if (isNoDomainError(err)) return null;
      throw err;
    }
  }

  /** virDomainDefineXMLFlags (DomainDefineFlags.VALIDATE). */
  async defineXml(xml: string, flags = 0): Promise<Domain> {
    this.assertOpen();
    return this.wrap(
      await invokePtr(this.ctx, 'virDomainDefineXMLFlags', virDomainDefineXMLFlags, this.conn, xml, flags),
    );
  }

  /** BLOCK_JOB_2 events of every domain on this connection. Returns the unsubscribe function. */
  onBlockJob(listener: Listener<BlockJobEvent>): Disposer {
    return this.hub.blockJob.add(listener);
  }

  /** LIFECYCLE events of every domain on this connection. */
  onLifecycle(listener: Listener<LifecycleEventInfo>): Disposer {
    return this.hub.lifecycle.add(listener);
  }

  /** Called when the connection to libvirtd breaks (EOF, keepalive, error). */
  onClose(listener: Listener<CloseEventInfo>): Disposer {
    return this.hub.close.add(listener);
  }

  /** Where exceptions thrown by event listeners go (default: process warning). */
  set onListenerError(handler: (err: unknown) => void) {
    this.hub.onListenerError = handler;
  }

  /**
   * Subscribes first, so call this *before* starting the operation whose event you expect,
   * then await the returned promise.
   */
  waitForBlockJob(predicate: (e: BlockJobEvent) => boolean, timeoutMs: number): Promise<BlockJobEvent> {
    return waitForEvent((l) => this.onBlockJob(l), predicate, timeoutMs, 'block job event');
  }

  waitForLifecycle(
    predicate: (e: LifecycleEventInfo) => boolean,
    timeoutMs: number,
  ): Promise<LifecycleEventInfo> {
    return waitForEvent((l) => this.onLifecycle(l), predicate, timeoutMs, 'lifecycle event');
  }
}
