// What a cold merge reports back.
import type { BitmapOutcome } from './bitmap-merge';
import type { ChainVolume } from './chain';

export type ColdStep = 'commit' | 'merge-bitmaps' | 'rebase-child' | 'rebase-top';

export interface StepReport {
  step: ColdStep;
  status: 'ran' | 'skipped';
  detail: string;
}

/** 'done': the headers prove the merge finished (nothing left to do); 'pending': run it (again). */
export interface ColdMergeState {
  status: 'done' | 'pending';
  detail: string;
}

export interface ColdMergeResult {
  /** The headers showed the merge had already finished; no volume was opened for writing. */
  alreadyDone: boolean;
  steps: StepReport[];
  bitmaps: BitmapOutcome[];
  /** Volumes no longer referenced by the new chain (the caller marks them ILLEGAL and deletes them). */
  removed: ChainVolume[];
  /** The image's chain after the merge, base first. */
  newChain: ChainVolume[];
}

/** The result of a merge the headers show finished: every step skipped, for `detail`. */
export function alreadyDone(
  detail: string,
  steps: readonly ColdStep[],
  removed: ChainVolume[],
  newChain: ChainVolume[],
): ColdMergeResult {
  return {
    alreadyDone: true,
    steps: steps.map((step) => ({ step, status: 'skipped', detail })),
    bitmaps: [],
    removed,
    newChain,
  };
}
