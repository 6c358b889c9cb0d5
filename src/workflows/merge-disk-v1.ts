// mergeDisk as it ran before the host unit (merge-disk.ts): kept only so that histories of merges started
// by earlier builds replay, and such merges finish, unchanged. New merges never take this path.
import {
  CancellationScope,
  getExternalWorkflowHandle,
  isCancellation,
  workflowInfo,
} from '@temporalio/workflow';
import type { ExternalWorkflowHandle } from '@temporalio/workflow';
import type { JobRef, MergePlan } from '../activities/contracts';
import { MergeDiskInput } from '../schemas/inputs';
import type { Progress } from '../schemas/progress';
import type { MergeDiskResult } from '../schemas/results';
import { hostActivities, storageLong } from './activities';
import { audit, locateHost, validated } from './common';
import { fail, failureType, parseInput } from './failures';
import { ProgressTracker } from './progress';
import type { ParsedMergeDiskInput } from './merge-steps';
import {
  jobOf,
  newLeafPath,
  planInput,
  pointDefinitionAtNewLeaf,
  recordAndDelete,
  summaryOf,
} from './merge-steps';
import { diskProgressSignal } from './signals';

export async function mergeDiskV1(raw: MergeDiskInput): Promise<MergeDiskResult> {
  const parent = parentHandle();
  let lastTarget = '';
  let imageId = '';
  const tracker = new ProgressTracker('mergeDisk', (p: Progress) => {
    // A removeSnapshot parent shows each disk's progress: one signal per stage change, not per second.
    if (parent)
      parent
        .signal(diskProgressSignal, { imageId, target: lastTarget, progress: { ...p } })
        .catch(() => undefined);
  });
  const input = validated(tracker, () => parseInput(MergeDiskInput, raw));
  imageId = input.imageId;
  tracker.vm(input.vmId);

  tracker.stage('inspecting');
  const located = await locateHost(input.vmId, input.hostId);
  const host = hostActivities(located.hostId);
  let plan: MergePlan;
  try {
    plan = await host.short.planMerge(planInput(input));
  } catch (err) {
    tracker.stage('failed');
    await audit('failed', input.vmId, located.hostId, {
      stage: 'inspecting',
      input,
      failureType: failureType(err),
    });
    throw err;
  }
  lastTarget = plan.diskTarget;
  tracker.host(located.hostId, plan.mode);
  tracker.bytes(0, plan.capacity);

  const summary = summaryOf(input, plan);
  await audit('started', input.vmId, located.hostId, summary);
  const job = jobOf(input, plan);

  try {
    // Until the point of no return (pivot, or a completed job), a cancellation aborts the job and the
    // chain stays as it was.
    await CancellationScope.cancellable(async () => {
      if (plan.mode === 'cold') return;
      tracker.stage('starting');
      const start = await host.short.startJob({ ...job, bandwidthBytesPerSec: input.bandwidthBytesPerSec });
      if (start.status === 'already-done') return;
      tracker.stage('copying');
      const waited = await host.wait.waitForJob({
        ...job,
        expect: plan.jobKind === 'active-commit' ? 'ready' : 'completed',
      });
      tracker.bytes(waited.cur, waited.end);
      if (waited.outcome === 'vm-stopped')
        fail(
          'VmCrashed',
          `VM ${input.vmId} stopped during the merge; its chain is unchanged and valid`,
          waited,
        );
      if (waited.outcome === 'failed')
        fail('MergeJobFailed', `block job failed: ${waited.detail ?? ''}`, waited);
      if (waited.outcome === 'ready') tracker.stage('ready');
    });

    await CancellationScope.nonCancellable(async () => {
      const expectedLeafPath = await finishData(plan, job, input, tracker, host);
      tracker.stage('verifying');
      await host.short.verifyMerged({ ...job, expectedLeafPath });
      await recordAndDelete(input, plan, tracker);
    });
  } catch (err) {
    await CancellationScope.nonCancellable(async () => {
      if (isCancellation(err)) {
        if (plan.mode === 'live') await host.short.abortJob(job);
        tracker.stage('cancelled');
        await audit('cancelled', input.vmId, located.hostId, summary);
      } else {
        tracker.stage('failed');
        await audit('failed', input.vmId, located.hostId, {
          ...summary,
          failureType: failureType(err) ?? 'Unknown',
          message: err instanceof Error ? err.message : String(err),
        });
      }
    });
    throw err;
  }

  tracker.stage('done');
  await audit('completed', input.vmId, located.hostId, summary);
  return {
    vmId: input.vmId,
    imageId: input.imageId,
    hostId: located.hostId,
    mode: plan.mode,
    direction: input.direction,
    removedVolumeIds: plan.removedVolumeIds,
  };
}

/** The data movement after the point of no return; returns the path the disk's leaf must have afterwards. */
async function finishData(
  plan: MergePlan,
  job: JobRef,
  input: ParsedMergeDiskInput,
  tracker: ProgressTracker,
  host: ReturnType<typeof hostActivities>,
): Promise<string> {
  const leafPath = newLeafPath(input, plan);
  if (plan.mode === 'live') {
    if (plan.jobKind === 'active-commit') {
      tracker.stage('pivoting');
      await host.short.pivot(job);
    }
    return leafPath;
  }
  tracker.stage('copying');
  await storageLong.coldMerge({ ...input, plan });
  await pointDefinitionAtNewLeaf(input, plan, host);
  return leafPath;
}

function parentHandle(): ExternalWorkflowHandle | undefined {
  const p = workflowInfo().parent;
  return p ? getExternalWorkflowHandle(p.workflowId, p.runId) : undefined;
}
