import type { HostActivities } from '../contracts';
import { typed } from '../failures';
import { makeAddBackupBitmap, makeRemoveBackupBitmaps } from './bitmaps';
import { makeAbortJob, makePivot, makeStartJob } from './block-job';
import type { HostActivityDeps } from './deps';
import { makeDescribeVm, makeListVms, makeLocateVm } from './list-vms';
import { makeMergeOnHost } from './merge-on-host';
import { makePlanMerge } from './plan-merge';
import { makeSetDiskSources, makeSnapshotDisks } from './snapshot';
import { makeVerifyMerged } from './verify';
import { makeWaitForJob } from './wait-for-job';

export type { HostActivityDeps } from './deps';

/** Activities run by a host agent on `livemerge-host-<id>`: the host's libvirt work. */
export function createHostActivities(deps: HostActivityDeps): HostActivities {
  return {
    listVms: typed(makeListVms(deps)),
    locateVm: typed(makeLocateVm(deps)),
    describeVm: typed(makeDescribeVm(deps)),
    planMerge: typed(makePlanMerge(deps)),
    startJob: typed(makeStartJob(deps)),
    waitForJob: typed(makeWaitForJob(deps)),
    pivot: typed(makePivot(deps)),
    mergeOnHost: typed(makeMergeOnHost(deps)),
    abortJob: typed(makeAbortJob(deps)),
    verifyMerged: typed(makeVerifyMerged(deps)),
    snapshotDisks: typed(makeSnapshotDisks(deps)),
    setDiskSources: typed(makeSetDiskSources(deps)),
    addBackupBitmap: typed(makeAddBackupBitmap(deps)),
    removeBackupBitmaps: typed(makeRemoveBackupBitmaps(deps)),
  };
}
