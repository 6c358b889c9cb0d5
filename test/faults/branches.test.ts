// The branches the failure model cites, each reached by a breakpoint *inside* an activity and each proven
// taken from the history (the attempt that finished, the branch it reports, a log line), not only from
// the end state: a retry that adopts a running job, finds a pivot already done, breaks a dead agent's image
// lock; the guard refusing while libvirtd is down; a host that finishes without the engine (seed 001);
// a VM located only once its agent answers; faults in removeSnapshot (two disks) and createSnapshot.
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import type { WorkflowHandle } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ENGINE_TASK_QUEUE } from '../../src/common/task-queues';
import { StorageDomain } from '../../src/storage/storage-domain';
import type { StoredVolume } from '../../src/storage/storage-domain';
import { exists, hasPattern, writeThroughGuest } from '../helpers/data';
import { activityRun, scheduledActivity } from '../helpers/history';
import { ProcessStack, until } from '../helpers/process-stack';
import { removeVm, testVmXml, uniqueVmName } from '../helpers/vm-fixture';
import type { FaultContext } from './harness';
import {
  createSnapshot,
  diskChainOf,
  faultContext,
  inject,
  outcomeWithin,
  progressOf,
  waitForLibvirtdAlone,
  withDom,
} from './harness';

const MiB = 1 << 20;
const DATA = { byte: 0x51, offset: 0, length: 2 * MiB };

let stack: ProcessStack;
let ctx: FaultContext;
const vms: string[] = [];

beforeAll(async () => {
  stack = await ProcessStack.start({ namespace: 'livemerge-branches' });
  ctx = faultContext(stack);
});

afterAll(async () => {
  const conn = await ctx?.libvirt().catch(() => undefined);
  if (conn) for (const name of vms) await removeVm(conn, name);
  await ctx?.libvirt.close();
  await stack?.stop();
});

interface Vm {
  vmId: string;
  sd: StorageDomain;
  images: string[];
  /** Each disk's chain after one snapshot and DATA (and `extra`) written into its leaf. */
  chains: StoredVolume[][];
  snapshotId: string;
}

/**
 * A running VM with `disks` disks, one snapshot, and DATA written into each disk's new leaf; with
 * `bulkMiB`, that much more in scattered 256 KiB extents, so that a throttled copy lasts (QEMU copies one
 * contiguous dirty range in a single unthrottled iteration).
 */
async function snapshottedVm(disks = 1, bulkMiB = 0): Promise<Vm> {
  stack.releaseAll();
  await stack.waitHealthy();
  const sd = await StorageDomain.create(stack.storageRoot, randomUUID());
  const bases = [];
  for (let i = 0; i < disks; i++) bases.push(await sd.createImage({ format: 'qcow2', capacity: 64 * MiB }));
  const name = uniqueVmName();
  vms.push(name);
  const conn = await ctx.libvirt();
  const dom = await conn.defineXml(
    testVmXml(
      name,
      bases.map((b) => ({ path: b.path, format: 'qcow2' as const })),
    ),
  );
  const vmId = dom.uuid;
  try {
    await dom.create();
  } finally {
    dom.free();
  }
  const snapshotId = await createSnapshot(ctx, vmId);
  for (let i = 0; i < disks; i++) {
    await withDom(ctx, vmId, (d) => writeThroughGuest(d, i, DATA));
    for (let k = 0; k < bulkMiB * 4; k++)
      await withDom(ctx, vmId, (d) =>
        writeThroughGuest(d, i, { byte: 0x52, offset: 4 * MiB + k * 512 * 1024, length: 256 * 1024 }),
      );
  }
  const images = bases.map((b) => b.imageId);
  const chains = await Promise.all(images.map((id) => sd.readChain(id)));
  return { vmId, sd, images, chains, snapshotId };
}

function mergeLeaf(vm: Vm, bandwidthBytesPerSec?: number): Promise<WorkflowHandle> {
  const chain = vm.chains[0]!;
  return stack.client.workflow.start('mergeDisk', {
    taskQueue: ENGINE_TASK_QUEUE,
    workflowId: `merge-disk:${vm.vmId}:${vm.images[0]!}`,
    args: [
      {
        vmId: vm.vmId,
        storageDomainId: vm.sd.id,
        imageId: vm.images[0]!,
        baseVolumeId: chain[0]!.volumeId,
        topVolumeId: chain[1]!.volumeId,
        ...(bandwidthBytesPerSec ? { bandwidthBytesPerSec } : {}),
      },
    ],
  });
}

function removeSnapshot(vm: Vm, bandwidthBytesPerSec?: number): Promise<WorkflowHandle> {
  return stack.client.workflow.start('removeSnapshot', {
    taskQueue: ENGINE_TASK_QUEUE,
    workflowId: `remove-snapshot:${vm.vmId}:${vm.snapshotId}`,
    args: [
      { vmId: vm.vmId, snapshotId: vm.snapshotId, ...(bandwidthBytesPerSec ? { bandwidthBytesPerSec } : {}) },
    ],
  });
}

const childId = (vm: Vm, i: number) => `merge-disk:${vm.vmId}:${vm.images[i]!}`;

/** The merge of disk i completed: base alone, LEGAL, holding DATA; the merged leaf deleted. */
async function expectDiskMerged(vm: Vm, i: number): Promise<void> {
  const chain = vm.chains[i]!;
  const now = await vm.sd.readChain(vm.images[i]!);
  expect(now.map((v) => [v.volumeId, v.legality])).toEqual([[chain[0]!.volumeId, 'LEGAL']]);
  expect(await exists(chain[1]!.path)).toBe(false);
  expect(await hasPattern(chain[0]!.path, 'qcow2', DATA)).toBe(true);
}

/** Each activity attempt of the run: type, attempt, the worker that ran it, how it ended. */
async function attemptsOf(handle: WorkflowHandle): Promise<string> {
  const events = (await handle.fetchHistory()).events ?? [];
  return JSON.stringify(
    events.flatMap((e) => {
      const s = e.activityTaskStartedEventAttributes;
      const type = events.find((x) => String(x.eventId) === String(s?.scheduledEventId))
        ?.activityTaskScheduledEventAttributes?.activityType?.name;
      return s
        ? [{ type, attempt: s.attempt, identity: s.identity, lastFailure: s.lastFailure?.message }]
        : [];
    }),
  );
}

async function succeeded(handle: WorkflowHandle): Promise<void> {
  const { failure } = await outcomeWithin(ctx, handle, 180_000);
  expect(failure, stack.allLogs()).toBeUndefined();
}

describe('the host finishes what it started', () => {
  it('engine killed during the copy and kept down: the volume leaves the live chain; after the restart the snapshot is removed (seed 001)', async () => {
    const vm = await snapshottedVm(1, 8);
    const chain = vm.chains[0]!;
    const handle = await removeSnapshot(vm, 2 * MiB);
    const child = stack.client.workflow.getHandle(childId(vm, 0));
    await until('the copy to run', async () => (await progressOf(child))?.stage === 'copying', 60_000);
    expect(await withDom(ctx, vm.vmId, (d) => d.blockJobInfo('vda'))).not.toBeNull();
    await stack.kill('engine');
    // With no engine at all, the host completes the job, pivots and verifies: top leaves the live chain.
    await until(
      'the merged volume to leave the live chain while the engine is down',
      async () => (await diskChainOf(ctx, vm.vmId, false)).join() === chain[0]!.path,
      120_000,
      100,
    );
    expect(stack.pid('engine')).toBeUndefined();
    expect(await withDom(ctx, vm.vmId, (d) => d.blockJobInfo('vda'))).toBeNull();
    expect(await exists(chain[1]!.path)).toBe(true); // deleting waits for the engine
    await stack.startPart('engine');
    await succeeded(handle);
    await expectDiskMerged(vm, 0);
    const unit = await activityRun(child, 'mergeOnHost');
    expect(unit.result).toMatchObject({ start: 'started', pivot: 'pivoted', attempt: 1 });
  });
});

/**
 * Merges vm's leaf with the host agent killed while held at `breakpoint` (`atHold` runs first, with the
 * VM's chain as the hold left it); the merge must complete on the restarted agent. Returns the host unit.
 */
async function mergeWithHostKilledAt(
  vm: Vm,
  breakpoint: string,
  atHold: () => Promise<void>,
  bandwidthBytesPerSec?: number,
): Promise<Awaited<ReturnType<typeof activityRun>>> {
  stack.hold(breakpoint);
  const handle = await mergeLeaf(vm, bandwidthBytesPerSec);
  await stack.waitHeld(breakpoint, handle.workflowId);
  await atHold();
  await stack.kill('host');
  stack.release(breakpoint);
  await stack.startPart('host');
  await succeeded(handle);
  await expectDiskMerged(vm, 0);
  const unit = await activityRun(handle, 'mergeOnHost');
  expect(unit.attempt).toBeGreaterThan(1);
  return unit;
}

describe('a retry takes the branch that recognises work already done', () => {
  it('agent killed after the block commit was issued: the retry adopts the running job', async () => {
    const vm = await snapshottedVm(1, 8);
    const unit = await mergeWithHostKilledAt(
      vm,
      'startJob-issued',
      async () => expect(await withDom(ctx, vm.vmId, (d) => d.blockJobInfo('vda'))).not.toBeNull(),
      2 * MiB,
    );
    expect(unit.result).toMatchObject({ start: 'adopted', pivot: 'pivoted' });
  });

  it('agent killed after the pivot call returned: the retry finds the merge done and only verifies', async () => {
    const vm = await snapshottedVm();
    const unit = await mergeWithHostKilledAt(vm, 'pivot-returned', async () =>
      expect((await diskChainOf(ctx, vm.vmId, false)).join()).toBe(vm.chains[0]![0]!.path),
    );
    expect(unit.result).toMatchObject({ start: 'already-done', pivot: 'none' });
  });

  it('VM crashed and agent killed after the pivot call returned: the retry finds the pivot in the definition, the merge completes', async () => {
    const vm = await snapshottedVm();
    const base = vm.chains[0]![0]!.path;
    const unit = await mergeWithHostKilledAt(vm, 'pivot-returned', async () => {
      // libvirt wrote the pivot into the persistent definition: the VM comes back on the base.
      expect((await diskChainOf(ctx, vm.vmId, true)).join()).toBe(base);
      await withDom(ctx, vm.vmId, (d) => d.destroy());
    });
    // The branch: the retry met a stopped VM whose definition holds the base only (not VmCrashed).
    expect(unit.result).toMatchObject({ start: 'already-done', pivot: 'none' });
    expect(await diskChainOf(ctx, vm.vmId, true)).toEqual([base]);
  });

  it("storage agent killed holding an image lock: the retry breaks the dead owner's lock", async () => {
    const vm = await snapshottedVm();
    const lockFile = `${vm.sd.imageDir(vm.images[0]!)}/.image.lock`;
    stack.hold('image-lock');
    const handle = await mergeLeaf(vm);
    const held = await stack.waitHeld('image-lock', handle.workflowId);
    const owner = JSON.parse(await fs.readFile(lockFile, 'utf8')) as { pid: number };
    expect(owner.pid).toBe(held.pid);
    await stack.kill('storage');
    stack.release('image-lock');
    await stack.startPart('storage');
    await succeeded(handle);
    await expectDiskMerged(vm, 0);
    // Recording and deleting are one storage task (lean histories v3): its retry is the branch taken.
    expect((await activityRun(handle, 'recordAndDelete')).attempt).toBeGreaterThan(1);
    // The worker's logger buffers activity records (the SDK orders them with its core's for 100 ms or
    // more before writing them): the line follows the result, so it is waited for.
    await until(
      'the storage agent to log the broken lock',
      () => stack.logTail('storage', 400).includes('image lock: broke the lock of a dead owner'),
      30_000,
    ).catch(async (err: unknown) => {
      throw new Error(
        `${String(err)}: lock owner ${JSON.stringify(owner)}, held ${JSON.stringify(held)}, attempts ${await attemptsOf(handle)}\n${stack.logTail('storage', 400)}`,
      );
    });
  });

  it('libvirtd down at deletion: the deletion guard refuses (retryably) and deletes once libvirtd answers', async () => {
    const vm = await snapshottedVm();
    const chain = vm.chains[0]!;
    stack.hold('deleteVolumes');
    const handle = await mergeLeaf(vm);
    await stack.waitHeld('deleteVolumes', handle.workflowId);
    await waitForLibvirtdAlone(ctx);
    const restore = await inject(ctx, 'libvirtd-restart', vm.vmId);
    try {
      stack.release('deleteVolumes');
      // The guard cannot ask libvirt who uses the volume: it refuses, and the step is retried.
      await until(
        'the deletion (recordAndDelete) to be retried',
        async () => ((await handle.describe()).raw.pendingActivities ?? []).some((a) => (a.attempt ?? 0) > 1),
        60_000,
        200,
      );
      expect(await exists(chain[1]!.path)).toBe(true);
    } finally {
      await restore();
    }
    await succeeded(handle);
    await expectDiskMerged(vm, 0);
    const del = await activityRun(handle, 'recordAndDelete');
    expect(del.attempt).toBeGreaterThan(1);
    expect(del.lastFailure).toBeDefined();
  });
});

describe('finding the VM waits for a host that does not answer', () => {
  it('the only host agent stopped: a removal started meanwhile completes once the agent is back', async () => {
    const vm = await snapshottedVm();
    await stack.kill('host');
    const handle = await removeSnapshot(vm);
    // The probe of the silent host is retried, not taken for "no such VM".
    await until(
      'the silent host to be asked again',
      async () =>
        ((await handle.fetchHistory()).events ?? []).filter(scheduledActivity('locateVm')).length >= 2,
      60_000,
      200,
    );
    expect((await handle.describe()).status.name).toBe('RUNNING');
    await stack.startPart('host');
    await succeeded(handle);
    await expectDiskMerged(vm, 0);
  });
});

describe('removeSnapshot with two disks', () => {
  /**
   * Removes the snapshot of a 2-disk VM with vdb's merge held at `breakpoint` until vda's has completed,
   * kills `part` there, restarts it, and checks that both disks merge.
   */
  async function killBetweenChildren(breakpoint: string, part: 'engine' | 'host'): Promise<Vm> {
    const vm = await snapshottedVm(2);
    stack.holds.hold(breakpoint, childId(vm, 1));
    const handle = await removeSnapshot(vm);
    await stack.waitHeld(breakpoint, childId(vm, 1));
    await until(
      'the first disk to merge',
      async () =>
        (await stack.client.workflow.getHandle(childId(vm, 0)).describe()).status.name === 'COMPLETED',
      60_000,
      100,
    );
    await stack.kill(part);
    stack.releaseAll();
    await stack.startPart(part);
    await succeeded(handle);
    for (const i of [0, 1]) await expectDiskMerged(vm, i);
    return vm;
  }

  it('engine killed between the children (one merged, one before its recording): both merge', async () => {
    await killBetweenChildren('recordMerge', 'engine');
  });

  it('host agent killed with one disk merged and the other before its job: the retry merges it', async () => {
    const vm = await killBetweenChildren('startJob', 'host');
    const unit = await activityRun(stack.client.workflow.getHandle(childId(vm, 1)), 'mergeOnHost');
    expect(unit.attempt).toBeGreaterThan(1);
    expect(unit.result).toMatchObject({ start: 'started', pivot: 'pivoted' });
  });
});

describe('createSnapshot at the host snapshot call', () => {
  function startCreate(vmId: string): Promise<WorkflowHandle> {
    const snapshotId = randomUUID();
    return stack.client.workflow.start('createSnapshot', {
      taskQueue: ENGINE_TASK_QUEUE,
      workflowId: `create-snapshot:${vmId}:${snapshotId}`,
      args: [{ vmId, snapshotId }],
    });
  }

  it('agent killed after the snapshot was taken: the retry recognises it, the snapshot completes', async () => {
    const vm = await snapshottedVm();
    stack.hold('snapshotDisks-taken');
    const handle = await startCreate(vm.vmId);
    await stack.waitHeld('snapshotDisks-taken', handle.workflowId);
    await stack.kill('host');
    stack.release('snapshotDisks-taken');
    await stack.startPart('host');
    await succeeded(handle);
    const chain = await vm.sd.readChain(vm.images[0]!);
    expect(chain).toHaveLength(3);
    expect(await diskChainOf(ctx, vm.vmId, false)).toEqual([...chain].reverse().map((v) => v.path));
    const call = await activityRun(handle, 'snapshotDisks');
    expect(call.attempt).toBeGreaterThan(1);
    expect(call.result).toEqual({ status: 'already-taken' });
  });

  it('VM crashed before the snapshot call: VmNotRunning, the new leaves discarded, the chain unchanged', async () => {
    const vm = await snapshottedVm();
    const dir = vm.sd.imageDir(vm.images[0]!);
    const files = (await fs.readdir(dir)).filter((f) => !f.startsWith('.')).sort();
    stack.hold('snapshotDisks');
    const handle = await startCreate(vm.vmId);
    await stack.waitHeld('snapshotDisks', handle.workflowId);
    await withDom(ctx, vm.vmId, (d) => d.destroy());
    stack.release('snapshotDisks');
    const { failure } = await outcomeWithin(ctx, handle, 120_000);
    expect(failure).toBe('VmNotRunning');
    expect((await fs.readdir(dir)).filter((f) => !f.startsWith('.')).sort()).toEqual(files);
    expect((await vm.sd.readChain(vm.images[0]!)).map((v) => v.volumeId)).toEqual(
      vm.chains[0]!.map((v) => v.volumeId),
    );
    expect((await diskChainOf(ctx, vm.vmId, true))[0]).toBe(vm.chains[0]![1]!.path);
  });
});
