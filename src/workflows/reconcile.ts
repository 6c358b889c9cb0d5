// reconcile: deletes ILLEGAL (or never used) volumes that no chain references; reports disagreeing chains.
import { ReconcileInput } from '../schemas/inputs';
import type { ReconcileResult } from '../schemas/results';
import { storage } from './activities';
import { validated } from './common';
import { parseInput } from './failures';
import { ProgressTracker } from './progress';

export type { ReconcileResult };

export async function reconcile(raw: ReconcileInput): Promise<ReconcileResult> {
  const tracker = new ProgressTracker('reconcile');
  const input = validated(tracker, () => parseInput(ReconcileInput, raw));
  tracker.stage('inspecting');
  const scan = await storage.reconcileScan({ storageDomainId: input.storageDomainId });
  tracker.stage('deleting');
  const byImage = new Map<string, string[]>();
  for (const o of scan.orphans) byImage.set(o.imageId, [...(byImage.get(o.imageId) ?? []), o.volumeId]);
  for (const [imageId, volumeIds] of byImage)
    await storage.deleteVolumes({ storageDomainId: input.storageDomainId, imageId, volumeIds });
  tracker.removed(scan.orphans.map((o) => o.volumeId));
  tracker.stage('done');
  return { storageDomainId: input.storageDomainId, deleted: scan.orphans, reports: scan.reports };
}
