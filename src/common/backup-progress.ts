// The signal a backup's copy sends its workflow as the copy advances: one per tenth of the disk's copy at
// most (a bounded number per backup, never one per second), so that `progress` shows bytes, rate and ETA.

export const BACKUP_PROGRESS_SIGNAL = 'backupProgress';

export interface BackupProgressReport {
  imageId: string;
  copied: number;
  total: number;
}

/** The tenth of the copy `copied` is in (0..10): a report is sent when it changes. */
export const progressStep = (copied: number, total: number): number =>
  total > 0 ? Math.min(10, Math.floor((10 * copied) / total)) : 10;
