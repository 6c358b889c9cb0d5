// The files a chain opens, from the qcow2 headers read here (QEMU's docs/interop/qcow2.txt) instead of one
// `qemu-img info` process per file: the deletion guard walks every domain's persistent chain on each read
// of the domains, which was ~20 qemu-img processes per snapshot removal at 8 removals at once (issue 13).
// Only what a walk needs (format, backing name and format); whatever this reader cannot vouch for (another
// format's header, a header it does not parse) goes to qemu-img, as before.
import fs from 'node:fs/promises';
import path from 'node:path';
import { qemuImgInfo, type RunOptions } from '../qemu/qemu-img';
import { errnoCode } from '../storage/errors';

const QCOW2_MAGIC = 0x514649fb; // "QFI\xfb"
const EXT_END = 0;
const EXT_BACKING_FORMAT = 0xe2792aca;
/** The header, its extensions and the backing name sit in the first cluster; 64 KiB is qcow2's default. */
const HEAD_BYTES = 64 * 1024;
/** QEMU refuses longer backing names (1023 bytes, block/qcow2.c). */
const MAX_BACKING_NAME = 1023;

export interface ImageLink {
  format: 'qcow2' | 'raw';
  /** As stored in the header: relative names are relative to this image's directory. */
  backingFilename?: string;
  /** The header's backing format (`-F`), if any. */
  backingFormat?: string;
}

const hasQcow2Magic = (head: Buffer): boolean => head.length >= 4 && head.readUInt32BE(0) === QCOW2_MAGIC;

/** The header of a qcow2 image (version 2 or 3) in `head`; undefined when it is not one this parser knows. */
export function parseQcow2Header(head: Buffer): ImageLink | undefined {
  if (head.length < 72 || !hasQcow2Magic(head)) return undefined;
  const version = head.readUInt32BE(4);
  if (version !== 2 && version !== 3) return undefined;
  const link: ImageLink = { format: 'qcow2' };
  const nameOffset = Number(head.readBigUInt64BE(8));
  const nameSize = head.readUInt32BE(16);
  if (nameOffset !== 0 && nameSize > 0) {
    if (nameSize > MAX_BACKING_NAME || nameOffset + nameSize > head.length) return undefined;
    link.backingFilename = head.toString('utf8', nameOffset, nameOffset + nameSize);
  }
  let at = version === 2 ? 72 : head.length >= 104 ? head.readUInt32BE(100) : -1;
  if (at < 72) return undefined;
  for (;;) {
    if (at + 8 > head.length) return undefined;
    const type = head.readUInt32BE(at);
    const len = head.readUInt32BE(at + 4);
    if (type === EXT_END) break;
    if (at + 8 + len > head.length) return undefined;
    if (type === EXT_BACKING_FORMAT) link.backingFormat = head.toString('utf8', at + 8, at + 8 + len);
    at += 8 + Math.ceil(len / 8) * 8;
  }
  return link;
}

async function readHead(file: string): Promise<Buffer> {
  const fh = await fs.open(file, 'r');
  try {
    const buf = Buffer.alloc(HEAD_BYTES);
    const { bytesRead } = await fh.read(buf, 0, HEAD_BYTES, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/**
 * How QEMU opens `file`: with `format` when one is declared (a parent's `-F`), else probed (a qcow2 magic is
 * qcow2, like qemu-img's probe; `rawHint`: its user opens it raw, e.g. the domain XML's driver type, which
 * settles a file with no qcow2 magic). qemu-img answers what this reader does not parse, a qcow2 magic with a
 * header it refuses too: a backing name in there may still be opened by another user or the next boot.
 */
export async function imageLink(
  file: string,
  format: string | undefined,
  rawHint = false,
  opts: RunOptions = {},
): Promise<ImageLink> {
  if (format === 'raw') return { format: 'raw' };
  const head = await readHead(file);
  const parsed = parseQcow2Header(head);
  if (parsed) return parsed;
  if (format === undefined && rawHint && !hasQcow2Magic(head)) return { format: 'raw' };
  // Another declared format than these two: probed, as walkQcow2Chain does.
  const declared = format === 'qcow2' ? format : undefined;
  const [info] = await qemuImgInfo(file, { ...opts, forceShare: true, format: declared });
  const link: ImageLink = { format: info?.format === 'qcow2' ? 'qcow2' : 'raw' };
  if (info?.['backing-filename'] !== undefined) link.backingFilename = info['backing-filename'];
  if (info?.['backing-filename-format'] !== undefined) link.backingFormat = info['backing-filename-format'];
  return link;
}

/** One image of a walk: what the reader says of it, and the backing reference its header stores. */
export interface WalkStep<T> {
  value: T;
  backingFilename?: string;
  backingFormat?: string;
}

/**
 * The chain below `imagePath` (itself first), each image read by `read` (given the format its parent
 * declares, if any; undefined: the walk stops there), backing references resolved against each image's
 * directory, stopping at the first missing file. The one walk behind walkChainFiles and walkQcow2Chain.
 */
export async function walkBackingChain<T>(
  imagePath: string,
  read: (file: string, format: string | undefined, top: boolean) => Promise<WalkStep<T> | undefined>,
): Promise<{ steps: { file: string; value: T }[]; missing?: string }> {
  const steps: { file: string; value: T }[] = [];
  const seen = new Set<string>();
  let cur: string | undefined = path.resolve(imagePath);
  let format: string | undefined;
  while (cur !== undefined) {
    if (seen.has(cur) || steps.length > 1000) break;
    seen.add(cur);
    try {
      await fs.stat(cur);
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') return { steps, missing: cur };
      throw e;
    }
    const step = await read(cur, format, steps.length === 0);
    if (!step) break;
    steps.push({ file: cur, value: step.value });
    if (step.backingFilename === undefined) break;
    format = step.backingFormat;
    cur = path.isAbsolute(step.backingFilename)
      ? step.backingFilename
      : path.resolve(path.dirname(cur), step.backingFilename);
  }
  return { steps };
}

export interface WalkedFiles {
  /** Absolute paths, leaf first, as far as the chain could be followed. */
  files: string[];
  /** The first file of the chain that does not exist (the walk stopped there), if any. */
  missing?: string;
}

/**
 * The files of the chain below `imagePath` (itself first) as its headers name them: the files
 * walkQcow2Chain lists, without a process per file. `rawHint`: see imageLink.
 */
export async function walkChainFiles(
  imagePath: string,
  rawHint = false,
  opts: RunOptions = {},
): Promise<WalkedFiles> {
  const { steps, missing } = await walkBackingChain(imagePath, async (file, format, top) => {
    const link = await imageLink(file, format, top && rawHint, opts);
    return { value: link, ...link };
  });
  return { files: steps.map((s) => s.file), ...(missing !== undefined ? { missing } : {}) };
}
