// Which persistent bitmaps a cold merge merges, from where, into what (pure; no I/O).
//
// libvirt's rule for committing by hand (seeds/004): for each valid bitmap chain in COMMIT_TOP,
// create the bitmap in COMMIT_BASE if it is missing (recording, granularity of the bitmap in the
// active layer), then walk from COMMIT_TOP down to (excluding) COMMIT_BASE, stop at the first
// image without the bitmap, and merge each one into the base's bitmap.
// The pull uses the same walk with top as the target and the pulled volumes as sources.
import type { Format } from '../../schemas/volume';
import type { PersistentBitmap } from './bitmaps';

export interface BitmapLayer {
  file: string;
  bitmaps: readonly PersistentBitmap[];
}

export interface BitmapTarget extends BitmapLayer {
  /** A raw target cannot hold bitmaps: every bitmap is skipped. */
  format: Format;
}

export type BitmapAction =
  | {
      name: string;
      kind: 'merge';
      /** Create the bitmap in the target first (recording, this granularity). */
      create: { granularity: number } | null;
      /** The target's bitmap exists but is disabled while the chain's is recording: enable it. */
      enable: boolean;
      /** Files whose bitmap is OR-ed into the target's, in walk order. */
      sources: string[];
    }
  | { name: string; kind: 'skip'; reason: string };

export interface BitmapPlanInput {
  target: BitmapTarget;
  /** The bitmaps to carry over: those of the merge's top volume. */
  wanted: readonly PersistentBitmap[];
  /** The layers to walk, top-most first; the walk stops at the first layer without the bitmap. */
  walk: readonly BitmapLayer[];
  /** Bitmaps of the active layer (granularity for a bitmap created in the target), if known. */
  active?: readonly PersistentBitmap[];
}

export function planBitmapMerge(input: BitmapPlanInput): BitmapAction[] {
  const { target, wanted, walk, active } = input;
  return wanted.map((b): BitmapAction => {
    const name = b.name;
    if (b.inconsistent)
      return { name, kind: 'skip', reason: 'inconsistent (in-use) in the top volume: not a valid bitmap' };
    if (target.format === 'raw') {
      return { name, kind: 'skip', reason: `${target.file} is raw and cannot hold persistent bitmaps` };
    }
    const inTarget = target.bitmaps.find((t) => t.name === name);
    if (inTarget?.inconsistent) {
      return { name, kind: 'skip', reason: `inconsistent (in-use) in ${target.file}: cannot merge into it` };
    }
    const sources: string[] = [];
    for (const layer of walk) {
      const lb = layer.bitmaps.find((x) => x.name === name);
      if (!lb) break;
      if (lb.inconsistent) {
        return {
          name,
          kind: 'skip',
          reason: `inconsistent (in-use) in ${layer.file}: the bitmap chain is broken`,
        };
      }
      sources.push(layer.file);
    }
    const granularity = active?.find((a) => a.name === name)?.granularity ?? b.granularity;
    return {
      name,
      kind: 'merge',
      create: inTarget ? null : { granularity },
      enable: inTarget !== undefined && !inTarget.enabled && b.enabled,
      sources: sources.filter((s) => s !== target.file),
    };
  });
}
