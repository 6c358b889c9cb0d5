// The host finishes what it started (DESIGN.md): steps 3-6 of a live merge as one heartbeating activity
// on the VM's host, so that with the engine down the job still completes, pivots and leaves the live
// chain (vdsm's live merge job works the same way). Only recording and deleting wait for the engine.
import { ApplicationFailure, CancelledFailure, Context } from '@temporalio/activity';
import type { HostStageReport } from '../../common/host-stage';
import { DISK_HOST_STAGE_SIGNAL, HOST_STAGE_SIGNAL } from '../../common/host-stage';
import { livemergeMetrics } from '../../common/metrics';
import { noBreakpoint } from '../breakpoints';
import type { HostActivities, MergeOnHostInput, MergeOnHostResult } from '../contracts';
import { nonRetryable } from '../failures';
import { abortDisk, pivotDisk, startOrAdopt } from './block-job';
import type { HostActivityDeps } from './deps';
import { verifyChains } from './verify';
import type { HoldRef } from './vm-hold';
import { holdVm, releaseVm } from './vm-hold';
import { withVm } from './vm';
import { waitForJobEvent } from './wait-for-job';

/** How long a stage report may take before the unit goes on without it (Temporal may be down). */
const REPORT_FLUSH_MS = 5_000;
/**
 * A stage is reported once the unit has been in it this long: a merge that is done sooner (most small ones)
 * sends no report at all, and a momentary stage (READY before an immediate pivot) none either; each report
 * is two signals and a workflow task in each of the merge and the removal. The result says how it ended.
 */
const REPORT_SETTLE_MS = 300;

/**
 * Idempotent: every step recognises its own work (a running job of the same kind is adopted, a chain
 * without top has merged, a disk whose source is base has pivoted), so a retry resumes where the
 * previous attempt died. Cancellation is honoured up to the pivot call: the job is then aborted without
 * pivot (and the abort awaited), and the unit ends cancelled; from the pivot call on it is ignored.
 * Only a cancellation the workflow asked for aborts the job: an attempt the server gave up on (timed
 * out, not found, worker shutdown) just stops, and the next attempt adopts the job.
 */
export function makeMergeOnHost(deps: HostActivityDeps): HostActivities['mergeOnHost'] {
  const breakpoint = deps.breakpoint ?? noBreakpoint;
  const waitForJob = waitForJobEvent(deps);
  return async (input) => {
    const ctx = Context.current();
    const metrics = livemergeMetrics(ctx.metricMeter);
    const attempt = ctx.info.attempt;
    const report = stageReporter(ctx, input.alsoReportTo);
    const conn = await deps.libvirt();
    let cur = 0;
    let end = 0;
    let pivotCalled = false;
    // No migration while the unit runs (vm-hold.ts); a direct call from a test has no workflow to name.
    const wf = ctx.info.workflowExecution;
    const hold: HoldRef | null = wf
      ? { workflowId: wf.workflowId, activityId: ctx.info.activityId, attempt }
      : null;
    // The hold ends with the unit: on success, a non-retryable failure or a cancellation. A retryable
    // failure keeps it (the next attempt takes it over), so the VM cannot migrate between attempts.
    let terminal = false;
    try {
      if (hold) await withVm(conn, input.vmId, (dom) => holdVm(dom, hold));
      await breakpoint('startJob');
      // An earlier attempt that started the job said so in its heartbeats: then the job is adopted or its
      // work found done, never started a second time.
      const prior = ctx.info.heartbeatDetails as { jobStarted?: boolean } | undefined;
      const start = await withVm(conn, input.vmId, (dom) =>
        startOrAdopt(dom, input, input.bandwidthBytesPerSec, prior?.jobStarted !== true),
      );
      if (start !== 'already-done') ctx.heartbeat({ cur, end, jobStarted: true });
      ctx.log.info('mergeOnHost: job', { start, attempt, disk: input.diskTarget });
      await breakpoint('startJob-issued');
      let pivot: MergeOnHostResult['pivot'] = 'none';
      if (start !== 'already-done') {
        report({ stage: 'copying', cur, end, attempt });
        await breakpoint('copying');
        const active = input.jobKind === 'active-commit';
        const seen = await waitForJob({ ...input, expect: active ? 'ready' : 'completed' });
        const waited = seen.result;
        ({ cur, end } = waited);
        // The unit's next libvirt call on the job (pivot, or the chain check) is how it acts on the event.
        // A poll that found the job's end before libvirt's event arrived has no event to measure from.
        const noticed = (event: 'ready' | 'completed') => {
          if (seen.eventAt !== undefined) metrics.noticeLatency(performance.now() - seen.eventAt, { event });
          const noticedBy = seen.eventAt === undefined ? 'poll' : 'event';
          ctx.log.info('mergeOnHost: job ended', { event, noticedBy, attempt, disk: input.diskTarget });
        };
        if (waited.outcome === 'vm-stopped')
          throw nonRetryable(
            'VmCrashed',
            `VM ${input.vmId} stopped during the merge; its chain is unchanged and valid`,
            waited,
          );
        if (waited.outcome === 'failed')
          throw nonRetryable('MergeJobFailed', `block job failed: ${waited.detail ?? ''}`, waited);
        if (active) {
          report({ stage: 'ready', cur, end, attempt });
          await breakpoint('pivot');
          // A cancellation that arrived while READY wins over the pivot that has not been issued yet.
          if (ctx.cancellationSignal.aborted) throw new CancelledFailure('cancelled before the pivot');
          noticed('ready');
          pivotCalled = true;
          pivot = await withVm(conn, input.vmId, (dom) => pivotDisk(dom, input));
          ctx.log.info('mergeOnHost: pivot', { pivot, attempt, disk: input.diskTarget });
          await breakpoint('pivot-returned', { cancellable: false });
        } else noticed('completed');
      }
      pivotCalled = true; // a completed job is past the point of no return too
      await breakpoint('verifyMerged', { cancellable: false });
      await withVm(conn, input.vmId, (dom) => verifyChains(dom, input));
      terminal = true;
      if (hold) await release(conn, input.vmId, hold);
      // Counted by the attempt that finished the job's work (an adopted job's total too, once).
      if (start !== 'already-done') metrics.bytesCommitted(end, { jobKind: input.jobKind });
      return { start, pivot, cur: end, end, attempt };
    } catch (err) {
      if (!pivotCalled && ctx.cancellationDetails?.cancelRequested) {
        const aborted = await withVm(conn, input.vmId, (dom) => abortDisk(dom, input));
        ctx.log.info('mergeOnHost: cancelled before the pivot', { ...aborted, attempt });
        // The job may have completed on its own meanwhile: then the merge is done and must be finished.
        if (!aborted.merged) {
          terminal = true;
          throw new CancelledFailure('merge cancelled before the pivot; job aborted');
        }
        await withVm(conn, input.vmId, (dom) => verifyChains(dom, input));
        terminal = true;
        return { start: 'already-done', pivot: 'none', cur: end, end, attempt };
      }
      terminal ||= isTerminal(err);
      throw err;
    } finally {
      if (hold && terminal) await release(conn, input.vmId, hold).catch(warn(ctx));
      await report.flush();
    }
  };
}

/** A failure that ends the unit for good: the workflow will not retry it. */
function isTerminal(err: unknown): boolean {
  return err instanceof CancelledFailure || (err instanceof ApplicationFailure && err.nonRetryable === true);
}

/**
 * Releases this attempt's hold. A VM that stopped or is gone has none left. After a success a release that
 * fails (libvirtd away) fails the attempt, retryably: the retry finds the merge done and releases then.
 */
async function release(
  conn: Awaited<ReturnType<HostActivityDeps['libvirt']>>,
  vmId: string,
  hold: HoldRef,
): Promise<void> {
  try {
    await withVm(conn, vmId, (dom) => releaseVm(dom, hold));
  } catch (err) {
    if (err instanceof ApplicationFailure && err.type === 'VmNotFound') return;
    throw err;
  }
}

function warn(ctx: Context): (err: unknown) => void {
  return (err) => {
    ctx.log.warn('mergeOnHost: hold not released', { error: String(err) });
  };
}

type Reporter = ((r: HostStageReport) => void) & { flush(): Promise<void> };

/**
 * Stage reports to the workflow (and to its removal), in order, each best effort: a report that cannot be
 * sent (Temporal down) never holds the merge up; the workflows also learn the final state from the result.
 * A report waits REPORT_SETTLE_MS and is dropped when the next one (or the end) comes first.
 */
function stageReporter(ctx: Context, parent: MergeOnHostInput['alsoReportTo']): Reporter {
  const wf = ctx.info.workflowExecution;
  let chain: Promise<void> = Promise.resolve();
  let settling: NodeJS.Timeout | undefined;
  const report = (r: HostStageReport): void => {
    clearTimeout(settling);
    settling = setTimeout(() => send(r), REPORT_SETTLE_MS);
  };
  const send = (r: HostStageReport): void => {
    chain = chain.then(async () => {
      if (!wf) return; // not started by a workflow (a direct call from a test)
      const { workflow } = ctx.client;
      const sent = [workflow.getHandle(wf.workflowId, wf.runId).signal(HOST_STAGE_SIGNAL, r)];
      if (parent)
        sent.push(
          workflow
            .getHandle(parent.workflowId, parent.runId)
            .signal(DISK_HOST_STAGE_SIGNAL, { ...r, imageId: parent.imageId }),
        );
      for (const s of await Promise.allSettled(sent))
        if (s.status === 'rejected')
          ctx.log.warn('mergeOnHost: stage report not delivered', {
            stage: r.stage,
            error: String(s.reason),
          });
    });
  };
  return Object.assign(report, {
    flush: () => {
      clearTimeout(settling);
      return Promise.race([chain, new Promise<void>((r) => setTimeout(r, REPORT_FLUSH_MS).unref())]);
    },
  });
}
