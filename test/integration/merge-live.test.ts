import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseDomainDiskChains } from '../../src/inspect/domain-xml';
import { HOST_ID_KEY, STAGE_KEY, VM_ID_KEY } from '../../src/common/search-attributes';
import { dumpGuestView, exists, hasPattern, sameContent, writeThroughGuest } from '../helpers/data';
import { createStackVm, useStack } from '../helpers/stack';
import { createTempDir } from '../helpers/vm-fixture';
import { createSnapshot, removeSnapshot } from '../helpers/workflows';

describe('live backward merge', () => {
  it('removes an intermediate snapshot (commit) and the active layer (active commit + pivot), keeping every byte', async () => {
    const s = await useStack();
    const tmp = await createTempDir();
    const { vm, disks } = await createStackVm(s, { disks: 1, format: 'qcow2' });
    const image = disks[0]!;
    // The AAAA/BBBB/CCCC/DD picture: each layer overwrites part of the one below.
    const A = { byte: 0x41, offset: 0, length: 4 << 16 };
    const B = { byte: 0x42, offset: 2 << 16, length: 4 << 16 };
    const C = { byte: 0x43, offset: 5 << 16, length: 4 << 16 };
    const D = [
      { byte: 0x44, offset: 0, length: 1 << 16 },
      { byte: 0x44, offset: 8 << 16, length: 2 << 16 },
    ];
    await writeThroughGuest(vm.domain, 0, A);
    const s1 = await createSnapshot(s, vm.uuid, 'before the upgrade');
    await writeThroughGuest(vm.domain, 0, B);
    const s2 = await createSnapshot(s, vm.uuid);
    await writeThroughGuest(vm.domain, 0, C);
    const s3 = await createSnapshot(s, vm.uuid);
    for (const p of D) await writeThroughGuest(vm.domain, 0, p);

    let chain = await s.sd.readChain(image.imageId);
    expect(chain.map((v) => v.snapshotId)).toEqual([s1.snapshotId, s2.snapshotId, s3.snapshotId, null]);
    // The frozen volume stands for the snapshot, description included.
    expect(chain[0]!.description).toBe('before the upgrade');
    const before = await dumpGuestView(chain[3]!.path, 'qcow2', path.join(tmp.path, 'before.raw'));

    // Intermediate: S2's volume absorbs its child (S3's volume); the leaf is untouched.
    const r2 = await removeSnapshot(s, { vmId: vm.uuid, snapshotId: s2.snapshotId });
    expect(r2.removedVolumeIds).toEqual([chain[2]!.volumeId]);
    expect(await exists(chain[2]!.path)).toBe(false);
    const afterIntermediate = await s.sd.readChain(image.imageId);
    expect(afterIntermediate.map((v) => v.volumeId)).toEqual([
      chain[0]!.volumeId,
      chain[1]!.volumeId,
      chain[3]!.volumeId,
    ]);
    expect(afterIntermediate[1]!.snapshotId).toBe(s3.snapshotId);

    // Active layer: S3's volume absorbs the leaf, and the VM pivots onto it.
    chain = afterIntermediate;
    const r3 = await removeSnapshot(s, { vmId: vm.uuid, snapshotId: s3.snapshotId });
    expect(r3.removedVolumeIds).toEqual([chain[2]!.volumeId]);
    expect(await exists(chain[2]!.path)).toBe(false);
    const final = await s.sd.readChain(image.imageId);
    expect(final.map((v) => v.volumeId)).toEqual([chain[0]!.volumeId, chain[1]!.volumeId]);
    expect(final.map((v) => v.snapshotId)).toEqual([s1.snapshotId, null]);

    // libvirt agrees: live and persistent chains are the two remaining volumes.
    const live = parseDomainDiskChains(await vm.domain.xml())[0]!;
    expect(live.chain.map((e) => e.path)).toEqual([final[1]!.path, final[0]!.path]);
    const persistent = parseDomainDiskChains(await vm.domain.xml({ inactive: true }))[0]!;
    expect(persistent.chain[0]!.path).toBe(final[1]!.path);

    // Every byte the guest saw is still what it sees.
    expect(
      await sameContent({ path: before, format: 'raw' }, { path: final[1]!.path, format: 'qcow2' }),
    ).toBe(true);
    for (const p of [D[0]!, D[1]!, { ...C, offset: 6 << 16, length: 2 << 16 }])
      expect(await hasPattern(final[1]!.path, 'qcow2', p)).toBe(true);
    expect(await hasPattern(final[1]!.path, 'qcow2', { byte: 0x41, offset: 0, length: 1 << 16 })).toBe(false);

    // Visibility: search attributes and the UI's current details of the finished merge.
    const merge = s.client.workflow.getHandle(`merge-disk:${vm.uuid}:${image.imageId}`);
    const attrs = (await merge.describe()).typedSearchAttributes;
    expect(attrs.get(VM_ID_KEY)).toBe(vm.uuid);
    expect(attrs.get(HOST_ID_KEY)).toBe(s.hostId);
    expect(attrs.get(STAGE_KEY)).toBe('done');
    const meta = await merge.query<{ currentDetails?: string }>('__temporal_workflow_metadata');
    expect(meta.currentDetails).toMatch(/stage `done`.*live on host/);
    expect(await merge.query('progress')).toMatchObject({ stage: 'done', mode: 'live', hostId: s.hostId });

    const audit = await s.auditLog.read({ vmId: vm.uuid });
    expect(audit.filter((e) => e.workflowType === 'mergeDisk').map((e) => e.outcome)).toEqual([
      'started',
      'completed',
      'started',
      'completed',
    ]);
  });
});
