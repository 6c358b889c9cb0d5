import { BlockJobType } from '../../libvirt/constants';
import type { Domain } from '../../libvirt/domain';
import type { HostActivities, JobKind, JobRef } from '../contracts';
import { nonRetryable } from '../failures';
import type { HostActivityDeps } from './deps';
import { diskChain, isActive, stateOf, withVm } from './vm';

const JOB_TYPE: Record<JobKind, number> = {
  commit: BlockJobType.COMMIT,
  'active-commit': BlockJobType.ACTIVE_COMMIT,
  pull: BlockJobType.PULL,
};

/** True when no path the job removes is left in the disk's live chain. */
export async function jobWorkDone(dom: Domain, job: JobRef): Promise<boolean> {
  const chain = await diskChain(dom, job.diskTarget, false);
  if (!chain) throw nonRetryable('ChainMismatch', `disk ${job.diskTarget} is gone from VM ${job.vmId}`);
  return job.removedPaths.every((p) => !chain.includes(p));
}

/**
 * Step 3. Idempotent: a job of the same kind already running on the disk is adopted; a chain that no
 * longer holds the removed volumes means the job already did its work.
 */
export function makeStartJob(deps: HostActivityDeps): HostActivities['startJob'] {
  return async (input) =>
    withVm(await deps.libvirt(), input.vmId, async (dom) => {
      if (!isActive(await stateOf(dom)))
        throw nonRetryable('VmCrashed', `VM ${input.vmId} is not running: the merge cannot start`);
      const info = await dom.blockJobInfo(input.diskTarget);
      if (info) {
        if (info.type === JOB_TYPE[input.jobKind]) return { status: 'adopted' as const };
        throw nonRetryable(
          'MergeInProgress',
          `another block job (type ${info.type}) runs on ${input.diskTarget}`,
        );
      }
      if (await jobWorkDone(dom, input)) return { status: 'already-done' as const };
      const bw = input.bandwidthBytesPerSec ?? 0;
      if (input.jobKind === 'pull')
        await dom.blockRebase(input.diskTarget, input.basePath || null, bw, {
          relative: input.basePath !== '',
        });
      else
        await dom.blockCommit(input.diskTarget, input.basePath, input.topPath, bw, {
          active: input.jobKind === 'active-commit',
          relative: true,
        });
      return { status: 'started' as const };
    });
}

/** Step 5. Idempotent: a disk whose source already is the base has pivoted. */
export function makePivot(deps: HostActivityDeps): HostActivities['pivot'] {
  return async (input) =>
    withVm(await deps.libvirt(), input.vmId, async (dom) => {
      const source = async () => (await diskChain(dom, input.diskTarget, false))?.[0];
      // A stopped VM has no job, and libvirt refuses to look for one (it would fail, retried forever): it
      // either pivoted before it stopped (its definition names the base) or crashed before the pivot.
      if (!isActive(await stateOf(dom))) {
        if ((await source()) === input.basePath) return;
        throw nonRetryable('VmCrashed', `VM ${input.vmId} stopped before the pivot`);
      }
      const info = await dom.blockJobInfo(input.diskTarget);
      if (!info) {
        if ((await source()) === input.basePath) return;
        throw nonRetryable('MergeJobFailed', `no block job to pivot on ${input.diskTarget}`);
      }
      // Without ASYNC, libvirt returns once QEMU has switched the disk to the base.
      await dom.blockJobAbort(input.diskTarget, { pivot: true });
      const now = await source();
      if (now !== input.basePath) throw new Error(`after the pivot ${input.diskTarget} reads from ${now}`);
    });
}

/** Cancellation before the pivot. Idempotent: no job on the disk means nothing to abort. */
export function makeAbortJob(deps: HostActivityDeps): HostActivities['abortJob'] {
  return async (input) => {
    const conn = await deps.libvirt();
    try {
      return await withVm(conn, input.vmId, async (dom) => {
        if (!isActive(await stateOf(dom))) return { aborted: false };
        if (!(await dom.blockJobInfo(input.diskTarget))) return { aborted: false };
        await dom.blockJobAbort(input.diskTarget, {});
        return { aborted: true };
      });
    } catch (err) {
      // A VM that is gone has no job left to abort.
      if (err instanceof Error && 'type' in err && err.type === 'VmNotFound') return { aborted: false };
      throw err;
    }
  };
}
