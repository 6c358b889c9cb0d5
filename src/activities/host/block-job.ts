import { Context } from '@temporalio/activity';
import { BlockJobType } from '../../libvirt/constants';
import type { Domain } from '../../libvirt/domain';
import { isNotReadyForPivot } from '../../libvirt/retryable';
import type { AbortJobResult, HostActivities, JobKind, JobRef, StartJobResult } from '../contracts';
import { nonRetryable } from '../failures';
import type { HostActivityDeps } from './deps';
import { walkLeafChain } from './chains';
import { releaseWorkflowHolds } from './vm-hold';
import { diskChain, isActive, opensLeafRaw, stateOf, vmDisk, withVm } from './vm';

const JOB_TYPE: Record<JobKind, number> = {
  commit: BlockJobType.COMMIT,
  'active-commit': BlockJobType.ACTIVE_COMMIT,
  pull: BlockJobType.PULL,
};

/** libvirt refuses a pivot until the mirror is synchronised; it is tried again this often, this long. */
const PIVOT_RETRY_MS = 200;
const PIVOT_RETRY_FOR_MS = 60_000;

/** True when no path the job removes is left in the disk's live chain. */
export async function jobWorkDone(dom: Domain, job: JobRef): Promise<boolean> {
  const chain = await diskChain(dom, job.diskTarget, false);
  if (!chain) throw nonRetryable('ChainMismatch', `disk ${job.diskTarget} is gone from VM ${job.vmId}`);
  return holdsNoRemoved(chain, job);
}

const holdsNoRemoved = (chain: string[], job: JobRef): boolean =>
  job.removedPaths.every((p) => !chain.includes(p));

/**
 * A stopped VM: true when the chain it boots from (its definition's disk source, then the qcow2 headers
 * below it, as QEMU opens it; a definition need not spell the chain out) holds no removed path. libvirt
 * writes a pivot into the definition and a completed commit into the headers; an unfinished job neither.
 */
export async function definitionWorkDone(dom: Domain, job: JobRef): Promise<boolean> {
  const disk = await vmDisk(dom, job.diskTarget, true);
  const source = disk?.chain[0]?.path;
  // A disk the definition lacks (attached to the running VM only) is not booted from at all: not merged.
  if (!source) return false;
  return holdsNoRemoved(await walkLeafChain(source, opensLeafRaw([disk], source)), job);
}

/**
 * Step 3. Idempotent: a job of the same kind already running on the disk is adopted; a chain that no
 * longer holds the removed volumes means the job already did its work. That holds for a VM that stopped
 * too (definitionWorkDone): one that went down after its pivot (an attempt died past the pivot, then
 * the VM crashed) is merged, not crashed.
 */
export async function startOrAdopt(
  dom: Domain,
  job: JobRef,
  bandwidthBytesPerSec = 0,
  /** False when this merge's job was already started once: a job gone before its work was done is a failure. */
  mayStart = true,
): Promise<StartJobResult['status']> {
  if (!isActive(await stateOf(dom))) {
    if (await definitionWorkDone(dom, job)) return 'already-done';
    throw nonRetryable('VmCrashed', `VM ${job.vmId} is not running: the merge cannot start`);
  }
  const info = await dom.blockJobInfo(job.diskTarget);
  if (info) {
    if (info.type === JOB_TYPE[job.jobKind]) return 'adopted';
    throw nonRetryable('MergeInProgress', `another block job (type ${info.type}) runs on ${job.diskTarget}`);
  }
  if (await jobWorkDone(dom, job)) return 'already-done';
  // vdsm's rule too: a job that vanished without doing its work (aborted outside livemerge) is reported,
  // not silently started again.
  if (!mayStart)
    throw nonRetryable(
      'MergeJobFailed',
      `the block job of this merge on ${job.diskTarget} is gone and the chain still holds ${job.topPath}`,
    );
  if (job.jobKind === 'pull')
    await dom.blockRebase(job.diskTarget, job.basePath || null, bandwidthBytesPerSec, {
      relative: job.basePath !== '',
    });
  else
    await dom.blockCommit(job.diskTarget, job.basePath, job.topPath, bandwidthBytesPerSec, {
      active: job.jobKind === 'active-commit',
      relative: true,
    });
  return 'started';
}

/**
 * Step 5. Idempotent: a disk whose source already is the base has pivoted. A pivot refused because the
 * mirror is not synchronised yet (BLOCK_COPY_ACTIVE) is tried again, as vdsm does, not failed.
 */
export async function pivotDisk(dom: Domain, job: JobRef): Promise<'pivoted' | 'already-pivoted'> {
  const source = async () => (await diskChain(dom, job.diskTarget, false))?.[0];
  // A stopped VM has no job, and libvirt refuses to look for one (it would fail, retried forever): it
  // either pivoted before it stopped (its definition names the base) or crashed before the pivot.
  if (!isActive(await stateOf(dom))) {
    if ((await source()) === job.basePath) return 'already-pivoted';
    throw nonRetryable('VmCrashed', `VM ${job.vmId} stopped before the pivot`);
  }
  const info = await dom.blockJobInfo(job.diskTarget);
  if (!info) {
    if ((await source()) === job.basePath) return 'already-pivoted';
    throw nonRetryable('MergeJobFailed', `no block job to pivot on ${job.diskTarget}`);
  }
  for (const started = Date.now(); ;) {
    try {
      // Without ASYNC, libvirt returns once QEMU has switched the disk to the base.
      await dom.blockJobAbort(job.diskTarget, { pivot: true });
      break;
    } catch (err) {
      if (!isNotReadyForPivot(err) || Date.now() - started > PIVOT_RETRY_FOR_MS) throw err;
      await new Promise((r) => setTimeout(r, PIVOT_RETRY_MS));
    }
  }
  const now = await source();
  if (now !== job.basePath) throw new Error(`after the pivot ${job.diskTarget} reads from ${now}`);
  return 'pivoted';
}

/**
 * Cancellation before the point of no return: the job is aborted without a pivot, and the abort awaited.
 * Idempotent: no job on the disk means nothing to abort. `merged` tells whether the merge had already
 * passed the point of no return (pivoted, or a job that completed): then the merge must be finished.
 */
export async function abortDisk(dom: Domain, job: JobRef): Promise<AbortJobResult> {
  if (!isActive(await stateOf(dom))) return { aborted: false, merged: await definitionWorkDone(dom, job) };
  let aborted = false;
  if (await dom.blockJobInfo(job.diskTarget)) {
    // Without ASYNC, libvirt returns once QEMU has ended the job; the chain is then as it was.
    await dom.blockJobAbort(job.diskTarget, {});
    aborted = true;
  }
  if (await dom.blockJobInfo(job.diskTarget))
    throw new Error(`a block job is still on ${job.diskTarget} after the abort`);
  return { aborted, merged: await jobWorkDone(dom, job) };
}

export function makeStartJob(deps: HostActivityDeps): HostActivities['startJob'] {
  return async (input) =>
    withVm(await deps.libvirt(), input.vmId, async (dom) => ({
      status: await startOrAdopt(dom, input, input.bandwidthBytesPerSec),
    }));
}

export function makePivot(deps: HostActivityDeps): HostActivities['pivot'] {
  return async (input) => {
    await withVm(await deps.libvirt(), input.vmId, (dom) => pivotDisk(dom, input));
  };
}

export function makeAbortJob(deps: HostActivityDeps): HostActivities['abortJob'] {
  return async (input) => {
    try {
      return await withVm(await deps.libvirt(), input.vmId, async (dom) => {
        const result = await abortDisk(dom, input);
        // The merge is over on this host: a hold an attempt that died left behind goes too (vm-hold.ts).
        const wf = Context.current().info.workflowExecution;
        if (wf) await releaseWorkflowHolds(dom, wf.workflowId);
        return result;
      });
    } catch (err) {
      // A VM that is gone has no job left to abort, and nothing merged that anyone could use.
      if (err instanceof Error && 'type' in err && err.type === 'VmNotFound')
        return { aborted: false, merged: false };
      throw err;
    }
  };
}
