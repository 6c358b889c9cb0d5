// The chain as the image headers see it: `qemu-img info --backing-chain --output=json -U`.
// LEAF FIRST, like qemu-img prints it.
import path from 'node:path';
import { qemuImgInfo, type ImageInfo, type Qcow2Bitmap, type RunOptions } from '../qemu/qemu-img';
import { walkBackingChain } from './qcow2-header';

export interface Qcow2ChainEntry {
  filename: string;
  format: string;
  /** Backing reference exactly as stored in the header (relative names stay relative). */
  backingFilename?: string;
  /** The backing reference resolved by qemu (absolute when the image was opened by absolute path). */
  fullBackingFilename?: string;
  /** Backing format stored in the header (`-F`). */
  backingFormat?: string;
  virtualSize: number;
  actualSize?: number;
  /** Persistent dirty bitmaps (qcow2 only), when present. */
  bitmaps?: Qcow2Bitmap[];
  corrupt?: boolean;
}

export function toChainEntry(info: ImageInfo): Qcow2ChainEntry {
  const e: Qcow2ChainEntry = {
    filename: info.filename,
    format: info.format,
    virtualSize: info['virtual-size'],
  };
  if (info['backing-filename'] !== undefined) e.backingFilename = info['backing-filename'];
  if (info['full-backing-filename'] !== undefined) e.fullBackingFilename = info['full-backing-filename'];
  if (info['backing-filename-format'] !== undefined) e.backingFormat = info['backing-filename-format'];
  if (info['actual-size'] !== undefined) e.actualSize = info['actual-size'];
  const data = info['format-specific']?.data;
  if (data?.bitmaps !== undefined) e.bitmaps = data.bitmaps;
  if (data?.corrupt !== undefined) e.corrupt = data.corrupt;
  return e;
}

/** `qemu-img info --backing-chain --output=json -U <path>`, leaf first. Throws QemuImgError if any link cannot be opened. */
export async function qcow2Chain(imagePath: string, opts: RunOptions = {}): Promise<Qcow2ChainEntry[]> {
  const infos = await qemuImgInfo(path.resolve(imagePath), { ...opts, backingChain: true, forceShare: true });
  return infos.map(toChainEntry);
}

export interface WalkedChain {
  /** Leaf first, as far as it could be followed. */
  entries: Qcow2ChainEntry[];
  /** The first file of the chain that does not exist (the walk stopped there), if any. */
  missing?: string;
}

/**
 * Like qcow2Chain but tolerant of a broken chain: one `qemu-img info` per file, following the
 * backing references (resolved against each image's directory), stopping at the first missing
 * file. Backing formats come from the headers (`-F`), like qemu itself would open them.
 */
export async function walkQcow2Chain(imagePath: string, opts: RunOptions = {}): Promise<WalkedChain> {
  const { steps, missing } = await walkBackingChain(imagePath, async (file, declared) => {
    const format = declared === 'raw' || declared === 'qcow2' ? declared : undefined;
    const [info] = await qemuImgInfo(file, { ...opts, forceShare: true, format });
    if (!info) return undefined;
    const e = toChainEntry(info);
    return { value: e, backingFilename: e.backingFilename, backingFormat: e.backingFormat };
  });
  return { entries: steps.map((s) => s.value), ...(missing !== undefined ? { missing } : {}) };
}
