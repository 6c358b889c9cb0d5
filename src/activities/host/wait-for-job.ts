import { Context } from '@temporalio/activity';
import { BlockJobStatus } from '../../libvirt/constants';
import { isNoDomainError } from '../../libvirt/errors';
import type { HostActivities, JobRef, WaitResult } from '../contracts';
import type { HostActivityDeps } from './deps';
import { definitionWorkDone, jobWorkDone } from './block-job';
import { isActive, mirrorReady, stateOf, withVm } from './vm';

const STATUS_NAME: Record<number, string> = { 0: 'COMPLETED', 1: 'FAILED', 2: 'CANCELED', 3: 'READY' };

/**
 * Step 4: waits inside one heartbeating activity. BLOCK_JOB_2 and LIFECYCLE events wake it within
 * milliseconds; a short poll is the fallback. A retry after an agent crash re-attaches to the running
 * job. A vanished job proves nothing: the outcome is decided by reading the chain again.
 */
export function makeWaitForJob(deps: HostActivityDeps): HostActivities['waitForJob'] {
  const wait = waitForJobEvent(deps);
  return async (input) => (await wait(input)).result;
}

/** What ended a wait, and when libvirt's event it waited for reached this process (for the notice latency). */
export interface WaitSeen {
  result: WaitResult;
  /** performance.now() of the awaited READY/COMPLETED event, when one arrived. */
  eventAt: number | undefined;
}

/** waitForJob for the host unit, which also learns when the awaited event arrived. */
export function waitForJobEvent(
  deps: HostActivityDeps,
): (input: Parameters<HostActivities['waitForJob']>[0]) => Promise<WaitSeen> {
  const pollMs = deps.jobPollMs ?? 100;
  return async (input) => {
    const ctx = Context.current();
    const conn = await deps.libvirt();
    let wake: () => void = () => undefined;
    let lastEvent: number | undefined;
    let eventAt: number | undefined;
    const awaited = input.expect === 'ready' ? BlockJobStatus.READY : BlockJobStatus.COMPLETED;
    const offJob = conn.onBlockJob((e) => {
      if (e.domainUuid !== input.vmId || e.disk !== input.diskTarget) return;
      lastEvent = e.status;
      if (e.status === awaited) eventAt ??= e.receivedAt;
      wake();
    });
    const offLife = conn.onLifecycle((e) => {
      if (e.domainUuid === input.vmId) wake();
    });
    let cur = 0;
    let end = 0;
    const seen = (result: WaitResult): WaitSeen => ({ result, eventAt });
    try {
      for (;;) {
        // The fast path: libvirt's own READY/COMPLETED event ends the wait with no further round trip
        // (a job that merely vanished still goes through the chain check below, and step 6 re-reads
        // every chain before anything is deleted).
        if (input.expect === 'ready' && lastEvent === BlockJobStatus.READY)
          return seen({ outcome: 'ready', cur: end, end });
        if (input.expect === 'completed' && lastEvent === BlockJobStatus.COMPLETED)
          return seen({ outcome: 'completed', cur: end, end });
        const woken = new Promise<void>((r) => (wake = r));
        const polled = withVm(conn, input.vmId, async (dom): Promise<WaitResult | undefined> => {
          if (!isActive(await stateOf(dom))) return await afterStop(dom, input, cur, end);
          const info = await dom.blockJobInfo(input.diskTarget);
          if (!info) {
            if (await jobWorkDone(dom, input)) return { outcome: 'completed', cur: end, end };
            return {
              outcome: 'failed',
              cur,
              end,
              detail: `job vanished (last event ${STATUS_NAME[lastEvent ?? -1] ?? 'none'}) and the chain still holds top`,
            };
          }
          cur = info.cur;
          end = info.end;
          // jobStarted: a retry knows that a job of this merge existed (see mergeOnHost).
          ctx.heartbeat({ cur, end, jobStarted: true });
          // READY as vdsm learnt to decide it: libvirt's event, or the live XML's <mirror ready='yes'>
          // (a retry that re-attaches to a job already READY gets no new event). cur == end alone is not
          // enough: libvirt can report it before QEMU has synchronised the mirror.
          if (
            input.expect === 'ready' &&
            end > 0 &&
            cur === end &&
            (await mirrorReady(dom, input.diskTarget))
          )
            return { outcome: 'ready', cur, end };
          return undefined;
        }).catch((err: unknown) => {
          if (err instanceof Error && 'type' in err && err.type === 'VmNotFound')
            return { outcome: 'vm-stopped' as const, cur, end, detail: 'the VM is no longer defined' };
          if (isNoDomainError(err)) return { outcome: 'vm-stopped' as const, cur, end };
          throw err;
        });
        // An event pre-empts a poll still waiting for libvirt's answers (calls on a connection are serialized).
        const step = await Promise.race([polled, woken.then(() => 'woken' as const)]);
        if (step === 'woken') {
          polled.catch(() => undefined);
          continue;
        }
        if (step) return seen(step);
        await Promise.race([woken, ctx.sleep(pollMs), ctx.cancelled]);
      }
    } finally {
      offJob();
      offLife();
    }
  };
}

/**
 * The VM stopped: the job is gone with it. Did it finish its work first? An active commit waiting for READY
 * has not pivoted, so its definition still names top and this says no.
 */
async function afterStop(
  dom: Parameters<Parameters<typeof withVm>[2]>[0],
  job: JobRef,
  cur: number,
  end: number,
): Promise<WaitResult> {
  return (await definitionWorkDone(dom, job))
    ? { outcome: 'completed', cur: end, end }
    : {
        outcome: 'vm-stopped',
        cur,
        end,
        detail: 'the VM stopped before the job finished; its chain is unchanged',
      };
}
