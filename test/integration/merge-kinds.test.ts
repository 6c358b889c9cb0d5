import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { WorkflowFailedError } from '@temporalio/client';
import { describe, expect, it } from 'vitest';
import { parseDomainDiskChains } from '../../src/inspect/domain-xml';
import { ENGINE_TASK_QUEUE } from '../../src/common/task-queues';
import { hmpQemuIo } from '../../src/libvirt';
import type { RemoveSnapshotResult } from '../../src/schemas/results';
import { releaseVmLockSignal } from '../../src/workflows/vm-lock';
import { qcow2Chain } from '../../src/inspect/qcow2-chain';
import { dumpGuestView, exists, hasPattern, sameContent, writeThroughGuest } from '../helpers/data';
import { waitFor } from '../helpers/guest-writer';
import { scheduledActivity } from '../helpers/history';
import { createStackVm, useStack } from '../helpers/stack';
import { createTempDir } from '../helpers/vm-fixture';
import {
  createSnapshot,
  failureTypeOf,
  removeSnapshot,
  startMergeDisk,
  startRemoveSnapshot,
  waitForProgress,
} from '../helpers/workflows';

const MiB = 1 << 20;

describe('merge kinds (live)', () => {
  it('forward: pulls the snapshot volume into the active leaf; the leaf backs onto base', async () => {
    const s = await useStack();
    const tmp = await createTempDir();
    const { vm, disks } = await createStackVm(s, { disks: 1 });
    await writeThroughGuest(vm.domain, 0, { byte: 0x41, offset: 0, length: 4 * 65536 });
    const s1 = await createSnapshot(s, vm.uuid);
    await writeThroughGuest(vm.domain, 0, { byte: 0x42, offset: 2 * 65536, length: 4 * 65536 });
    const s2 = await createSnapshot(s, vm.uuid);
    await writeThroughGuest(vm.domain, 0, { byte: 0x44, offset: 0, length: 65536 });
    const chain = await s.sd.readChain(disks[0]!.imageId);
    const before = await dumpGuestView(chain[2]!.path, 'qcow2', path.join(tmp.path, 'before.raw'));

    const r = await removeSnapshot(s, { vmId: vm.uuid, snapshotId: s2.snapshotId, direction: 'forward' });
    // QEMU keeps qcow2 metadata in its cache: flush it before reading the image from outside.
    await hmpQemuIo(vm.domain, 'virtio-disk0', 'flush');
    expect(r.removedVolumeIds).toEqual([chain[1]!.volumeId]);
    const after = await s.sd.readChain(disks[0]!.imageId);
    expect(after.map((v) => v.volumeId)).toEqual([chain[0]!.volumeId, chain[2]!.volumeId]);
    expect(after[1]!.parentId).toBe(chain[0]!.volumeId);
    expect(after[0]!.snapshotId).toBe(s1.snapshotId);
    expect(await exists(chain[1]!.path)).toBe(false);
    const headers = await qcow2Chain(after[1]!.path);
    expect(headers[0]!.backingFilename).toBe(chain[0]!.volumeId);
    const live = parseDomainDiskChains(await vm.domain.xml())[0]!;
    expect(live.chain.map((e) => e.path)).toEqual([after[1]!.path, after[0]!.path]);
    expect(
      await sameContent({ path: before, format: 'raw' }, { path: after[1]!.path, format: 'qcow2' }),
    ).toBe(true);
  });

  it('a raw base stays raw through an active commit with pivot', async () => {
    const s = await useStack();
    const { vm, disks } = await createStackVm(s, { disks: 1, format: 'raw' });
    await writeThroughGuest(vm.domain, 0, { byte: 0x41, offset: 0, length: 2 * 65536 });
    const s1 = await createSnapshot(s, vm.uuid);
    await writeThroughGuest(vm.domain, 0, { byte: 0x42, offset: 65536, length: 2 * 65536 });
    const r = await removeSnapshot(s, { vmId: vm.uuid, snapshotId: s1.snapshotId });
    const after = await s.sd.readChain(disks[0]!.imageId);
    expect(after).toHaveLength(1);
    expect(after[0]!.format).toBe('raw');
    expect(r.removedVolumeIds).toHaveLength(1);
    const headers = await qcow2Chain(after[0]!.path);
    expect(headers.map((h) => h.format)).toEqual(['raw']);
    const live = parseDomainDiskChains(await vm.domain.xml())[0]!;
    expect(live.format).toBe('raw');
    expect(live.chain.map((e) => e.path)).toEqual([after[0]!.path]);
    expect(await hasPattern(after[0]!.path, 'raw', { byte: 0x41, offset: 0, length: 65536 })).toBe(true);
    expect(await hasPattern(after[0]!.path, 'raw', { byte: 0x42, offset: 65536, length: 2 * 65536 })).toBe(
      true,
    );
  });

  it('removeSnapshot merges both disks of a VM in parallel (their block jobs overlap in time)', async () => {
    const s = await useStack();
    const { vm, disks } = await createStackVm(s, { disks: 2, capacity: 128 * MiB });
    const snap = await createSnapshot(s, vm.uuid);
    // 8 MiB per disk at 4 MiB/s: each job runs about 2 s.
    for (const i of [0, 1])
      await writeThroughGuest(vm.domain, i, { byte: 0x50 + i, offset: 0, length: 8 * MiB });
    const r = await removeSnapshot(s, {
      vmId: vm.uuid,
      snapshotId: snap.snapshotId,
      bandwidthBytesPerSec: 4 * MiB,
    });
    expect(r.disks.map((d) => d.status)).toEqual(['merged', 'merged']);

    const windows = await Promise.all(
      disks.map(async (d) => {
        const history = await s.client.workflow
          .getHandle(`merge-disk:${vm.uuid}:${d.imageId}`)
          .fetchHistory();
        const events = history.events ?? [];
        const scheduled = (type: string) => events.find(scheduledActivity(type));
        // The host unit (start, wait, pivot, verify) of each disk.
        const start = scheduled('mergeOnHost')!;
        const done = events.find(
          (e) =>
            e.activityTaskCompletedEventAttributes?.scheduledEventId?.toString() ===
            start.eventId?.toString(),
        )!;
        const ms = (e: typeof start) =>
          Number(e.eventTime!.seconds) * 1000 + Math.floor((e.eventTime!.nanos ?? 0) / 1e6);
        return { from: ms(start), to: ms(done) };
      }),
    );
    const [a, b] = windows as [{ from: number; to: number }, { from: number; to: number }];
    expect(Math.max(a.from, b.from)).toBeLessThan(Math.min(a.to, b.to));
    for (const [i, d] of disks.entries()) {
      const chain = await s.sd.readChain(d.imageId);
      expect(chain).toHaveLength(1);
      expect(await hasPattern(chain[0]!.path, 'qcow2', { byte: 0x50 + i, offset: 0, length: 8 * MiB })).toBe(
        true,
      );
    }
  });

  it('a cancel before the pivot aborts the job: the chain stays exactly as it was, nothing deleted', async () => {
    const s = await useStack();
    const { vm, disks } = await createStackVm(s, { disks: 1, capacity: 128 * MiB });
    await createSnapshot(s, vm.uuid);
    await writeThroughGuest(vm.domain, 0, { byte: 0x5a, offset: 0, length: 16 * MiB });
    const before = await s.sd.readChain(disks[0]!.imageId);
    const handle = await startMergeDisk(s, {
      vmId: vm.uuid,
      storageDomainId: s.sd.id,
      imageId: disks[0]!.imageId,
      baseVolumeId: before[0]!.volumeId,
      topVolumeId: before[1]!.volumeId,
      bandwidthBytesPerSec: 1 * MiB,
    });
    await waitForProgress(handle, (p) => p.stage === 'copying');
    await handle.cancel();
    const err: unknown = await handle.result().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(WorkflowFailedError);
    expect((await handle.describe()).status.name).toBe('CANCELLED');
    expect((await handle.query<{ stage: string }>('progress')).stage).toBe('cancelled');

    expect(await vm.domain.blockJobInfo('vda')).toBeNull();
    const live = parseDomainDiskChains(await vm.domain.xml())[0]!;
    expect(live.chain.map((e) => e.path)).toEqual([before[1]!.path, before[0]!.path]);
    const after = await s.sd.readChain(disks[0]!.imageId);
    expect(after.map((v) => [v.volumeId, v.legality, v.snapshotId])).toEqual(
      before.map((v) => [v.volumeId, v.legality, v.snapshotId]),
    );
    for (const v of before) expect(await exists(v.path)).toBe(true);
    const audit = await s.auditLog.read({ vmId: vm.uuid });
    expect(audit.filter((e) => e.workflowType === 'mergeDisk').map((e) => e.outcome)).toEqual([
      'started',
      'cancelled',
    ]);
  });
});

describe('removeSnapshot outcomes', () => {
  it('a cancel during the copy ends CANCELLED, audited, with every disk chain as it was', async () => {
    const s = await useStack();
    const { vm, disks } = await createStackVm(s, { disks: 2, capacity: 128 * MiB });
    const snap = await createSnapshot(s, vm.uuid);
    for (const i of [0, 1])
      await writeThroughGuest(vm.domain, i, { byte: 0x5a, offset: 0, length: 16 * MiB });
    const before = await Promise.all(disks.map((d) => s.sd.readChain(d.imageId)));
    const handle = await startRemoveSnapshot(s, {
      vmId: vm.uuid,
      snapshotId: snap.snapshotId,
      bandwidthBytesPerSec: 1 * MiB,
    });
    await waitForProgress(handle, (p) => p.stage === 'copying');
    await handle.cancel();
    await handle.result().then(
      () => undefined,
      () => undefined,
    );
    expect((await handle.describe()).status.name).toBe('CANCELLED');
    expect((await handle.query<{ stage: string }>('progress')).stage).toBe('cancelled');
    const after = await Promise.all(disks.map((d) => s.sd.readChain(d.imageId)));
    expect(after.map((c) => c.map((v) => [v.volumeId, v.legality]))).toEqual(
      before.map((c) => c.map((v) => [v.volumeId, v.legality])),
    );
    const audit = await s.auditLog.read({ vmId: vm.uuid });
    expect(audit.filter((e) => e.workflowType === 'removeSnapshot').map((e) => e.outcome)).toEqual([
      'started',
      'cancelled',
    ]);
  });

  it('fails with MergeInProgress when a merge already runs on the disk', async () => {
    const s = await useStack();
    const { vm, disks } = await createStackVm(s, { disks: 1, capacity: 128 * MiB });
    const s1 = await createSnapshot(s, vm.uuid);
    await createSnapshot(s, vm.uuid);
    await writeThroughGuest(vm.domain, 0, { byte: 0x5b, offset: 0, length: 16 * MiB });
    const chain = await s.sd.readChain(disks[0]!.imageId);
    const running = await startMergeDisk(s, {
      vmId: vm.uuid,
      storageDomainId: s.sd.id,
      imageId: disks[0]!.imageId,
      baseVolumeId: chain[1]!.volumeId,
      topVolumeId: chain[2]!.volumeId,
      bandwidthBytesPerSec: 1 * MiB,
    });
    await waitForProgress(running, (p) => p.stage === 'copying');
    expect(await failureTypeOf(removeSnapshot(s, { vmId: vm.uuid, snapshotId: s1.snapshotId }))).toBe(
      'MergeInProgress',
    );
    await running.cancel();
  });

  it('a lock still running for a holder that has closed is waited for, never taken', async () => {
    // The moment between a holder's close and its lock's end (the server applies the close policy), held
    // open: a lock started by hand whose memo names a closed workflow, ended by hand once the removal waits.
    const s = await useStack();
    const { vm } = await createStackVm(s, { disks: 1 });
    const s1 = await createSnapshot(s, vm.uuid);
    const closed = await s.client.workflow.start('vmLock', {
      taskQueue: ENGINE_TASK_QUEUE,
      workflowId: `closed-holder:${randomUUID()}`,
      args: [{ vmId: 'none' }],
    });
    await closed.signal(releaseVmLockSignal);
    await closed.result();
    const holder = {
      workflowId: closed.workflowId,
      workflowType: 'removeSnapshot',
      runId: closed.firstExecutionRunId,
    };
    const lock = await s.client.workflow.start('vmLock', {
      taskQueue: ENGINE_TASK_QUEUE,
      workflowId: `vm-lock:${vm.uuid}`,
      args: [{ vmId: vm.uuid }],
      memo: { holder },
    });
    try {
      const removal = await startRemoveSnapshot(s, { vmId: vm.uuid, snapshotId: s1.snapshotId });
      const timers = async () =>
        ((await removal.fetchHistory()).events ?? []).filter((e) => e.timerStartedEventAttributes).length;
      await waitFor(async () => ((await timers()) >= 2 ? true : undefined), 30_000, 'the removal to retry');
      await lock.signal(releaseVmLockSignal);
      expect(((await removal.result()) as RemoveSnapshotResult).removedVolumeIds).toHaveLength(1);
      // It retried (timers), found the holder closed each time (no refusal), then took the lock itself.
      expect(await timers()).toBeGreaterThanOrEqual(2);
      // The hand-made lock completed by its release; the removal's own ends by its close policy, a moment
      // after the removal's close (the window this test is about).
      const handMade = s.client.workflow.getHandle(lock.workflowId, lock.firstExecutionRunId);
      expect((await handMade.describe()).status.name).toBe('COMPLETED');
      const own = ((await removal.fetchHistory()).events ?? []).flatMap((e) => {
        const started = e.childWorkflowExecutionStartedEventAttributes?.workflowExecution;
        return started?.workflowId === `vm-lock:${vm.uuid}` && started.runId ? [started.runId] : [];
      });
      expect(own).toHaveLength(1);
      const ownLock = s.client.workflow.getHandle(`vm-lock:${vm.uuid}`, own[0]);
      await waitFor(
        async () => ((await ownLock.describe()).status.name === 'TERMINATED' ? true : undefined),
        10_000,
        "the removal's lock to end with it",
      );
    } finally {
      // This run only (a handle without one names the latest run of the id: the removal's lock).
      await s.client.workflow
        .getHandle(lock.workflowId, lock.firstExecutionRunId)
        .terminate()
        .catch(() => undefined);
    }
  });
});
