// Worker Deployments (docs/upgrades.md): with LIVEMERGE_DEPLOYMENT/LIVEMERGE_BUILD_ID every worker of a
// build — the engine and every host agent — registers as one deployment version.
import type { WorkerOptions } from '@temporalio/worker';
import type { DeploymentVersion } from '../config';

/**
 * PINNED by default, for every workflow type: a merge (removeSnapshot, its mergeDisk children, and
 * createSnapshot) runs from start to end on the build that started it, so a new build never replays a
 * half-done merge and no patch is needed for changes of workflow code. No livemerge workflow is
 * AUTO_UPGRADE: none is long-lived — reconcile is one scan and its deletions, findVm and listHostVms a few
 * reads — so pinning costs a drain of minutes at most, while AUTO_UPGRADE would replay their histories on
 * the new build's code (reconcile's deletions decided by one build and done by another). A periodic
 * reconcile would be a Schedule, whose every run starts on the current version anyway.
 *
 * The agents join the same version: a pinned workflow's activities on a task queue of its version (the
 * host queues, livemerge-storage) go to that version's agents only, so a merge's host unit, verification
 * and deletions run on the build the merge started with, while the next build's agents already poll the
 * same queues for new merges.
 */
export function deploymentOptions(
  version: DeploymentVersion | undefined,
): Pick<WorkerOptions, 'workerDeploymentOptions'> {
  if (!version) return {}; // unversioned, as `livemerge dev up` and the everyday tests run
  return {
    workerDeploymentOptions: {
      useWorkerVersioning: true,
      version: { deploymentName: version.deploymentName, buildId: version.buildId },
      defaultVersioningBehavior: 'PINNED',
    },
  };
}
