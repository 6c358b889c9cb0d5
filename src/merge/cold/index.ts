// Cold merge primitives (VM shut off): qemu-img work on the volume files of one image directory.
export { coldCommit, coldCommitState, commitData, mergeCommitBitmaps, rebaseChildOntoBase } from './commit';
export type { ColdCommitRequest } from './commit';
export { coldPull, coldPullState, mergePullBitmaps, rebaseTopSafe } from './pull';
export type { ColdPullRequest } from './pull';
export { listBitmaps } from './bitmaps';
export type { PersistentBitmap } from './bitmaps';
export type { BitmapOutcome } from './bitmap-merge';
export { planBitmapMerge } from './bitmap-plan';
export type { BitmapAction } from './bitmap-plan';
export { validateRequest } from './chain';
export type { ChainVolume, ColdMergeRequest } from './chain';
export type { ColdMergeResult, ColdMergeState, StepReport, ColdStep } from './result';
export { ChainMismatch, ColdMergeError, InvalidColdMergeRequest } from './errors';
export type { ColdMergeErrorCode } from './errors';
