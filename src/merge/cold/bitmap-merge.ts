// Carries out a bitmap plan with qemu-img, one invocation per operation.
import path from 'node:path';
import type { BitmapAction } from './bitmap-plan';
import { addBitmap, enableBitmap, mergeBitmapFrom } from './bitmaps';
import type { RunOptions } from '../../qemu/qemu-img';

export interface BitmapOutcome {
  name: string;
  status: 'merged' | 'skipped';
  /** The bitmap was created in the target by this run. */
  created: boolean;
  /** The target's disabled bitmap was enabled by this run. */
  enabled: boolean;
  /** Files merged into the target, in order. */
  sources: string[];
  /** Why a bitmap was skipped. */
  reason?: string;
}

export async function applyBitmapPlan(
  dir: string,
  targetFile: string,
  plan: readonly BitmapAction[],
  opts: RunOptions,
): Promise<BitmapOutcome[]> {
  const target = path.join(dir, targetFile);
  const out: BitmapOutcome[] = [];
  for (const a of plan) {
    if (a.kind === 'skip') {
      out.push({
        name: a.name,
        status: 'skipped',
        created: false,
        enabled: false,
        sources: [],
        reason: a.reason,
      });
      continue;
    }
    if (a.create) await addBitmap(target, a.name, a.create.granularity, opts);
    if (a.enable) await enableBitmap(target, a.name, opts);
    for (const s of a.sources) await mergeBitmapFrom(target, path.join(dir, s), a.name, opts);
    out.push({
      name: a.name,
      status: 'merged',
      created: a.create !== null,
      enabled: a.enable,
      sources: [...a.sources],
    });
  }
  return out;
}
