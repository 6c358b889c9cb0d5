// Step 3 of a backup (DESIGN.md "Backups"), per disk: the blocks changed since the parent backup P are
// the union of bitmap `livemerge-<P>` over the frozen images that carry it, walking down from the frozen
// leaf. Anything that makes that union untrustworthy makes this disk (only this disk) a full backup,
// with the reason. An incremental gets a throwaway qcow2 overlay over the frozen leaf carrying the
// unioned bitmap under the same name: the copy reads from it, an NBD export offers it.
import fs from 'node:fs/promises';
import path from 'node:path';
import { mergeBitmapFrom, toPersistentBitmaps, type PersistentBitmap } from '../merge/cold/bitmaps';
import { qemuImgCreate, qemuImgInfo, runQemuImg, type RunOptions } from '../qemu/qemu-img';
import type { Format } from '../schemas/volume';
import type { DiskBackupPlan, FrozenDisk } from './types';
import { dirtyExtents } from './dirty-map';
import { dataExtents, totalLength } from './extents';

export type PlannedDisk = DiskBackupPlan & { scratch?: string };

export interface PlanOptions {
  /** `livemerge-<parent>`; absent: a full backup (there is no parent, or a full one was asked for). */
  bitmap?: string;
  /** Where the scratch overlay is made (`<imageId>.scratch.qcow2`). */
  scratchDir: string;
  /** The reason a full backup reports when no bitmap is asked for (default "no parent backup"). */
  reasonIfFull?: string;
  signal?: AbortSignal;
}

/** The scratch overlay's path for a disk (one per disk and scratch directory). */
export function scratchPath(disk: FrozenDisk, scratchDir: string): string {
  return path.join(scratchDir, `${disk.imageId}.scratch.qcow2`);
}

/**
 * The bitmaps of a frozen image, as listBitmaps reads them but WITHOUT force-share (-U): a frozen image
 * is only open read-only (as the VM's backing file), which lets readers in; an image someone holds for
 * writing is not frozen, and the image lock makes that an error here instead of a silently wrong plan.
 */
async function frozenBitmaps(file: string, format: Format, opts: RunOptions): Promise<PersistentBitmap[]> {
  const [info] = await qemuImgInfo(file, { ...opts, format, forceShare: false });
  return toPersistentBitmaps(info?.['format-specific']?.data?.bitmaps ?? []);
}

/** Why the bitmap cannot be trusted on this chain (full backup), or the run of images carrying it, leaf first. */
export type BitmapRun = { ok: true; run: string[]; granularity: number } | { ok: false; reason: string };

export async function findBitmapRun(
  disk: FrozenDisk,
  bitmap: string,
  opts: RunOptions = {},
): Promise<BitmapRun> {
  const chain = disk.chain;
  const leaf = chain[chain.length - 1];
  if (!leaf) return { ok: false, reason: 'the frozen chain is empty' };
  if (leaf.format === 'raw')
    return { ok: false, reason: `a raw image cannot hold a bitmap (the frozen leaf ${leaf.path} is raw)` };
  const carried: Array<PersistentBitmap | undefined> = [];
  for (const img of chain) {
    const bms = img.format === 'raw' ? [] : await frozenBitmaps(img.path, img.format, opts);
    carried.push(bms.find((b) => b.name === bitmap));
  }
  const leafBitmap = carried[chain.length - 1];
  if (!leafBitmap)
    return { ok: false, reason: `bitmap ${bitmap} is missing on the frozen leaf ${leaf.path}` };
  const run: string[] = [];
  let i = chain.length - 1;
  for (; i >= 0; i--) {
    const img = chain[i];
    const b = carried[i];
    if (!img || !b || img.format === 'raw') break;
    if (b.inconsistent)
      return {
        ok: false,
        reason: `bitmap ${bitmap} on ${img.path} is inconsistent (in use: QEMU did not close the image)`,
      };
    run.push(img.path);
  }
  // Below the run nothing may carry it: an image without it above one with it lost the writes in between.
  const stop = chain[i];
  for (let j = i - 1; j >= 0; j--) {
    const below = chain[j];
    if (stop && below && carried[j]) {
      return stop.format === 'raw'
        ? {
            ok: false,
            reason: `a raw image cannot hold a bitmap (${stop.path}, inside the run of ${bitmap}, is raw)`,
          }
        : {
            ok: false,
            reason: `gap: ${stop.path} lacks bitmap ${bitmap} which ${below.path} below it carries`,
          };
    }
  }
  return { ok: true, run, granularity: leafBitmap.granularity };
}

/**
 * Decides full or incremental for one frozen disk and computes its extents. Idempotent: the scratch
 * overlay is made afresh each call (an earlier one is removed first).
 */
export async function planDiskBackup(disk: FrozenDisk, opts: PlanOptions): Promise<PlannedDisk> {
  const run: RunOptions = { signal: opts.signal };
  const leaf = disk.chain[disk.chain.length - 1];
  if (!leaf) throw new Error(`disk ${disk.target}: the frozen chain is empty`);
  const scratch = scratchPath(disk, opts.scratchDir);
  await fs.rm(scratch, { force: true });
  const base = { target: disk.target, imageId: disk.imageId };

  const full = async (reason: string): Promise<PlannedDisk> => {
    const extents = await dataExtents(leaf.path, leaf.format, run);
    return { ...base, mode: 'full', reason, extents, changedBytes: totalLength(extents) };
  };
  if (opts.bitmap === undefined) return full(opts.reasonIfFull ?? 'no parent backup');
  const found = await findBitmapRun(disk, opts.bitmap, run);
  if (!found.ok) return full(found.reason);

  try {
    // A disabled bitmap in the overlay: nothing writes to it, and a read-only export accepts it either way.
    await qemuImgCreate(
      {
        path: scratch,
        format: 'qcow2',
        size: disk.capacity,
        backing: { file: leaf.path, format: leaf.format },
      },
      run,
    );
    await runQemuImg(
      ['bitmap', '--add', '-g', String(found.granularity), '--disable', '-f', 'qcow2', scratch, opts.bitmap],
      run,
    );
    // A bitwise OR per frozen image; the frozen images are only opened read-only.
    for (const src of found.run) await mergeBitmapFrom(scratch, src, opts.bitmap, run);
    const extents = await dirtyExtents(scratch, opts.bitmap, { signal: opts.signal });
    return {
      ...base,
      mode: 'incremental',
      bitmap: opts.bitmap,
      extents,
      changedBytes: totalLength(extents),
      scratch,
    };
  } catch (e) {
    await fs.rm(scratch, { force: true });
    throw e;
  }
}

/** Removes a plan's scratch overlay (idempotent; a full plan has none). */
export async function discardScratch(plan: { scratch?: string }): Promise<void> {
  if (plan.scratch) await fs.rm(plan.scratch, { force: true });
}
