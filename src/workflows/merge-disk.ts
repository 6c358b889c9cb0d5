// mergeDisk: the merge of one disk, live (libvirt block job) or cold (qemu-img), DESIGN.md's nine steps.
// Reads like the source document's live_merge(): validate, inspect, start, wait, pivot, verify, record,
// delete, audit, each failure branch where it happens. The live steps 3-6 run on the VM's host as one
// unit (mergeOnHost) that needs no engine between them.
import {
  CancellationScope,
  getExternalWorkflowHandle,
  isCancellation,
  patched,
  setHandler,
  workflowInfo,
} from '@temporalio/workflow';
import type { JobRef, MergeOnHostInput, MergePlan } from '../activities/contracts';
import { MergeDiskInput } from '../schemas/inputs';
import { stageRank } from '../schemas/progress';
import type { MergeDiskResult } from '../schemas/results';
import { hostActivities, storageSettled } from './activities';
import { audit, locateHost, validated } from './common';
import { failureType, parseInput } from './failures';
import { lean, leanV3 } from './lean';
import { mergeDiskV1 } from './merge-disk-v1';
import { MergeMetric } from './metrics';
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
import { diskProgressSignal, hostStageSignal } from './signals';
import { VM_LOCK_PATCH, withVmLock } from './vm-lock';

export type { MergeDiskResult };

/** Merges started before the host unit existed replay (and finish) on the code they started with. */
const HOST_UNIT_PATCH = 'livemerge-merge-on-host';

type Host = ReturnType<typeof hostActivities>;

export async function mergeDisk(raw: MergeDiskInput): Promise<MergeDiskResult> {
  const metric = new MergeMetric();
  return await metric.around(async () => {
    // Lean histories imply the host unit and the VM lock: one patch marker (and its search attribute) not three.
    if (!lean() && !patched(HOST_UNIT_PATCH)) return await mergeDiskV1(raw);
    return await mergeDiskOnHost(raw, metric);
  });
}

async function mergeDiskOnHost(raw: MergeDiskInput, metric: MergeMetric): Promise<MergeDiskResult> {
  // 1. Validate: a bad input ends here, before any side effect.
  const tracker = new ProgressTracker('mergeDisk');
  const input = validated(tracker, () => parseInput(MergeDiskInput, raw));
  tracker.vm(input.vmId);
  metric.labels.direction = input.direction;
  const toParent = parentReporter(input.imageId, tracker);
  // Lean histories: inspecting from here, its search attribute in the same upsert as the VM's (v3: and the
  // host a removal's merge is given, the one it plans on).
  if (lean()) tracker.stage('inspecting');
  if (input.hostId && workflowInfo().parent && leanV3()) tracker.host(input.hostId);
  // One snapshot removal, merge or backup per VM at a time (a removal's own merges run under its lock).
  if (!lean() && !patched(VM_LOCK_PATCH)) return await mergeDiskSteps(input, tracker, metric, toParent);
  return await withVmLock(input.vmId, tracker, () => mergeDiskSteps(input, tracker, metric, toParent));
}

async function mergeDiskSteps(
  input: ParsedMergeDiskInput,
  tracker: ProgressTracker,
  metric: MergeMetric,
  toParent: { target: string },
): Promise<MergeDiskResult> {
  // 2. Inspect, on the VM's host: the plan is decided once against the VM's real chains.
  tracker.stage('inspecting');
  let hostId: string | null = null;
  let plan: MergePlan;
  let host: Host;
  try {
    hostId = await hostOf(input);
    host = hostActivities(hostId);
    plan = await host.short.planMerge(planInput(input));
  } catch (err) {
    // A VM found nowhere is not audited (there is no VM to speak of); a refused plan is.
    const detail = { stage: 'inspecting', input };
    await concluded(err, tracker, hostId === null ? null : { vmId: input.vmId, hostId, detail });
    throw err;
  }
  toParent.target = plan.diskTarget;
  tracker.host(hostId, plan.mode);
  metric.labels.mode = plan.mode;
  metric.labels.kind = plan.topIsLeaf ? 'active' : 'intermediate';
  tracker.bytes(0, plan.capacity);
  const summary = summaryOf(input, plan);
  const job = jobOf(input, plan);

  try {
    await audit('started', input.vmId, hostId, summary);
    // 3-6 (live) or the qemu-img copy (cold): cancellable until the point of no return, which the host
    // decides (the pivot call reaching libvirt, a completed job, a finished copy).
    let verified: boolean;
    try {
      verified = await CancellationScope.cancellable(() => moveData(input, plan, job, host, tracker));
    } catch (err) {
      if (!isCancellation(err) || !(await mergedAfterAll(plan, job, host))) throw err;
      verified = false; // cancelled too late: the merge is done and is finished, not reported cancelled
    }
    // From here on a cancellation is ignored: the rest of the merge always runs to its end.
    return await CancellationScope.nonCancellable(async () => {
      if (!verified) await verify(input, plan, job, host, tracker);
      // 7. Record, 8. delete (each volume behind the guard).
      await recordAndDelete(input, plan, tracker, leanV3());
      // 9. Audit.
      tracker.stage('done');
      await audit('completed', input.vmId, hostId, summary);
      return {
        vmId: input.vmId,
        imageId: input.imageId,
        hostId,
        mode: plan.mode,
        direction: input.direction,
        removedVolumeIds: plan.removedVolumeIds,
      };
    });
  } catch (err) {
    // The one failure audit of a started merge: cancelled (chain unchanged) or failed (with its cause).
    await concluded(err, tracker, { vmId: input.vmId, hostId, detail: summary });
    throw err;
  }
}

/**
 * Live: the host unit (steps 3-6), which reports its stages. Cold: qemu-img on the storage role.
 * Returns whether the result is already verified (step 6).
 */
async function moveData(
  input: ParsedMergeDiskInput,
  plan: MergePlan,
  job: JobRef,
  host: Host,
  tracker: ProgressTracker,
) {
  if (plan.mode === 'cold') {
    tracker.stage('copying');
    await storageSettled.coldMerge({ ...input, plan });
    return false;
  }
  tracker.stage('starting');
  let onHost = true;
  setHandler(hostStageSignal, (r) => {
    // Reports only move forward, and only while the unit runs (a late one from a dead attempt is stale).
    if (!onHost || stageRank(r.stage) <= stageRank(tracker.state.stage)) return;
    tracker.stage(r.stage);
    tracker.bytes(r.cur, r.end);
  });
  try {
    const done = await host.settled.mergeOnHost({
      ...job,
      expectedLeafPath: newLeafPath(input, plan),
      ...parentToReportTo(input.imageId),
      ...(input.bandwidthBytesPerSec ? { bandwidthBytesPerSec: input.bandwidthBytesPerSec } : {}),
    });
    tracker.bytes(done.end, done.end);
    return true;
  } finally {
    onHost = false;
  }
}

/**
 * A cancelled merge: the host aborts any job left without pivot, and says whether the merge had already
 * passed its point of no return (e.g. an attempt that pivoted and died before it could report).
 */
async function mergedAfterAll(plan: MergePlan, job: JobRef, host: Host): Promise<boolean> {
  if (plan.mode === 'cold') return false;
  const res = await CancellationScope.nonCancellable(() => host.short.abortJob(job));
  return res.merged === true;
}

/** Step 6 when the host unit did not do it: a cold merge (after pointing the definition at base). */
async function verify(
  input: ParsedMergeDiskInput,
  plan: MergePlan,
  job: JobRef,
  host: Host,
  tracker: ProgressTracker,
) {
  if (plan.mode === 'cold') await pointDefinitionAtNewLeaf(input, plan, host);
  const expectedLeafPath = newLeafPath(input, plan);
  tracker.stage('verifying');
  await host.short.verifyMerged({ ...job, expectedLeafPath });
}

/** A merge that did not complete: its stage, and one audit event (cancelled, or failed with its cause). */
async function concluded(
  err: unknown,
  tracker: ProgressTracker,
  audited: { vmId: string; hostId: string; detail: Record<string, unknown> } | null,
): Promise<void> {
  await CancellationScope.nonCancellable(async () => {
    const cancelled = isCancellation(err);
    tracker.stage(cancelled ? 'cancelled' : 'failed');
    if (!audited) return;
    await audit(cancelled ? 'cancelled' : 'failed', audited.vmId, audited.hostId, {
      ...audited.detail,
      ...(cancelled
        ? {}
        : {
            failureType: failureType(err) ?? 'Unknown',
            message: err instanceof Error ? err.message : String(err),
          }),
    });
  });
}

/**
 * The VM's host. A removal's merge is given the host its parent found a moment ago: the plan, made on
 * that host, refuses if the VM is not there (lean histories; before, the host was asked twice).
 */
async function hostOf(input: ParsedMergeDiskInput): Promise<string> {
  if (input.hostId && workflowInfo().parent && lean()) return input.hostId;
  return (await locateHost(input.vmId, input.hostId)).hostId;
}

/** Lean histories: the host unit tells the removal its stages itself (no signal from here per stage). */
function parentToReportTo(imageId: string): Pick<MergeOnHostInput, 'alsoReportTo'> {
  const parent = workflowInfo().parent;
  return parent && lean() ? { alsoReportTo: { ...parent, imageId } } : {};
}

/** A parent workflow (removeSnapshot) shows each disk's progress: a signal per stage change (before lean histories). */
function parentReporter(imageId: string, tracker: ProgressTracker): { target: string } {
  const to = { target: '' };
  const parent = workflowInfo().parent;
  if (!parent) return to;
  const handle = getExternalWorkflowHandle(parent.workflowId, parent.runId);
  tracker.onStageChange((p) => {
    // Lean histories: only a cold copy's start (a live merge's stages come from its host unit; every
    // outcome from the child's result).
    if (lean() && !(p.stage === 'copying' && p.mode === 'cold')) return;
    handle
      .signal(diskProgressSignal, { imageId, target: to.target, progress: { ...p } })
      .catch(() => undefined);
  });
  return to;
}
