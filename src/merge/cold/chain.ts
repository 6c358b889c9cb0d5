// The chain a cold merge works on: validation of the request (pure) and checks of the qcow2
// headers on disk against it.
import fs from 'node:fs/promises';
import path from 'node:path';
import { ChainMismatch, InvalidColdMergeRequest } from './errors';
import type { RunOptions } from '../../qemu/qemu-img';
import type { Format } from '../../schemas/volume';
import { imageHeader, type ImageHeader } from '../../qemu/qemu-img';

export interface ChainVolume {
  /** File name inside `dir` (the qcow2 backing references are exactly these names). */
  readonly file: string;
  readonly format: Format;
}

export interface ColdMergeRequest {
  /** Absolute directory holding every volume of the image. */
  readonly dir: string;
  /** The image's whole chain, base first (chain[0] is the root, the last one the leaf). */
  readonly chain: readonly ChainVolume[];
  readonly baseIndex: number;
  readonly topIndex: number;
  /** Copy rate limit of the commit in bytes per second (qemu-img commit -r); rebase has none. */
  readonly rateLimitBytesPerSec?: number;
}

// A plain file name: no directory part, no qemu protocol prefix ("nbd:", "json:{...}"), no
// option-looking or hidden-dot tricks. Volume ids (UUIDs) always pass.
const FILE_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}$/;

export function validateRequest(req: ColdMergeRequest): void {
  const bad = (msg: string): never => {
    throw new InvalidColdMergeRequest(msg);
  };
  if (typeof req.dir !== 'string' || !path.isAbsolute(req.dir))
    bad(`dir must be an absolute path: ${req.dir}`);
  const rawChain: unknown = req.chain;
  if (!Array.isArray(rawChain)) bad('chain must be an array');
  const chain: readonly ChainVolume[] = req.chain;
  const { baseIndex, topIndex } = req;
  if (
    req.rateLimitBytesPerSec !== undefined &&
    !(Number.isSafeInteger(req.rateLimitBytesPerSec) && req.rateLimitBytesPerSec > 0)
  )
    bad(`rateLimitBytesPerSec must be a positive integer: ${req.rateLimitBytesPerSec}`);
  if (chain.length < 2) bad('chain must list at least two volumes');
  if (!Number.isInteger(baseIndex) || !Number.isInteger(topIndex)) bad('baseIndex/topIndex must be integers');
  if (baseIndex < 0 || topIndex >= chain.length || baseIndex >= topIndex) {
    bad(`need 0 <= baseIndex < topIndex < ${chain.length}, got base ${baseIndex}, top ${topIndex}`);
  }
  const seen = new Set<string>();
  chain.forEach((v, i) => {
    if (!FILE_NAME.test(v.file) || v.file.includes('..'))
      bad(`chain[${i}]: not a plain file name: ${v.file}`);
    if (seen.has(v.file)) bad(`chain[${i}]: ${v.file} appears twice`);
    seen.add(v.file);
    if (v.format !== 'raw' && v.format !== 'qcow2') bad(`chain[${i}]: unknown format ${String(v.format)}`);
    if (i > 0 && v.format !== 'qcow2') bad(`chain[${i}]: only the root of a chain may be raw`);
  });
}

export function vol(req: ColdMergeRequest, index: number): ChainVolume {
  const v = req.chain[index];
  if (!v) throw new InvalidColdMergeRequest(`chain has no index ${index}`);
  return v;
}

export function volPath(req: ColdMergeRequest, index: number): string {
  return path.join(req.dir, vol(req, index).file);
}

/** Header of chain[index], or null when the file does not exist. Refuses anything but a regular file. */
export async function readVolume(
  req: ColdMergeRequest,
  index: number,
  opts: RunOptions,
): Promise<ImageHeader | null> {
  const v = vol(req, index);
  const p = volPath(req, index);
  try {
    const st = await fs.lstat(p);
    if (!st.isFile()) throw new ChainMismatch(v.file, 'not a regular file');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  return imageHeader(p, v.format, opts);
}

/** Does the header of `info` name `parent` (file and format) as its backing file? null parent = no backing. */
export function backsOnto(info: ImageHeader, parent: ChainVolume | null): boolean {
  if (parent === null) return info.backingFile === null;
  return info.backingFile === parent.file && info.backingFormat === parent.format;
}

export function describeBacking(info: ImageHeader): string {
  return info.backingFile === null
    ? 'no backing file'
    : `backing ${info.backingFile} (${info.backingFormat ?? 'no format'})`;
}

export interface ChainProblem {
  file: string;
  detail: string;
}

/**
 * The first disagreement between `chain` (base first, files in req.dir) and the qcow2 headers on
 * disk, or null when every volume exists, chain[0] has no backing file and each chain[i] names
 * chain[i-1] (file and format) as its backing file. Read-only (`qemu-img info -U`).
 */
export async function chainProblem(
  req: ColdMergeRequest,
  chain: readonly ChainVolume[],
  opts: RunOptions,
): Promise<ChainProblem | null> {
  for (const [i, v] of chain.entries()) {
    const info = await readVolume({ ...req, chain }, i, opts);
    if (!info) return { file: v.file, detail: 'volume file is missing' };
    const parent = chain[i - 1] ?? null;
    if (!backsOnto(info, parent)) {
      const want = parent ? `backing ${parent.file} (${parent.format})` : 'no backing file';
      return { file: v.file, detail: `expected ${want}, found ${describeBacking(info)}` };
    }
  }
  return null;
}

/**
 * Which form the headers show: 'before' (exactly `req.chain`) or 'after' (exactly `after`, the
 * chain the merge produces). `after` null: the finished merge leaves no trace in any header, so
 * only 'before' can be recognised. Neither -> ChainMismatch naming both disagreements.
 */
export async function chainForm(
  req: ColdMergeRequest,
  after: readonly ChainVolume[] | null,
  opts: RunOptions,
): Promise<'before' | 'after'> {
  const before = await chainProblem(req, req.chain, opts);
  if (!before) return 'before';
  if (after) {
    const afterProblem = await chainProblem(req, after, opts);
    if (!afterProblem) return 'after';
    throw new ChainMismatch(
      before.file,
      `headers match neither the chain before the merge (${before.file}: ${before.detail}) ` +
        `nor the chain after it (${afterProblem.file}: ${afterProblem.detail})`,
    );
  }
  throw new ChainMismatch(before.file, before.detail);
}
