import type { StorageActivities } from '../contracts';
import { typed } from '../failures';
import { makeColdMerge } from './cold-merge';
import { makeDeleteVolumes, makeDiscardVolumes } from './delete-volumes';
import type { StorageActivityDeps } from './deps';
import { makeReconcileScan } from './reconcile-scan';
import { makeRecordAndDelete, makeRecordMerge } from './record-merge';
import { makeCreateVolume, makeReadChain, makeSetSnapshotId } from './volumes';

export type { StorageActivityDeps } from './deps';
export { createBackupActivities } from './backups';

/** Activities of the storage role on `livemerge-storage`: metadata changes, cold merges, deletion. */
export function createStorageActivities(deps: StorageActivityDeps): StorageActivities {
  return {
    readChain: typed(makeReadChain(deps)),
    createVolume: typed(makeCreateVolume(deps)),
    setSnapshotId: typed(makeSetSnapshotId(deps)),
    recordMerge: typed(makeRecordMerge(deps)),
    recordAndDelete: typed(makeRecordAndDelete(deps)),
    deleteVolumes: typed(makeDeleteVolumes(deps)),
    discardVolumes: typed(makeDiscardVolumes(deps)),
    coldMerge: typed(makeColdMerge(deps)),
    reconcileScan: typed(makeReconcileScan(deps)),
  };
}
