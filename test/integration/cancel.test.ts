// Cancellation, exactly as DESIGN.md's table: before the point of no return (the pivot call reaching
// libvirt, a completed job, a finished cold copy) a cancel aborts and leaves chain, files and metadata as
// they were (CANCELLED, audit `cancelled`); from the pivot on it is ignored (COMPLETED, audit `completed`).
// Stages are reached with breakpoints (src/testing/holds.ts), never by sleeping; each test reads from the
// history which branch the host unit took.
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import type { WorkflowHandle } from '@temporalio/client';
import { CancelledFailure, WorkflowFailedError } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { afterEach, describe, expect, it } from 'vitest';
import { ENGINE_TASK_QUEUE } from '../../src/common/task-queues';
import { parseDomainDiskChains } from '../../src/inspect/domain-xml';
import type { Domain } from '../../src/libvirt';
import type { RemoveSnapshotProgress } from '../../src/schemas/progress';
import type { StoredVolume } from '../../src/storage/storage-domain';
import { dumpGuestView, exists, hasPattern, sameContent, writeThroughGuest } from '../helpers/data';
import { scheduledEventIds } from '../helpers/history';
import type { Holds } from '../helpers/holds';
import type { Stack } from '../helpers/stack';
import { createStackVm, useStack } from '../helpers/stack';
import { qemuImgCommitRunsOn } from '../helpers/qemu';
import { createTempDir, pollUntil } from '../helpers/vm-fixture';
import {
  createSnapshot,
  mergeDisk,
  startMergeDisk,
  startRemoveSnapshot,
  waitForProgress,
} from '../helpers/workflows';

const exec = promisify(execFile);
const MiB = 1 << 20;
const EventType = temporal.api.enums.v1.EventType;

const stack = () => useStack({ holds: true });
const holdsOf = (s: Stack): Holds => s.holds!;

afterEach(async () => {
  (await stack()).holds!.releaseAll();
});

interface Scenario {
  s: Stack;
  vm: { uuid: string; domain: Domain };
  imageId: string;
  chain: StoredVolume[];
}

/** A running VM, one snapshot, data in its active layer: merging the leaf is an active commit with a pivot. */
async function activeLayer(dataMiB = 8): Promise<Scenario> {
  const s = await stack();
  const { vm, disks } = await createStackVm(s, { disks: 1, capacity: 128 * MiB });
  await writeThroughGuest(vm.domain, 0, { byte: 0x41, offset: 0, length: 4 * MiB });
  await createSnapshot(s, vm.uuid);
  await writeThroughGuest(vm.domain, 0, { byte: 0x42, offset: 2 * MiB, length: dataMiB * MiB });
  return { s, vm, imageId: disks[0]!.imageId, chain: await s.sd.readChain(disks[0]!.imageId) };
}

function startLeafMerge(sc: Scenario, bandwidthBytesPerSec?: number): Promise<WorkflowHandle> {
  return startMergeDisk(sc.s, {
    vmId: sc.vm.uuid,
    storageDomainId: sc.s.sd.id,
    imageId: sc.imageId,
    baseVolumeId: sc.chain[0]!.volumeId,
    topVolumeId: sc.chain[1]!.volumeId,
    ...(bandwidthBytesPerSec ? { bandwidthBytesPerSec } : {}),
  });
}

async function statusOf(handle: WorkflowHandle): Promise<string> {
  await handle.result().catch(() => undefined);
  return (await handle.describe()).status.name;
}

async function auditOutcomes(s: Stack, vmId: string, workflowType = 'mergeDisk'): Promise<string[]> {
  return (await s.auditLog.read({ vmId }))
    .filter((e) => e.workflowType === workflowType)
    .map((e) => e.outcome);
}

/** How the run's `type` activity ended: completed (with its result), cancelled, failed. */
async function activityEnd(
  handle: WorkflowHandle,
  type: string,
): Promise<{ end: 'completed' | 'cancelled' | 'failed' | 'none'; result?: Record<string, unknown> }> {
  const events = (await handle.fetchHistory()).events ?? [];
  const ids = scheduledEventIds(events, type);
  for (const e of events) {
    const done = e.activityTaskCompletedEventAttributes;
    if (done && ids.has(String(done.scheduledEventId))) {
      const payload = done.result?.payloads?.[0]?.data;
      const result = payload
        ? (JSON.parse(Buffer.from(payload).toString('utf8')) as Record<string, unknown>)
        : undefined;
      return { end: 'completed', ...(result ? { result } : {}) };
    }
    if (e.eventType === EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED) {
      if (ids.has(String(e.activityTaskCanceledEventAttributes?.scheduledEventId)))
        return { end: 'cancelled' };
    }
    if (
      e.activityTaskFailedEventAttributes &&
      ids.has(String(e.activityTaskFailedEventAttributes.scheduledEventId))
    )
      return { end: 'failed' };
  }
  return { end: 'none' };
}

async function liveChain(dom: Domain): Promise<string[]> {
  return parseDomainDiskChains(await dom.xml())[0]!.chain.map((e) => e.path ?? '');
}

/** Chain, files and metadata exactly as before; no block job on the disk; audited `cancelled`. */
async function expectUnchanged(sc: Scenario, handle: WorkflowHandle): Promise<void> {
  expect(await statusOf(handle)).toBe('CANCELLED');
  expect((await handle.query<{ stage: string }>('progress')).stage).toBe('cancelled');
  expect(await sc.vm.domain.blockJobInfo('vda')).toBeNull();
  expect(await liveChain(sc.vm.domain)).toEqual([sc.chain[1]!.path, sc.chain[0]!.path]);
  const now = await sc.s.sd.readChain(sc.imageId);
  expect(now.map((v) => [v.volumeId, v.parentId, v.legality, v.snapshotId])).toEqual(
    sc.chain.map((v) => [v.volumeId, v.parentId, v.legality, v.snapshotId]),
  );
  for (const v of sc.chain) expect(await exists(v.path)).toBe(true);
  expect(await auditOutcomes(sc.s, sc.vm.uuid)).toEqual(['started', 'cancelled']);
}

/** The merge finished despite the cancel: COMPLETED, base alone, top deleted, audited `completed`. */
async function expectMerged(sc: Scenario, handle: WorkflowHandle): Promise<void> {
  expect(await statusOf(handle)).toBe('COMPLETED');
  expect(await sc.vm.domain.blockJobInfo('vda')).toBeNull();
  expect(await liveChain(sc.vm.domain)).toEqual([sc.chain[0]!.path]);
  const now = await sc.s.sd.readChain(sc.imageId);
  expect(now.map((v) => [v.volumeId, v.legality])).toEqual([[sc.chain[0]!.volumeId, 'LEGAL']]);
  expect(await exists(sc.chain[1]!.path)).toBe(false);
  expect(await hasPattern(sc.chain[0]!.path, 'qcow2', { byte: 0x42, offset: 2 * MiB, length: 8 * MiB })).toBe(
    true,
  );
  expect(await auditOutcomes(sc.s, sc.vm.uuid)).toEqual(['started', 'completed']);
}

describe('cancelling mergeDisk (live)', () => {
  it('before the job starts: the unit ends cancelled, no job was started', async () => {
    const sc = await activeLayer();
    holdsOf(sc.s).hold('startJob');
    const handle = await startLeafMerge(sc);
    await holdsOf(sc.s).waitHeld('startJob', handle.workflowId);
    await handle.cancel();
    await expectUnchanged(sc, handle);
    expect((await activityEnd(handle, 'mergeOnHost')).end).toBe('cancelled');
  });

  it('while READY, before the pivot call: the job is aborted, not pivoted; a retry then completes', async () => {
    const sc = await activeLayer();
    holdsOf(sc.s).hold('pivot');
    const handle = await startLeafMerge(sc);
    await holdsOf(sc.s).waitHeld('pivot', handle.workflowId);
    // READY: QEMU mirrors every write into base and waits for the pivot.
    await waitForProgress(handle, (p) => p.stage === 'ready', 10_000);
    const info = await sc.vm.domain.blockJobInfo('vda');
    expect(info && info.cur === info.end).toBe(true);
    await handle.cancel();
    await expectUnchanged(sc, handle);
    expect((await activityEnd(handle, 'mergeOnHost')).end).toBe('cancelled');

    // The cancelled merge left a valid chain: merging again completes, every byte where it was.
    holdsOf(sc.s).releaseAll();
    const again = await mergeDisk(sc.s, {
      vmId: sc.vm.uuid,
      storageDomainId: sc.s.sd.id,
      imageId: sc.imageId,
      baseVolumeId: sc.chain[0]!.volumeId,
      topVolumeId: sc.chain[1]!.volumeId,
    });
    expect(again.removedVolumeIds).toEqual([sc.chain[1]!.volumeId]);
    expect(await hasPattern(sc.chain[0]!.path, 'qcow2', { byte: 0x41, offset: 0, length: 2 * MiB })).toBe(
      true,
    );
    expect(
      await hasPattern(sc.chain[0]!.path, 'qcow2', { byte: 0x42, offset: 2 * MiB, length: 8 * MiB }),
    ).toBe(true);
  });

  it('after the pivot call (verifying): ignored, the merge completes', async () => {
    const sc = await activeLayer();
    holdsOf(sc.s).hold('verifyMerged');
    const handle = await startLeafMerge(sc);
    await holdsOf(sc.s).waitHeld('verifyMerged', handle.workflowId);
    expect(await liveChain(sc.vm.domain)).toEqual([sc.chain[0]!.path]); // pivoted
    await handle.cancel();
    // The cancel reached the host unit while it was held: it still finishes its work.
    await pollUntil(
      async () =>
        ((await handle.fetchHistory()).events ?? []).some(
          (e) => e.eventType === EventType.EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED,
        ),
      10_000,
      'the cancel request to reach the host unit',
    );
    holdsOf(sc.s).release('verifyMerged');
    await expectMerged(sc, handle);
    expect((await activityEnd(handle, 'mergeOnHost')).result).toMatchObject({
      start: 'started',
      pivot: 'pivoted',
    });
  });

  for (const step of ['recordMerge', 'deleteVolumes'] as const)
    it(`while ${step === 'recordMerge' ? 'recording' : 'deleting'}: ignored, the merge completes`, async () => {
      const sc = await activeLayer();
      holdsOf(sc.s).hold(step);
      const handle = await startLeafMerge(sc);
      await holdsOf(sc.s).waitHeld(step, handle.workflowId);
      await handle.cancel();
      holdsOf(sc.s).release(step);
      await expectMerged(sc, handle);
    });
});

describe('cancelling a cold merge', () => {
  it('during the qemu-img copy: qemu-img is stopped, the chain reads exactly as before', async () => {
    const s = await stack();
    const tmp = await createTempDir();
    const { vm, disks } = await createStackVm(s, { disks: 1, capacity: 128 * MiB, start: false });
    await createSnapshot(s, vm.uuid);
    const chain = await s.sd.readChain(disks[0]!.imageId);
    await exec('qemu-io', ['-f', 'qcow2', '-c', `write -P 0x43 0 ${48 * MiB}`, chain[1]!.path]);
    const before = await dumpGuestView(chain[1]!.path, 'qcow2', path.join(tmp.path, 'before.raw'));
    const handle = await startMergeDisk(s, {
      vmId: vm.uuid,
      storageDomainId: s.sd.id,
      imageId: disks[0]!.imageId,
      baseVolumeId: chain[0]!.volumeId,
      topVolumeId: chain[1]!.volumeId,
      bandwidthBytesPerSec: 4 * MiB,
    });
    await waitForProgress(handle, (p) => p.stage === 'copying');
    await pollUntil(() => qemuImgCommitRunsOn(chain[0]!.path), 20_000, 'qemu-img commit to run');
    await handle.cancel();
    expect(await statusOf(handle)).toBe('CANCELLED');
    expect(await qemuImgCommitRunsOn(chain[0]!.path)).toBe(false);
    expect((await activityEnd(handle, 'coldMerge')).end).toBe('cancelled');
    expect(
      await sameContent({ path: before, format: 'raw' }, { path: chain[1]!.path, format: 'qcow2' }),
    ).toBe(true);
    const now = await s.sd.readChain(disks[0]!.imageId);
    expect(now.map((v) => [v.volumeId, v.legality])).toEqual(chain.map((v) => [v.volumeId, 'LEGAL']));
    expect(parseDomainDiskChains(await vm.domain.xml({ inactive: true }))[0]!.chain[0]!.path).toBe(
      chain[1]!.path,
    );
    expect(await auditOutcomes(s, vm.uuid)).toEqual(['started', 'cancelled']);
  });
});

describe('cancelling removeSnapshot', () => {
  it('one disk past its pivot, one READY: the first merges, the second aborts; CANCELLED with both outcomes', async () => {
    const s = await stack();
    const { vm, disks } = await createStackVm(s, { disks: 2, capacity: 128 * MiB });
    const snap = await createSnapshot(s, vm.uuid);
    for (const i of [0, 1])
      await writeThroughGuest(vm.domain, i, { byte: 0x44 + i, offset: 0, length: 4 * MiB });
    const before = await Promise.all(disks.map((d) => s.sd.readChain(d.imageId)));
    const [vda, vdb] = disks.map((d) => `merge-disk:${vm.uuid}:${d.imageId}`) as [string, string];
    // vda stops after its pivot (recording), vdb at READY before its pivot.
    holdsOf(s).hold('recordMerge', vda);
    holdsOf(s).hold('pivot', vdb);
    const handle = await startRemoveSnapshot(s, { vmId: vm.uuid, snapshotId: snap.snapshotId });
    await holdsOf(s).waitHeld('recordMerge', vda);
    await holdsOf(s).waitHeld('pivot', vdb);
    await handle.cancel();
    holdsOf(s).release('recordMerge', vda);
    const err = await handle.result().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(WorkflowFailedError);
    expect((err as WorkflowFailedError).cause).toBeInstanceOf(CancelledFailure);
    // Temporal's cancelled close event carries no details (the TypeScript SDK sends none): each disk's
    // outcome is in the `progress` query and in the audit event of the cancellation.
    const progress = await handle.query<RemoveSnapshotProgress>('progress');
    expect(progress.stage).toBe('cancelled');
    expect(progress.disks.map((d) => [d.target, d.stage])).toEqual([
      ['vda', 'done'],
      ['vdb', 'cancelled'],
    ]);
    const cancelled = (await s.auditLog.read({ vmId: vm.uuid })).find(
      (e) => e.workflowType === 'removeSnapshot' && e.outcome === 'cancelled',
    );
    const outcomes = (
      cancelled?.detail as { disks: Array<{ target: string; status: string; failureType?: string }> }
    ).disks;
    expect(outcomes.map((d) => [d.target, d.status, d.failureType])).toEqual([
      ['vda', 'merged', undefined],
      ['vdb', 'failed', 'Cancelled'],
    ]);
    expect(await statusOf(handle)).toBe('CANCELLED');
    expect(await statusOf(s.client.workflow.getHandle(vda))).toBe('COMPLETED');
    expect(await statusOf(s.client.workflow.getHandle(vdb))).toBe('CANCELLED');
    expect((await s.sd.readChain(disks[0]!.imageId)).map((v) => v.volumeId)).toEqual([
      before[0]![0]!.volumeId,
    ]);
    expect((await s.sd.readChain(disks[1]!.imageId)).map((v) => [v.volumeId, v.legality])).toEqual(
      before[1]!.map((v) => [v.volumeId, 'LEGAL']),
    );
    expect(await vm.domain.blockJobInfo('vdb')).toBeNull();
    expect(await auditOutcomes(s, vm.uuid, 'removeSnapshot')).toEqual(['started', 'cancelled']);
  });

  it('every disk past its pivot: ignored, COMPLETED', async () => {
    const s = await stack();
    const { vm, disks } = await createStackVm(s, { disks: 1, capacity: 128 * MiB });
    const snap = await createSnapshot(s, vm.uuid);
    await writeThroughGuest(vm.domain, 0, { byte: 0x46, offset: 0, length: 1 * MiB });
    holdsOf(s).hold('deleteVolumes');
    const handle = await startRemoveSnapshot(s, { vmId: vm.uuid, snapshotId: snap.snapshotId });
    await holdsOf(s).waitHeld('deleteVolumes');
    await handle.cancel();
    holdsOf(s).release('deleteVolumes');
    expect(await statusOf(handle)).toBe('COMPLETED');
    expect(await s.sd.readChain(disks[0]!.imageId)).toHaveLength(1);
    expect(await auditOutcomes(s, vm.uuid, 'removeSnapshot')).toEqual(['started', 'completed']);
    expect(await auditOutcomes(s, vm.uuid, 'mergeDisk')).toEqual(['started', 'completed']);
  });
});

describe('cancelling createSnapshot', () => {
  it('before the host snapshot call: the new leaves are discarded, the VM keeps its chain', async () => {
    const s = await stack();
    const { vm, disks } = await createStackVm(s, { disks: 1 });
    const dir = s.sd.imageDir(disks[0]!.imageId);
    const filesBefore = (await fs.readdir(dir)).sort();
    holdsOf(s).hold('snapshotDisks');
    const snapshotId = randomUUID();
    const handle = await s.client.workflow.start('createSnapshot', {
      taskQueue: ENGINE_TASK_QUEUE,
      workflowId: `create-snapshot:${vm.uuid}:${snapshotId}`,
      args: [{ vmId: vm.uuid, snapshotId }],
    });
    await holdsOf(s).waitHeld('snapshotDisks', handle.workflowId);
    await handle.cancel();
    expect(await statusOf(handle)).toBe('CANCELLED');
    expect((await fs.readdir(dir)).sort()).toEqual(filesBefore);
    expect(await liveChain(vm.domain)).toEqual([disks[0]!.base.path]);
    expect(await auditOutcomes(s, vm.uuid, 'createSnapshot')).toEqual(['started', 'cancelled']);
  });

  it('while the host snapshot call runs: it waits for the call, then completes (the snapshot exists)', async () => {
    const s = await stack();
    const { vm, disks } = await createStackVm(s, { disks: 1 });
    holdsOf(s).hold('snapshotDisks-taken');
    const snapshotId = randomUUID();
    const handle = await s.client.workflow.start('createSnapshot', {
      taskQueue: ENGINE_TASK_QUEUE,
      workflowId: `create-snapshot:${vm.uuid}:${snapshotId}`,
      args: [{ vmId: vm.uuid, snapshotId }],
    });
    await holdsOf(s).waitHeld('snapshotDisks-taken', handle.workflowId);
    await handle.cancel();
    holdsOf(s).release('snapshotDisks-taken');
    expect(await statusOf(handle)).toBe('COMPLETED');
    const chain = await s.sd.readChain(disks[0]!.imageId);
    expect(chain).toHaveLength(2);
    expect(await liveChain(vm.domain)).toEqual([chain[1]!.path, chain[0]!.path]);
    expect(chain[0]!.snapshotId).not.toBeNull();
    expect(await auditOutcomes(s, vm.uuid, 'createSnapshot')).toEqual(['started', 'completed']);
  });
});
