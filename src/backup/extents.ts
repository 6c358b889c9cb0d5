// Extent arithmetic and the allocation map of an image (`qemu-img map --output=json`): what a full
// backup has to copy (data of the frozen view) and what a backup file itself holds (its own data).
import { z } from 'zod';
import { QemuImgError, runQemuImg, type RunOptions } from '../qemu/qemu-img';
import type { Format } from '../schemas/volume';
import type { Extent } from './types';

/** Sorted, with touching or overlapping extents joined. */
export function mergeExtents(extents: readonly Extent[]): Extent[] {
  const sorted = extents.filter((e) => e.length > 0).sort((a, b) => a.offset - b.offset);
  const out: Extent[] = [];
  for (const e of sorted) {
    const last = out[out.length - 1];
    if (last && e.offset <= last.offset + last.length) {
      last.length = Math.max(last.length, e.offset + e.length - last.offset);
    } else {
      out.push({ offset: e.offset, length: e.length });
    }
  }
  return out;
}

export function totalLength(extents: readonly Extent[]): number {
  return extents.reduce((s, e) => s + e.length, 0);
}

const MapEntry = z.looseObject({
  start: z.number(),
  length: z.number(),
  depth: z.number(),
  zero: z.boolean(),
  data: z.boolean(),
});

export interface MapOptions extends RunOptions {
  /** Only what `file` itself holds (depth 0), not its backing files. */
  ownOnly?: boolean;
}

/**
 * Extents holding data (`data: true`; zero clusters and holes are not data) of `file` with its backing
 * chain, or of `file` alone with ownOnly. Opened read-only; no force-share: the frozen images are only
 * ever opened read-only by the VM's QEMU, which lets other readers in.
 */
export async function dataExtents(file: string, format: Format, opts: MapOptions = {}): Promise<Extent[]> {
  const args = ['map', '--output=json', '-f', format, file];
  const { stdout, stderr } = await runQemuImg(args, opts);
  let json: unknown;
  try {
    json = JSON.parse(stdout);
  } catch (e) {
    throw new QemuImgError(args, 0, stderr, 'output is not JSON', { cause: e });
  }
  const r = z.array(MapEntry).safeParse(json);
  if (!r.success)
    throw new QemuImgError(args, 0, stderr, `unexpected output shape: ${z.prettifyError(r.error)}`);
  return mergeExtents(
    r.data
      .filter((e) => e.data && (!opts.ownOnly || e.depth === 0))
      .map((e) => ({ offset: e.start, length: e.length })),
  );
}
