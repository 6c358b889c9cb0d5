import { defineSignal } from '@temporalio/workflow';
import type { Progress } from '../schemas/progress';

/** mergeDisk → its removeSnapshot parent, on each stage change. */
export const diskProgressSignal =
  defineSignal<[{ imageId: string; target: string; progress: Progress }]>('diskProgress');
