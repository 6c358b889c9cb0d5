import { describe, expect, it } from 'vitest';
import { writeThroughGuest } from '../helpers/data';
import { createStackVm, useStack } from '../helpers/stack';
import { createSnapshot, removeSnapshot } from '../helpers/workflows';

describe('finding the VM among the configured hosts', () => {
  it('asks every configured host; an absent agent does not stop or slow a merge of a running VM', async () => {
    // The first configured host has no agent at all: its probe can only time out.
    const s = await useStack({ extraHosts: ['ghost-host'] });
    const { vm } = await createStackVm(s, { disks: 1 });
    await writeThroughGuest(vm.domain, 0, { byte: 0x41, offset: 0, length: 65536 });
    const snap = await createSnapshot(s, vm.uuid);
    expect(snap.hostId).toBe(s.hostId);
    const t0 = Date.now();
    const r = await removeSnapshot(s, { vmId: vm.uuid, snapshotId: snap.snapshotId });
    expect(r.disks.map((d) => d.status)).toEqual(['merged']);
    // The ghost's probe has a 5 s schedule-to-start timeout; the merge does not wait for it.
    expect(Date.now() - t0).toBeLessThan(5000);
  });
});
