// Persistent dirty bitmaps survive merges (DESIGN.md "Persistent dirty bitmaps"): a bitmap added to the
// base before the snapshots is, after the merge, present, enabled, consistent, and covers every cluster
// written in the merged layers.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { qcow2Chain } from '../../src/inspect/qcow2-chain';
import { writeThroughGuest } from '../helpers/data';
import { dirtyMaps, stopAllNbdServers, uncovered } from '../helpers/qemu';
import { createStackVm, useStack } from '../helpers/stack';
import { createSnapshot, removeSnapshot } from '../helpers/workflows';

const exec = promisify(execFile);
const KiB = 1024;

describe('persistent dirty bitmaps', () => {
  afterEach(stopAllNbdServers);

  it('stay present, enabled, valid and complete across live merges (intermediate and active)', async () => {
    const s = await useStack();
    const { vm, disks } = await createStackVm(s, { disks: 1, start: false });
    const base = disks[0]!.base;
    await exec('qemu-img', ['bitmap', '--add', '--enable', '-g', '64K', base.path, 'backup-1']);
    await vm.domain.create();

    const writes = [
      { byte: 0x41, offset: 0, length: 64 * KiB }, // base
      { byte: 0x42, offset: 1024 * KiB, length: 128 * KiB }, // snapshot 1's layer
      { byte: 0x43, offset: 4096 * KiB, length: 64 * KiB }, // snapshot 2's layer
      { byte: 0x44, offset: 8192 * KiB, length: 64 * KiB }, // the active layer
    ];
    await writeThroughGuest(vm.domain, 0, writes[0]!);
    const s1 = await createSnapshot(s, vm.uuid);
    await writeThroughGuest(vm.domain, 0, writes[1]!);
    const s2 = await createSnapshot(s, vm.uuid);
    await writeThroughGuest(vm.domain, 0, writes[2]!);
    const s3 = await createSnapshot(s, vm.uuid);
    await writeThroughGuest(vm.domain, 0, writes[3]!);

    await removeSnapshot(s, { vmId: vm.uuid, snapshotId: s2.snapshotId }); // intermediate commit
    await removeSnapshot(s, { vmId: vm.uuid, snapshotId: s3.snapshotId }); // active commit, pivot
    await removeSnapshot(s, { vmId: vm.uuid, snapshotId: s1.snapshotId }); // active commit into base, pivot
    const chain = await s.sd.readChain(disks[0]!.imageId);
    expect(chain.map((v) => v.volumeId)).toEqual([base.volumeId]);

    // Stopping QEMU writes its bitmaps back and clears their in-use flag.
    await vm.domain.destroy();
    const [info] = await qcow2Chain(base.path);
    const bitmap = info!.bitmaps?.find((b) => b.name === 'backup-1');
    expect(bitmap).toBeDefined();
    expect(bitmap!.flags).toContain('auto');
    expect(bitmap!.flags).not.toContain('in-use');
    const maps = await dirtyMaps(base.path, ['backup-1']);
    expect(uncovered(maps['backup-1']!, writes)).toEqual([]);
    // The map is not trivially all-dirty: an unwritten range stays clean.
    expect(uncovered(maps['backup-1']!, [{ offset: 16384 * KiB, length: 64 * KiB }])).not.toEqual([]);
  });
});
