// restoreBackup: one self-contained qcow2 per disk of a recorded backup, reading exactly what the guest
// saw at the backup's snapshot (the backup's file with its parents, flattened).
import { RestoreBackupInput } from '../schemas/inputs';
import type { RestoreBackupResult } from '../schemas/results';
import { backupCopies, backups } from './activities';
import { validated } from './common';
import { fail, parseInput } from './failures';
import { ProgressTracker } from './progress';

export type { RestoreBackupResult };

export async function restoreBackup(raw: RestoreBackupInput): Promise<RestoreBackupResult> {
  const tracker = new ProgressTracker('restoreBackup');
  const input = validated(tracker, () => parseInput(RestoreBackupInput, raw));
  tracker.vm(input.vmId);
  try {
    tracker.stage('inspecting');
    const catalog = await backups.readBackups({ repository: input.repository, vmId: input.vmId });
    const record = catalog.backups.find((b) => b.backupId === input.backupId);
    if (!record)
      fail('BackupNotFound', `${input.repository} has no backup ${input.backupId} of VM ${input.vmId}`);
    tracker.stage('copying');
    const disks = await Promise.all(
      record.disks.map(async (d) => {
        const r = await backupCopies.restoreBackupDisk({ ...input, imageId: d.imageId });
        return { target: d.target, imageId: d.imageId, path: r.path };
      }),
    );
    tracker.stage('done');
    return { vmId: input.vmId, backupId: input.backupId, disks };
  } catch (err) {
    tracker.stage('failed');
    throw err;
  }
}
