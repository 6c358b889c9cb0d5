// One snapshot removal, merge or backup per VM at a time (DESIGN "Backups"): the lock is a child workflow
// `vm-lock:<vmId>` of the operation that holds it. Temporal refuses a second start of a running id, so
// taking the lock is atomic across engines; the child ends when the holder releases it or, with the
// holder's close (crash, termination, timeout), by its parent-close policy: a lock never outlives its holder.
// The holder's own children (a backup's snapshot and merge, a removal's per-disk merges) inherit it: the
// memo `livemergeVmLock` they are started with names the VM.
import {
  CancellationScope,
  ParentClosePolicy,
  WorkflowIdReusePolicy,
  condition,
  defineSignal,
  setHandler,
  startChild,
  workflowInfo,
} from '@temporalio/workflow';
import { engine } from './activities';
import { fail } from './failures';
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

/** The memo of a child started by a lock holder: it runs under its parent's lock. */
export function inheritVmLock(vmId: string): { memo: Record<string, string> } {
  return { memo: { [INHERITED]: vmId } };
}

export interface VmLockHandle {
  release(): Promise<void>;
}

const lockId = (vmId: string): string => `vm-lock:${vmId}`;

/**
 * Takes the VM's lock for this workflow, or refuses with BackupInProgress / MergeInProgress (naming the
 * holder). Before any side effect: a refusal changed nothing.
 */
export async function acquireVmLock(vmId: string): Promise<VmLockHandle> {
  const info = workflowInfo();
  if (info.memo?.[INHERITED] === vmId) return { release: () => Promise.resolve() };
  // The holder may close between our refused start and the lookup: one more try then.
  for (let attempt = 0; ; attempt++) {
    try {
      // Not cancellable: a cancelled holder keeps its lock while it compensates, until it releases it.
      const child = await CancellationScope.nonCancellable(() =>
        startChild(vmLock, {
          workflowId: lockId(vmId),
          args: [{ vmId }],
          parentClosePolicy: ParentClosePolicy.TERMINATE,
          workflowIdReusePolicy: WorkflowIdReusePolicy.ALLOW_DUPLICATE,
          memo: { holder: { workflowId: info.workflowId, workflowType: info.workflowType } },
        }),
      );
      return {
        release: async () => {
          await child.signal(releaseVmLockSignal);
          await child.result();
        },
      };
    } catch (err) {
      if (!(err instanceof Error) || err.name !== 'WorkflowExecutionAlreadyStartedError') throw err;
      const holder = await engine.vmLockHolder({ vmId });
      if (holder === null && attempt === 0) continue;
      const what = holder ? `${holder.workflowType} ${holder.workflowId}` : 'another operation';
      fail(
        holder?.workflowType === 'backupVm' ? 'BackupInProgress' : 'MergeInProgress',
        `VM ${vmId} is busy: ${what} holds it (${lockId(vmId)}); one snapshot removal, merge or backup per VM at a time`,
      );
    }
  }
}

/** Runs `fn` under the VM's lock; a refusal ends the tracker's stage as failed, before any side effect. */
export async function withVmLock<T>(
  vmId: string,
  tracker: ProgressTracker,
  fn: () => Promise<T>,
): Promise<T> {
  let lock: VmLockHandle;
  try {
    lock = await acquireVmLock(vmId);
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
