// One snapshot removal, merge or backup per VM at a time (DESIGN "Backups"): the lock is a child workflow
// `vm-lock:<vmId>` of the operation that holds it. Temporal refuses a second start of a running id, so
// taking the lock is atomic across engines. The child ends with its holder's close (completion, failure,
// crash, termination, timeout), by its parent-close policy: it ends Terminated, which is its release, and a
// lock never outlives its holder. (Before lean histories v2 a holder also released it with a signal and
// waited for it to end: 13 more events and ~150 ms at the end of every removal.)
// The holder's own children (a backup's snapshot and merge, a removal's per-disk merges) inherit it: the
// memo `livemergeVmLock` they are started with names the VM.
// Since lean histories v3 the lock is started with a cron schedule: Temporal holds a cron workflow's first
// task back until its first time comes, so the lock is a running execution that no worker runs (its
// history: started, terminated), not a workflow task and a sandbox per operation.
import {
  CancellationScope,
  ParentClosePolicy,
  WorkflowIdReusePolicy,
  condition,
  defineSignal,
  setHandler,
  sleep,
  startChild,
  workflowInfo,
} from '@temporalio/workflow';
import { engine } from './activities';
import { fail } from './failures';
import { historyMemo, leanV2, leanV3 } from './lean';
import type { ProgressTracker } from './progress';

/** Operations started before the VM lock existed replay (and finish) without it. */
export const VM_LOCK_PATCH = 'livemerge-vm-lock';

export const releaseVmLockSignal = defineSignal('release');

/** The lock itself: held until released (or its holder closes). */
export async function vmLock(_input: { vmId: string }): Promise<void> {
  let released = false;
  setHandler(releaseVmLockSignal, () => {
    released = true;
  });
  await condition(() => released);
}

const INHERITED = 'livemergeVmLock';

/** The memo of a child started by a lock holder: it runs under its parent's lock (and its history round). */
export function inheritVmLock(vmId: string): { memo: Record<string, unknown> } {
  return { memo: { [INHERITED]: vmId, ...historyMemo() } };
}

/**
 * A lock's schedule (v3): its first task waits for the next 29 February, 00:00 UTC. A lock still held then
 * (it ends with its holder) runs vmLock, which waits like every lock before v3 did.
 */
export const VM_LOCK_CRON = '0 0 29 2 *';

export interface VmLockHandle {
  /** Ends the lock now (before lean histories v2); a no-op since: the holder's close ends it. */
  release(): Promise<void>;
}

/**
 * A holder that closed a moment ago may leave its lock running for as long as the server takes to apply
 * the close policy (milliseconds): the start is tried again after these pauses.
 */
const CLOSED_HOLDER_RETRY_MS = [50, 100, 200, 400, 800, 1600, 3200, 3200];

const lockId = (vmId: string): string => `vm-lock:${vmId}`;

/** A lock its holder's close ends (inherited from the parent, or taken under lean histories v2). */
const ENDS_WITH_HOLDER: VmLockHandle = { release: () => Promise.resolve() };

/**
 * Takes the VM's lock for this workflow, or refuses with BackupInProgress / MergeInProgress (naming the
 * holder). Before any side effect: a refusal changed nothing.
 */
export async function acquireVmLock(vmId: string): Promise<VmLockHandle> {
  const info = workflowInfo();
  if (info.memo?.[INHERITED] === vmId) return ENDS_WITH_HOLDER;
  // The holder may close between our refused start and the lookup, or have closed just before it (its
  // lock still ending): the start is tried again then.
  const v2 = leanV2();
  const v3 = leanV3();
  const holderMemo = { workflowId: info.workflowId, workflowType: info.workflowType };
  for (let attempt = 0; ; attempt++) {
    try {
      // Not cancellable: a cancelled holder keeps its lock while it compensates, until it releases it or closes.
      const child = await CancellationScope.nonCancellable(() =>
        startChild(vmLock, {
          workflowId: lockId(vmId),
          args: [{ vmId }],
          parentClosePolicy: ParentClosePolicy.TERMINATE,
          workflowIdReusePolicy: WorkflowIdReusePolicy.ALLOW_DUPLICATE,
          memo: { holder: v2 ? { ...holderMemo, runId: info.runId } : holderMemo },
          ...(v3 ? { cronSchedule: VM_LOCK_CRON } : {}),
        }),
      );
      if (v2) return ENDS_WITH_HOLDER;
      return {
        release: async () => {
          await child.signal(releaseVmLockSignal);
          await child.result();
        },
      };
    } catch (err) {
      if (!(err instanceof Error) || err.name !== 'WorkflowExecutionAlreadyStartedError') throw err;
      // null: the lock has no running holder (it closed, and its lock ends or just ended).
      const holder = await engine.vmLockHolder({ vmId });
      // Before v2: one immediate retry; since: a pause before each (the close policy takes a moment).
      const pause = v2 ? CLOSED_HOLDER_RETRY_MS[attempt] : attempt === 0 ? 0 : undefined;
      if (holder === null && pause !== undefined) {
        if (pause > 0) await sleep(pause);
        continue;
      }
      const what = holder ? `${holder.workflowType} ${holder.workflowId}` : 'another operation';
      fail(
        holder?.workflowType === 'backupVm' ? 'BackupInProgress' : 'MergeInProgress',
        `VM ${vmId} is busy: ${what} holds it (${lockId(vmId)}); one snapshot removal, merge or backup per VM at a time`,
      );
    }
  }
}

/**
 * Starts taking the VM's lock while the caller goes on reading (what it reads is then read under the lock);
 * withVmLock awaits it. Its refusal is seen there, not as an unhandled rejection.
 */
export function startVmLock(vmId: string): Promise<VmLockHandle> {
  const taking = acquireVmLock(vmId);
  taking.catch(() => undefined);
  return taking;
}

/**
 * Runs `fn` under the VM's lock (`taking`: one startVmLock began); a refusal ends the tracker's stage as
 * failed, before any side effect.
 */
export async function withVmLock<T>(
  vmId: string,
  tracker: ProgressTracker,
  fn: () => Promise<T>,
  taking?: Promise<VmLockHandle>,
): Promise<T> {
  let lock: VmLockHandle;
  try {
    lock = await (taking ?? acquireVmLock(vmId));
  } catch (err) {
    tracker.stage('failed');
    throw err;
  }
  try {
    return await fn();
  } finally {
    await CancellationScope.nonCancellable(() => lock.release());
  }
}
