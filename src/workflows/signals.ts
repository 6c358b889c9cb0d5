import { defineSignal } from '@temporalio/workflow';
import type { BackupProgressReport } from '../common/backup-progress';
import { BACKUP_PROGRESS_SIGNAL } from '../common/backup-progress';
import type { DiskHostStageReport, HostStageReport } from '../common/host-stage';
import { DISK_HOST_STAGE_SIGNAL, HOST_STAGE_SIGNAL } from '../common/host-stage';
import type { Progress } from '../schemas/progress';

/** mergeDisk → its removeSnapshot parent: each stage change (before lean histories), a cold copy's start (lean). */
export const diskProgressSignal =
  defineSignal<[{ imageId: string; target: string; progress: Progress }]>('diskProgress');

/** mergeOnHost (the host unit) → its mergeDisk: the copy started, the job is READY. */
export const hostStageSignal = defineSignal<[HostStageReport]>(HOST_STAGE_SIGNAL);

/** mergeOnHost → the removal whose merge it runs (lean histories): the same reports, naming the disk. */
export const diskHostStageSignal = defineSignal<[DiskHostStageReport]>(DISK_HOST_STAGE_SIGNAL);

/** backupVm in NBD export mode: the backup application has read what it needs; the exports may stop. */
export const backupDoneSignal = defineSignal('backupDone');

/** copyBackupDisk → its backupVm, a tenth of the copy at a time. */
export const backupProgressSignal = defineSignal<[BackupProgressReport]>(BACKUP_PROGRESS_SIGNAL);
