// A libvirt domain handle (virDomainPtr) with typed, async methods.
//
// Each Domain owns one reference to its virDomainPtr. Call free() when done; the owning
// connection frees whatever is left when it closes, and a FinalizationRegistry frees handles
// that were garbage-collected while the connection stays open. Name and UUID are read once
// (local calls, no RPC).
import type {
  BlockCommitOptions,
  BlockJobAbortOptions,
  BlockJobInfo,
  BlockRebaseOptions,
  DomainTarget,
} from './block-jobs';
import {
  blockCommit,
  blockJobAbort,
  blockJobInfo,
  blockJobSetSpeed,
  blockPull,
  blockRebase,
} from './block-jobs';
import type { DomainState } from './constants';
import { DOMAIN_METADATA_ELEMENT, DomainAffect, DomainDestroyFlags, DomainXmlFlags } from './constants';
import { ErrorCode } from './error-codes';
import { LibvirtError } from './errors';
import type { DomainPtr } from './ffi';
import {
  virDomainCreateWithFlags,
  virDomainDestroyFlags,
  virDomainFree,
  virDomainGetMetadata,
  virDomainGetName,
  virDomainGetState,
  virDomainGetUUIDString,
  virDomainGetXMLDesc,
  virDomainIsActive,
  virDomainSnapshotCreateXML,
  virDomainSetMetadata,
  virDomainSnapshotFree,
  virDomainUndefineFlags,
} from './ffi';
import type { CallContext } from './invoke';
import { failsIfNegative, invoke, invokePtr } from './invoke';

/** Native reference shared between a Domain, its connection's registry and the finalizer. */
export class DomainHandle {
  private freed = false;
  constructor(readonly ptr: DomainPtr) {}

  /** virDomainFree (local unref; the connection itself is still referenced, so no RPC). */
  release(): void {
    if (this.freed) return;
    this.freed = true;
    virDomainFree(this.ptr);
  }

  get isFreed(): boolean {
    return this.freed;
  }
}

/** What a Domain needs from its connection. */
export interface DomainOwner {
  readonly ctx: CallContext;
  track(handle: DomainHandle, domain: Domain): void;
  untrack(handle: DomainHandle): void;
}

export interface DomainStateInfo {
  state: DomainState;
  /** State-specific reason (virDomainRunningReason, virDomainShutoffReason, ...). */
  reason: number;
}

export interface XmlOptions {
  /** VIR_DOMAIN_XML_INACTIVE: the persistent definition instead of the live one. */
  inactive?: boolean;
  /** VIR_DOMAIN_XML_SECURE: include security-sensitive data. */
  secure?: boolean;
  /** Extra raw VIR_DOMAIN_XML_* flags. */
  flags?: number;
}

export function readUuid(ptr: DomainPtr): string {
  const buf = Buffer.alloc(37);
  if (virDomainGetUUIDString(ptr, buf) !== 0) throw new Error('virDomainGetUUIDString failed');
  const nul = buf.indexOf(0);
  return buf.toString('latin1', 0, nul < 0 ? buf.length : nul);
}

export class Domain implements DomainTarget {
  readonly name: string;
  readonly uuid: string;
  private readonly handle: DomainHandle;

  constructor(
    private readonly owner: DomainOwner,
    handle: DomainHandle,
  ) {
    this.handle = handle;
    this.name = virDomainGetName(handle.ptr) ?? '';
    this.uuid = readUuid(handle.ptr);
    owner.track(handle, this);
  }

  /** @internal native pointer for block-jobs.ts */
  get ptr(): DomainPtr {
    if (this.handle.isFreed) throw new Error(`domain ${this.name} handle was freed`);
    return this.handle.ptr;
  }

  /** @internal */
  get ctx(): CallContext {
    return this.owner.ctx;
  }

  /** Releases the native handle. The Domain must not be used afterwards. Idempotent. */
  free(): void {
    this.owner.untrack(this.handle);
    this.handle.release();
  }

  async state(): Promise<DomainStateInfo> {
    const state: [number] = [0];
    const reason: [number] = [0];
    await invoke(
      this.ctx,
      'virDomainGetState',
      virDomainGetState,
      failsIfNegative,
      this.ptr,
      state,
      reason,
      0,
    );
    return { state: state[0] as DomainState, reason: reason[0] };
  }

  async isActive(): Promise<boolean> {
    return (await invoke(this.ctx, 'virDomainIsActive', virDomainIsActive, failsIfNegative, this.ptr)) === 1;
  }

  /** The domain XML (live unless `inactive`). The C string is freed with libc free(). */
  async xml(opts: XmlOptions = {}): Promise<string> {
    const flags =
      (opts.inactive ? DomainXmlFlags.INACTIVE : 0) |
      (opts.secure ? DomainXmlFlags.SECURE : 0) |
      (opts.flags ?? 0);
    return invokePtr(this.ctx, 'virDomainGetXMLDesc', virDomainGetXMLDesc, this.ptr, flags);
  }

  /** The running domain's metadata element of namespace `uri`, or null when it has none. */
  async liveMetadata(uri: string): Promise<string | null> {
    try {
      return await invokePtr(
        this.ctx,
        'virDomainGetMetadata',
        virDomainGetMetadata,
        this.ptr,
        DOMAIN_METADATA_ELEMENT,
        uri,
        DomainAffect.LIVE,
      );
    } catch (err) {
      if (err instanceof LibvirtError && err.code === ErrorCode.NO_DOMAIN_METADATA) return null;
      throw err;
    }
  }

  /** Sets (xml: one element, prefixed `key`) or removes (null) the running domain's element of `uri`. */
  async setLiveMetadata(uri: string, key: string, xml: string | null): Promise<void> {
    await invoke(
      this.ctx,
      'virDomainSetMetadata',
      virDomainSetMetadata,
      failsIfNegative,
      this.ptr,
      DOMAIN_METADATA_ELEMENT,
      xml,
      xml === null ? null : key,
      uri,
      DomainAffect.LIVE,
    );
  }

  /** Starts the defined domain (virDomainCreateWithFlags; DomainStartFlags.PAUSED, ...). */
  async create(flags = 0): Promise<void> {
    await invoke(
      this.ctx,
      'virDomainCreateWithFlags',
      virDomainCreateWithFlags,
      failsIfNegative,
      this.ptr,
      flags,
    );
  }

  /** Hard stop (virDomainDestroyFlags). */
  async destroy(flags: number = DomainDestroyFlags.DEFAULT): Promise<void> {
    await invoke(this.ctx, 'virDomainDestroyFlags', virDomainDestroyFlags, failsIfNegative, this.ptr, flags);
  }

  /** Removes the persistent definition (DomainUndefineFlags.SNAPSHOTS_METADATA | ...). */
  async undefine(flags = 0): Promise<void> {
    await invoke(
      this.ctx,
      'virDomainUndefineFlags',
      virDomainUndefineFlags,
      failsIfNegative,
      this.ptr,
      flags,
    );
  }

  /**
   * virDomainSnapshotCreateXML (SnapshotCreateFlags.DISK_ONLY | NO_METADATA | ATOMIC | REUSE_EXT ...).
   * The returned snapshot handle is freed at once; with NO_METADATA libvirt keeps nothing anyway.
   */
  async snapshotCreateXml(xml: string, flags = 0): Promise<void> {
    const snap = await invokePtr(
      this.ctx,
      'virDomainSnapshotCreateXML',
      virDomainSnapshotCreateXML,
      this.ptr,
      xml,
      flags,
    );
    virDomainSnapshotFree(snap);
  }

  blockCommit(
    disk: string,
    base: string | null,
    top: string | null,
    bandwidthBytesPerSec = 0,
    opts: BlockCommitOptions = {},
  ): Promise<void> {
    return blockCommit(this, disk, base, top, bandwidthBytesPerSec, opts);
  }

  blockRebase(
    disk: string,
    base: string | null,
    bandwidthBytesPerSec = 0,
    opts: BlockRebaseOptions = {},
  ): Promise<void> {
    return blockRebase(this, disk, base, bandwidthBytesPerSec, opts);
  }

  blockPull(disk: string, bandwidthBytesPerSec = 0, flags = 0): Promise<void> {
    return blockPull(this, disk, bandwidthBytesPerSec, flags);
  }

  blockJobInfo(disk: string): Promise<BlockJobInfo | null> {
    return blockJobInfo(this, disk);
  }

  blockJobAbort(disk: string, opts: BlockJobAbortOptions = {}): Promise<void> {
    return blockJobAbort(this, disk, opts);
  }

  blockJobSetSpeed(disk: string, bytesPerSec: number): Promise<void> {
    return blockJobSetSpeed(this, disk, bytesPerSec);
  }
}
