// pruneBackups: the oldest restore points merged into their children until `keep` remain, each still
// restoring byte for byte (the storage role runs the cold-merge primitives on the repository's files).
import { PruneBackupsInput } from '../schemas/inputs';
import type { PruneBackupsResult } from '../schemas/results';
import { backupCopies } from './activities';
import { validated } from './common';
import { parseInput } from './failures';
import { ProgressTracker } from './progress';
import { withVmLock } from './vm-lock';

export type { PruneBackupsResult };

export async function pruneBackups(raw: PruneBackupsInput): Promise<PruneBackupsResult> {
  const tracker = new ProgressTracker('pruneBackups');
  const input = validated(tracker, () => parseInput(PruneBackupsInput, raw));
  tracker.vm(input.vmId);
  // Not while a backup of the VM reads or writes its catalog.
  return await withVmLock(input.vmId, tracker, async () => {
    try {
      tracker.stage('deleting');
      const r = await backupCopies.pruneBackups(input);
      tracker.stage('done');
      return { vmId: input.vmId, ...r };
    } catch (err) {
      tracker.stage('failed');
      throw err;
    }
  });
}
