// Starting livemerge workflows from tests exactly as a user's service would: by type, id and JSON input.
import { randomUUID } from 'node:crypto';
import type { WorkflowHandle, WorkflowStartOptions } from '@temporalio/client';
import { ENGINE_TASK_QUEUE } from '../../src/common/task-queues';
import type { MergeDiskInput, RemoveSnapshotInput } from '../../src/schemas/inputs';
import type { Progress } from '../../src/schemas/progress';
import type {
  CreateSnapshotResult,
  createSnapshot as CreateSnapshotWorkflow,
} from '../../src/workflows/create-snapshot';
import type { MergeDiskResult } from '../../src/workflows/merge-disk';
import type { RemoveSnapshotResult } from '../../src/workflows/remove-snapshot';
import { writeThroughGuest } from './data';
import { pollUntil } from './vm-fixture';
import type { TestVm } from './vm-fixture';
import type { Stack, VmDisk } from './stack';
import { createStackVm } from './stack';

export async function createSnapshot(
  s: Stack,
  vmId: string,
  description?: string,
): Promise<CreateSnapshotResult> {
  const snapshotId = randomUUID();
  return await s.client.workflow.execute<typeof CreateSnapshotWorkflow>('createSnapshot', {
    taskQueue: ENGINE_TASK_QUEUE,
    workflowId: `create-snapshot:${vmId}:${snapshotId}`,
    args: [{ vmId, snapshotId, ...(description !== undefined ? { description } : {}) }],
  });
}

/**
 * A running one-disk qcow2 VM with one snapshot: AAAA (4 × 64 KiB) frozen in the snapshot's volume, BBBB
 * (4 × 64 KiB from 128 KiB) written above it. Removing the snapshot is an active commit with a pivot.
 */
export async function vmWithSnapshot(s: Stack): Promise<{ vm: TestVm; disk: VmDisk; snapshotId: string }> {
  const { vm, disks } = await createStackVm(s, { disks: 1, format: 'qcow2' });
  await writeThroughGuest(vm.domain, 0, { byte: 0x41, offset: 0, length: 4 << 16 });
  const { snapshotId } = await createSnapshot(s, vm.uuid);
  await writeThroughGuest(vm.domain, 0, { byte: 0x42, offset: 2 << 16, length: 4 << 16 });
  return { vm, disk: disks[0]!, snapshotId };
}

/** `extra`: more start options (e.g. the CLI's memo and search attributes, operationStartOptions). */
export function startRemoveSnapshot(
  s: Stack,
  input: RemoveSnapshotInput,
  extra: Pick<WorkflowStartOptions, 'memo' | 'typedSearchAttributes'> = {},
): Promise<WorkflowHandle> {
  return s.client.workflow.start('removeSnapshot', {
    taskQueue: ENGINE_TASK_QUEUE,
    workflowId: `remove-snapshot:${input.vmId}:${input.snapshotId}`,
    args: [input],
    ...extra,
  });
}

export async function removeSnapshot(s: Stack, input: RemoveSnapshotInput): Promise<RemoveSnapshotResult> {
  return (await (await startRemoveSnapshot(s, input)).result()) as RemoveSnapshotResult;
}

export function startMergeDisk(s: Stack, input: MergeDiskInput): Promise<WorkflowHandle> {
  return s.client.workflow.start('mergeDisk', {
    taskQueue: ENGINE_TASK_QUEUE,
    workflowId: `merge-disk:${input.vmId}:${input.imageId}`,
    args: [input],
  });
}

export async function mergeDisk(s: Stack, input: MergeDiskInput): Promise<MergeDiskResult> {
  return (await (await startMergeDisk(s, input)).result()) as MergeDiskResult;
}

/** Waits (by querying, never by sleeping blindly) until the workflow's `progress` satisfies `ok`. */
export async function waitForProgress(
  handle: WorkflowHandle,
  ok: (p: Progress) => boolean,
  timeoutMs = 60_000,
): Promise<Progress> {
  return await pollUntil(
    async () => {
      const p = await handle.query<Progress>('progress').catch(() => undefined);
      return p && ok(p) ? p : undefined;
    },
    timeoutMs,
    'workflow progress',
    50,
  );
}

/** The ApplicationFailure type a failed workflow ended with. */
export async function failureTypeOf(promise: Promise<unknown>): Promise<string | undefined> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (err === undefined) return undefined;
  for (let e: unknown = err; e instanceof Error; e = e.cause)
    if ('type' in e && typeof e.type === 'string' && e.type) return e.type;
  return err instanceof Error ? err.name : JSON.stringify(err);
}
