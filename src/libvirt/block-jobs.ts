// Block jobs: commit, pull/rebase, job info, abort/pivot, speed. Bandwidth is always in bytes/s
// (the *_BANDWIDTH_BYTES flags are always set); 0 means unlimited.
// A job's completion/readiness is reported by the BLOCK_JOB_2 event (see events.ts); info() can
// be polled as a fallback (an active commit or copy is READY once cur === end and the job stays).
import type { BlockJobType } from './constants';
import {
  BlockCommitFlags,
  BlockJobAbortFlags,
  BlockJobInfoFlags,
  BlockJobSetSpeedFlags,
  BlockPullFlags,
  BlockRebaseFlags,
} from './constants';
import type { DomainPtr, VirBlockJobInfoFields } from './ffi';
import {
  virDomainBlockCommit,
  virDomainBlockJobAbort,
  virDomainBlockJobSetSpeed,
  virDomainBlockPull,
  virDomainBlockRebase,
  virDomainGetBlockJobInfo,
} from './ffi';
import type { CallContext } from './invoke';
import { failsIfNegative, invoke } from './invoke';

export interface BlockCommitOptions {
  /** ACTIVE: top is the active layer; the job becomes READY and needs blockJobAbort({pivot}). */
  active?: boolean;
  /** RELATIVE: keep backing references relative when rewriting the image above top. */
  relative?: boolean;
  /** SHALLOW: with base null, commit only top into its immediate backing file. */
  shallow?: boolean;
  /** DELETE: let libvirt delete the committed files (livemerge deletes them itself). */
  delete?: boolean;
  /** Extra raw VIR_DOMAIN_BLOCK_COMMIT_* flags, OR-ed in. */
  flags?: number;
}

export interface BlockRebaseOptions {
  shallow?: boolean;
  reuseExt?: boolean;
  copy?: boolean;
  copyRaw?: boolean;
  copyDev?: boolean;
  /** RELATIVE: keep the new backing reference relative. */
  relative?: boolean;
  /** Extra raw VIR_DOMAIN_BLOCK_REBASE_* flags, OR-ed in. */
  flags?: number;
}

export interface BlockJobAbortOptions {
  /** PIVOT: finish a READY copy/active commit by switching the disk to the new image. */
  pivot?: boolean;
  /** ASYNC: return at once; completion comes as a BLOCK_JOB_2 event. */
  async?: boolean;
}

export interface BlockJobInfo {
  type: BlockJobType;
  /** bytes/s (VIR_DOMAIN_BLOCK_JOB_INFO_BANDWIDTH_BYTES), 0 = unlimited. */
  bandwidth: number;
  cur: number;
  end: number;
}

/** The native handle and call context of the domain a block job function operates on. */
export interface DomainTarget {
  readonly ptr: DomainPtr;
  readonly ctx: CallContext;
}

function bits(opts: Record<string, boolean | number | undefined>, table: Record<string, number>): number {
  let f = 0;
  for (const [key, flag] of Object.entries(table)) if (opts[key] === true) f |= flag;
  return f;
}

function checkBandwidth(bytesPerSec: number): number {
  if (!Number.isSafeInteger(bytesPerSec) || bytesPerSec < 0)
    throw new RangeError(`bandwidth must be a non-negative integer, got ${bytesPerSec}`);
  return bytesPerSec;
}

export async function blockCommit(
  d: DomainTarget,
  disk: string,
  base: string | null,
  top: string | null,
  bandwidthBytesPerSec = 0,
  opts: BlockCommitOptions = {},
): Promise<void> {
  const flags =
    BlockCommitFlags.BANDWIDTH_BYTES |
    bits(
      { ...opts },
      {
        active: BlockCommitFlags.ACTIVE,
        relative: BlockCommitFlags.RELATIVE,
        shallow: BlockCommitFlags.SHALLOW,
        delete: BlockCommitFlags.DELETE,
      },
    ) |
    (opts.flags ?? 0);
  await invoke(
    d.ctx,
    'virDomainBlockCommit',
    virDomainBlockCommit,
    failsIfNegative,
    d.ptr,
    disk,
    base,
    top,
    checkBandwidth(bandwidthBytesPerSec),
    flags,
  );
}

export async function blockRebase(
  d: DomainTarget,
  disk: string,
  base: string | null,
  bandwidthBytesPerSec = 0,
  opts: BlockRebaseOptions = {},
): Promise<void> {
  const flags =
    BlockRebaseFlags.BANDWIDTH_BYTES |
    bits(
      { ...opts },
      {
        shallow: BlockRebaseFlags.SHALLOW,
        reuseExt: BlockRebaseFlags.REUSE_EXT,
        copy: BlockRebaseFlags.COPY,
        copyRaw: BlockRebaseFlags.COPY_RAW,
        copyDev: BlockRebaseFlags.COPY_DEV,
        relative: BlockRebaseFlags.RELATIVE,
      },
    ) |
    (opts.flags ?? 0);
  await invoke(
    d.ctx,
    'virDomainBlockRebase',
    virDomainBlockRebase,
    failsIfNegative,
    d.ptr,
    disk,
    base,
    checkBandwidth(bandwidthBytesPerSec),
    flags,
  );
}

/** Pulls the whole backing chain into the active layer (blockRebase with base null is the same). */
export async function blockPull(
  d: DomainTarget,
  disk: string,
  bandwidthBytesPerSec = 0,
  flags = 0,
): Promise<void> {
  await invoke(
    d.ctx,
    'virDomainBlockPull',
    virDomainBlockPull,
    failsIfNegative,
    d.ptr,
    disk,
    checkBandwidth(bandwidthBytesPerSec),
    BlockPullFlags.BANDWIDTH_BYTES | flags,
  );
}

/** The disk's current block job, or null when it has none. */
export async function blockJobInfo(d: DomainTarget, disk: string): Promise<BlockJobInfo | null> {
  const out: Record<string, unknown> = {};
  const rc = await invoke(
    d.ctx,
    'virDomainGetBlockJobInfo',
    virDomainGetBlockJobInfo,
    failsIfNegative,
    d.ptr,
    disk,
    out,
    BlockJobInfoFlags.BANDWIDTH_BYTES,
  );
  if (rc === 0) return null;
  const info = out as unknown as VirBlockJobInfoFields;
  return {
    type: info.type as BlockJobType,
    bandwidth: Number(info.bandwidth),
    cur: Number(info.cur),
    end: Number(info.end),
  };
}

export async function blockJobAbort(
  d: DomainTarget,
  disk: string,
  opts: BlockJobAbortOptions = {},
): Promise<void> {
  const flags = (opts.pivot ? BlockJobAbortFlags.PIVOT : 0) | (opts.async ? BlockJobAbortFlags.ASYNC : 0);
  await invoke(d.ctx, 'virDomainBlockJobAbort', virDomainBlockJobAbort, failsIfNegative, d.ptr, disk, flags);
}

export async function blockJobSetSpeed(d: DomainTarget, disk: string, bytesPerSec: number): Promise<void> {
  await invoke(
    d.ctx,
    'virDomainBlockJobSetSpeed',
    virDomainBlockJobSetSpeed,
    failsIfNegative,
    d.ptr,
    disk,
    checkBandwidth(bytesPerSec),
    BlockJobSetSpeedFlags.BANDWIDTH_BYTES,
  );
}
