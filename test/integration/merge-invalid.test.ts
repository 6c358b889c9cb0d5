// Bad requests are refused with a typed, non-retryable failure before any side effect: the chain, its
// files, metadata and the domain stay exactly as they were, and no merge is audited as started.
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/client';
import { beforeAll, describe, expect, it } from 'vitest';
import { ENGINE_TASK_QUEUE } from '../../src/common/task-queues';
import { writeThroughGuest } from '../helpers/data';
import type { Stack, VmDisk } from '../helpers/stack';
import { createStackVm, useStack } from '../helpers/stack';
import type { TestVm } from '../helpers/vm-fixture';
import { createSnapshot, failureTypeOf, startMergeDisk, waitForProgress } from '../helpers/workflows';

async function snapshotOf(s: Stack, vm: TestVm, disk: VmDisk): Promise<string> {
  const files = (await fs.readdir(s.sd.imageDir(disk.imageId))).sort();
  const meta = (await s.sd.listVolumes(disk.imageId)).map((v) => JSON.stringify(v));
  return JSON.stringify({
    files,
    meta,
    xml: await vm.domain.xml(),
    inactive: await vm.domain.xml({ inactive: true }),
  });
}

function runMerge(s: Stack, input: Record<string, unknown>): Promise<unknown> {
  return s.client.workflow.execute('mergeDisk', {
    taskQueue: ENGINE_TASK_QUEUE,
    workflowId: `invalid-${randomUUID()}`,
    args: [input],
  });
}

describe('invalid merge requests', () => {
  let s: Stack;
  let vm: TestVm;
  let disk: VmDisk;
  let other: VmDisk;
  let chain: Awaited<ReturnType<Stack['sd']['readChain']>>;
  let valid: Record<string, unknown>;

  beforeAll(async () => {
    s = await useStack();
    const made = await createStackVm(s, { disks: 2 });
    vm = made.vm;
    [disk, other] = made.disks as [VmDisk, VmDisk];
    await writeThroughGuest(vm.domain, 0, { byte: 0x41, offset: 0, length: 65536 });
    await createSnapshot(s, vm.uuid);
    await createSnapshot(s, vm.uuid);
    chain = await s.sd.readChain(disk.imageId);
    valid = {
      vmId: vm.uuid,
      storageDomainId: s.sd.id,
      imageId: disk.imageId,
      baseVolumeId: chain[1]!.volumeId,
      topVolumeId: chain[2]!.volumeId,
    };
    return () => vm.cleanup();
  });

  const cases: Array<[string, () => Record<string, unknown>, string]> = [
    ['a non-UUID vm id', () => ({ ...valid, vmId: 'my-vm' }), 'InvalidRequest'],
    ['path traversal in an image id', () => ({ ...valid, imageId: '../../../etc' }), 'InvalidRequest'],
    [
      'an upper-case (non-canonical) UUID',
      () => ({ ...valid, topVolumeId: String(valid.topVolumeId).toUpperCase() }),
      'InvalidRequest',
    ],
    ['an unknown VM', () => ({ ...valid, vmId: randomUUID() }), 'VmNotFound'],
    ['an unknown volume', () => ({ ...valid, topVolumeId: randomUUID() }), 'InvalidRequest'],
    [
      'base not an ancestor of top',
      () => ({ ...valid, baseVolumeId: chain[2]!.volumeId, topVolumeId: chain[1]!.volumeId }),
      'InvalidRequest',
    ],
    [
      'base == top',
      () => ({ ...valid, baseVolumeId: chain[1]!.volumeId, topVolumeId: chain[1]!.volumeId }),
      'InvalidRequest',
    ],
    ['a volume of another image', () => ({ ...valid, topVolumeId: other.base.volumeId }), 'InvalidRequest'],
    ['a wrong storage domain', () => ({ ...valid, storageDomainId: randomUUID() }), 'InvalidRequest'],
    [
      'live forward into a non-leaf',
      () => ({
        ...valid,
        baseVolumeId: chain[0]!.volumeId,
        topVolumeId: chain[1]!.volumeId,
        direction: 'forward',
      }),
      'InvalidRequest',
    ],
    ['an unknown field', () => ({ ...valid, deleteEverything: true }), 'InvalidRequest'],
    ['a negative bandwidth', () => ({ ...valid, bandwidthBytesPerSec: -1 }), 'InvalidRequest'],
  ];

  for (const [what, input, type] of cases) {
    it(`refuses ${what} (${type}) and changes nothing`, async () => {
      const before = await snapshotOf(s, vm, disk);
      expect(await failureTypeOf(runMerge(s, input()))).toBe(type);
      expect(await snapshotOf(s, vm, disk)).toBe(before);
      const started = (await s.auditLog.read({ vmId: vm.uuid })).filter(
        (e) => e.workflowType === 'mergeDisk' && e.outcome === 'started',
      );
      expect(started).toEqual([]);
    });
  }

  it('refuses to commit into a shared base (SharedBase)', async () => {
    // A second child of base 0 (a branch): committing into it would corrupt the other branch.
    const branch = await s.sd.createVolume({ imageId: disk.imageId, parentId: chain[0]!.volumeId });
    try {
      const before = await snapshotOf(s, vm, disk);
      const input = { ...valid, baseVolumeId: chain[0]!.volumeId, topVolumeId: chain[1]!.volumeId };
      expect(await failureTypeOf(runMerge(s, input))).toBe('SharedBase');
      expect(await snapshotOf(s, vm, disk)).toBe(before);
    } finally {
      await s.sd.setLegality(disk.imageId, branch.volumeId, 'ILLEGAL');
      await s.sd.deleteVolume(disk.imageId, branch.volumeId);
    }
  });

  it('refuses a second, different merge on a disk while one runs; the same id attaches', async () => {
    await writeThroughGuest(vm.domain, 0, { byte: 0x42, offset: 0, length: 8 << 20 });
    const first = await startMergeDisk(s, {
      ...(valid as {
        vmId: string;
        storageDomainId: string;
        imageId: string;
        baseVolumeId: string;
        topVolumeId: string;
      }),
      topVolumeId: chain[2]!.volumeId,
      baseVolumeId: chain[1]!.volumeId,
      bandwidthBytesPerSec: 1 << 20,
    });
    await waitForProgress(first, (p) => p.stage === 'copying');
    const second = startMergeDisk(s, {
      ...(valid as {
        vmId: string;
        storageDomainId: string;
        imageId: string;
        baseVolumeId: string;
        topVolumeId: string;
      }),
      baseVolumeId: chain[0]!.volumeId,
      topVolumeId: chain[1]!.volumeId,
    });
    await expect(second).rejects.toBeInstanceOf(WorkflowExecutionAlreadyStartedError);
    // Attaching by id sees the running merge.
    const attached = s.client.workflow.getHandle(first.workflowId);
    expect((await attached.describe()).status.name).toBe('RUNNING');
    await first.cancel();
    expect((await first.result().catch((e: unknown) => e)) instanceof Error).toBe(true);
  });
});
