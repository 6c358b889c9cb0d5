import { z } from 'zod';

export const Stage = z.enum([
  'validating',
  'inspecting',
  'starting',
  'copying',
  'ready',
  'pivoting',
  'verifying',
  'recording',
  'deleting',
  'done',
  'failed',
  'cancelled',
]);
export type Stage = z.infer<typeof Stage>;

/** How far along a stage is (validating first, done/failed/cancelled last). */
export const stageRank = (s: Stage): number => Stage.options.indexOf(s);

export const Progress = z.object({
  stage: Stage.describe('the current stage (removeSnapshot: the least advanced of its disks)'),
  mode: z.enum(['live', 'cold']).nullable().describe('null until the VM has been inspected'),
  hostId: z.string().nullable().describe("the VM's host; null until located"),
  cur: z.number().describe('bytes copied so far'),
  end: z.number().describe('bytes to copy (the disk capacity); 0 until known'),
  bytesPerSecond: z.number().nullable().describe('average copy rate of the current stage'),
  etaSeconds: z.number().nullable().describe('estimated seconds left; null when unknown'),
  removedVolumeIds: z.array(z.string()).describe('volumes deleted so far'),
});
export type Progress = z.infer<typeof Progress>;

export const RemoveSnapshotProgress = Progress.extend({
  disks: z
    .array(Progress.extend({ imageId: z.string(), target: z.string().describe('e.g. "vda"') }))
    .describe("each disk's own mergeDisk progress"),
});
export type RemoveSnapshotProgress = z.infer<typeof RemoveSnapshotProgress>;

export const BackupProgress = Progress.extend({
  disks: z
    .array(
      z.object({
        target: z.string(),
        imageId: z.string(),
        mode: z.enum(['full', 'incremental']).nullable().describe('null until the changed blocks are known'),
        changedBytes: z
          .number()
          .describe('bytes planned: the changed (incremental) or allocated (full) extents'),
        copiedBytes: z.number().describe('bytes copied so far'),
        bytesPerSecond: z.number().nullable(),
        etaSeconds: z.number().nullable(),
      }),
    )
    .describe("each disk's copy"),
  exports: z
    .array(z.object({ target: z.string(), uri: z.string(), bitmap: z.string().optional() }))
    .describe('NBD export mode: the read-only exports while they are served (stage `ready`); else empty'),
});
export type BackupProgress = z.infer<typeof BackupProgress>;

/** Failure types (ApplicationFailure.type) a workflow can end with. */
export const FailureType = z.enum([
  'InvalidRequest',
  'VmNotFound',
  'VmNotRunning',
  'VmCrashed',
  'ChainMismatch',
  'SharedBase',
  'MergeInProgress',
  'MergeJobFailed',
  'ImageInUse',
  'DeletionRefused',
  'Cancelled',
  'SnapshotNotFound',
  'PartialFailure',
  'HostUnreachable',
  'BackupInProgress',
  'BackupNotFound',
  'GuestAgentUnavailable',
  'BackupTimedOut',
]);
export type FailureType = z.infer<typeof FailureType>;
