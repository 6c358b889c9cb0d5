// The `livemerge` CLI as a user runs it: a separate process (node bin/livemerge.cjs) against this file's
// stack (Temporal namespace, engine and host-agent workers in this process, a storage domain in a temp dir).
import { randomBytes, randomUUID } from 'node:crypto';
import path from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import type { AuditRecord } from '../../src/audit/audit-log';
import { exists, writeThroughGuest } from '../helpers/data';
import type { Stack } from '../helpers/stack';
import { useStack } from '../helpers/stack';
import { NAMESPACE } from '../helpers/temporal';
import { UI, anyUuid, cli, cliJson } from '../helpers/cli';
import { pollUntil, removeVm } from '../helpers/vm-fixture';

const link = (id: string) => `${UI}/namespaces/${NAMESPACE}/workflows/${encodeURIComponent(id)}`;

interface VmCreated {
  vmId: string;
  name: string;
  hostId: string;
  disks: Array<{ target: string; storageDomainId: string; imageId: string; volumeId: string; path: string }>;
}
interface SnapshotCreated {
  workflowId: string;
  snapshotId: string;
  disks: Array<{ target: string; imageId: string; frozenVolumeId: string; leafVolumeId: string }>;
}

/** `vm create` through the CLI; the VM is removed when the test ends, whatever happens. */
async function createVm(s: Stack, disks: number): Promise<VmCreated> {
  const name = `lm-test-cli-${randomBytes(4).toString('hex')}`;
  onTestFinished(() => removeVm(s.conn, name));
  const { out, stderr } = await cliJson<VmCreated>(s, [
    'vm',
    'create',
    '--name',
    name,
    '--disks',
    String(disks),
    '--size',
    '16M',
  ]);
  expect(stderr).toBe('');
  return out;
}

describe('livemerge CLI', () => {
  it('vm create, snapshot create ×2, chain, snapshot list, snapshot remove --wait, status, audit, reconcile, vm delete', async () => {
    const s = await useStack();
    const sd = s.sd.id;
    const vm = await createVm(s, 2);
    expect(vm).toEqual({
      vmId: anyUuid(),
      name: vm.name,
      hostId: s.hostId,
      disks: ['vda', 'vdb'].map((target) => ({
        target,
        storageDomainId: sd,
        imageId: anyUuid(),
        volumeId: anyUuid(),
        path: expect.stringMatching(
          new RegExp(`^${s.sd.dir}/images/[0-9a-f-]{36}/[0-9a-f-]{36}$`),
        ) as unknown,
      })),
    });
    const [vda, vdb] = [vm.disks[0]!, vm.disks[1]!];
    expect(vda.path).toBe(path.join(s.sd.dir, 'images', vda.imageId, vda.volumeId));
    const dom = await s.conn.lookupByName(vm.name);
    onTestFinished(() => dom.free());
    expect(dom.uuid).toBe(vm.vmId);
    expect(await dom.isActive()).toBe(true);

    // Two snapshots with data in between (the first one by name, the second by UUID, with an id).
    await writeThroughGuest(dom, 0, { byte: 0x41, offset: 0, length: 256 << 10 });
    const s1 = await cliJson<SnapshotCreated>(s, ['snapshot', 'create', '--vm', vm.name]);
    const s1Id = s1.out.snapshotId;
    expect(s1.out).toEqual({
      workflowId: `create-snapshot:${vm.vmId}:${s1Id}`,
      snapshotId: anyUuid(),
      disks: [vda, vdb].map((d) => ({
        target: d.target,
        imageId: d.imageId,
        frozenVolumeId: d.volumeId,
        leafVolumeId: anyUuid(),
      })),
    });
    expect(s1.stderr).toContain(`workflow ${s1.out.workflowId} started`);
    expect(s1.stderr).toContain(link(s1.out.workflowId));
    await writeThroughGuest(dom, 0, { byte: 0x42, offset: 128 << 10, length: 256 << 10 });
    const s2Id = randomUUID();
    const s2 = await cliJson<SnapshotCreated>(s, [
      'snapshot',
      'create',
      '--vm',
      vm.vmId,
      '--id',
      s2Id,
      '--description',
      'second',
    ]);
    expect(s2.out).toEqual({
      workflowId: `create-snapshot:${vm.vmId}:${s2Id}`,
      snapshotId: s2Id,
      disks: s1.out.disks.map((d) => ({
        target: d.target,
        imageId: d.imageId,
        frozenVolumeId: d.leafVolumeId,
        leafVolumeId: anyUuid(),
      })),
    });

    // chain: base first, from storage metadata.
    const volumePath = (imageId: string, volumeId: string) =>
      path.join(s.sd.dir, 'images', imageId, volumeId);
    const chainOf = (i: number) => {
      const d = vm.disks[i]!;
      const mid = s1.out.disks[i]!.leafVolumeId;
      const leaf = s2.out.disks[i]!.leafVolumeId;
      return {
        target: d.target,
        storageDomainId: sd,
        imageId: d.imageId,
        volumes: [
          { volumeId: d.volumeId, parentId: null, snapshotId: s1Id },
          { volumeId: mid, parentId: d.volumeId, snapshotId: s2Id },
          { volumeId: leaf, parentId: mid, snapshotId: null },
        ].map((v) => ({ ...v, format: 'qcow2', legality: 'LEGAL', path: volumePath(d.imageId, v.volumeId) })),
      };
    };
    const chain = await cliJson<unknown>(s, ['chain', '--vm', vm.name]);
    expect(chain.out).toEqual({ disks: [chainOf(0), chainOf(1)] });

    const list = await cliJson<unknown>(s, ['snapshot', 'list', '--vm', vm.name]);
    expect(list.out).toEqual({
      vmId: vm.vmId,
      name: vm.name,
      snapshots: [
        { snapshotId: s1Id, volumes: (i: number) => vm.disks[i]!.volumeId },
        { snapshotId: s2Id, volumes: (i: number) => s1.out.disks[i]!.leafVolumeId },
      ].map((x) => ({
        snapshotId: x.snapshotId,
        disks: vm.disks.map((d, i) => ({
          target: d.target,
          storageDomainId: sd,
          imageId: d.imageId,
          volumeId: x.volumes(i),
        })),
      })),
    });

    // Bad input is exit 2 before anything starts; nothing is printed on stdout.
    for (const args of [
      ['snapshot', 'remove', '--vm', vm.name, '--snapshot', 'not-a-uuid', '--wait'],
      ['snapshot', 'remove', '--vm', vm.name, '--snapshot', s1Id.toUpperCase()],
      ['snapshot', 'remove', '--vm', vm.name, '--snapshot', randomUUID()],
      ['snapshot', 'remove', '--vm', vm.name, '--snapshot', s1Id, '--bandwidth', '-5'],
      ['snapshot', 'create', '--vm', `no-such-vm-${randomBytes(4).toString('hex')}`],
      ['snapshot', 'create', '--vm', vm.name, '--id', s2Id],
      ['snapshot', 'create', '--vm', vm.name, '--id', 'S2'],
      ['snapshot', 'list', '--vm', randomUUID()],
      ['chain', '--vm', 'bad name;rm'],
      ['merge', '--vm', vm.name, '--image', vda.imageId, '--base', vda.volumeId, '--top', vda.volumeId],
      ['status', `merge-disk:${vm.vmId}:${randomUUID()}`],
    ]) {
      const r = await cli(s, [...args, '--json']);
      expect({ args, code: r.code, stdout: r.stdout }).toEqual({ args, code: 2, stdout: '' });
      expect(r.stderr).toMatch(/^livemerge: /);
    }
    const unknown = await cli(s, ['snapshot', 'create', '--vm', 'no-such-vm-x', '--json']);
    expect(unknown.stderr).toContain('no VM "no-such-vm-x"');
    const notUuid = await cli(s, ['snapshot', 'remove', '--vm', vm.name, '--snapshot', 'not-a-uuid']);
    expect(notUuid.stderr).toContain('--snapshot must be a canonical lower-case UUID');

    // Remove the first snapshot live: each disk's middle volume is committed into its base.
    const removeId = `remove-snapshot:${vm.vmId}:${s1Id}`;
    const removed = await cliJson<unknown>(s, [
      'snapshot',
      'remove',
      '--vm',
      vm.name,
      '--snapshot',
      s1Id,
      '--wait',
    ]);
    const mids = s1.out.disks.map((d) => d.leafVolumeId);
    expect(removed.out).toEqual({ workflowId: removeId, status: 'COMPLETED', removedVolumeIds: mids });
    expect(removed.stderr).toContain(`workflow ${removeId} started`);
    expect(removed.stderr).toContain(link(removeId));
    for (const [i, d] of vm.disks.entries())
      expect(await exists(volumePath(d.imageId, mids[i]!))).toBe(false);

    const after = await cliJson<{
      disks: Array<{ volumes: Array<{ volumeId: string; snapshotId: string | null }> }>;
    }>(s, ['chain', '--vm', vm.name]);
    expect(after.out.disks.map((d) => d.volumes.map((v) => [v.volumeId, v.snapshotId]))).toEqual(
      vm.disks.map((d, i) => [
        [d.volumeId, s2Id],
        [s2.out.disks[i]!.leafVolumeId, null],
      ]),
    );

    // status of the closed workflow: its progress query still answers.
    const progress = {
      stage: 'done',
      mode: expect.toBeOneOf([null, 'live']) as unknown,
      hostId: s.hostId,
      cur: expect.any(Number) as unknown,
      end: expect.any(Number) as unknown,
      bytesPerSecond: expect.toBeOneOf([null, expect.any(Number)]) as unknown,
      etaSeconds: expect.toBeOneOf([null, expect.any(Number)]) as unknown,
    };
    const status = await cliJson<unknown>(s, ['status', removeId]);
    expect(status.out).toEqual({
      workflowId: removeId,
      type: 'removeSnapshot',
      status: 'COMPLETED',
      progress: {
        ...progress,
        removedVolumeIds: mids,
        disks: vm.disks.map((d, i) => ({
          ...progress,
          mode: 'live',
          removedVolumeIds: [mids[i]],
          imageId: d.imageId,
          target: d.target,
        })),
      },
    });
    const mergeId = `merge-disk:${vm.vmId}:${vda.imageId}`;
    const mergeStatus = await cliJson<unknown>(s, ['status', mergeId, '--follow']);
    expect(mergeStatus.out).toEqual({
      workflowId: mergeId,
      type: 'mergeDisk',
      status: 'COMPLETED',
      progress: { ...progress, mode: 'live', removedVolumeIds: [mids[0]] },
    });

    // The audit log: one event per outcome of each workflow, for this VM only.
    const audit = await cliJson<{ file: string; events: AuditRecord[] }>(s, ['audit', '--vm', vm.name]);
    expect(audit.out.file).toBe(s.auditLog.file);
    for (const e of audit.out.events)
      expect(e).toEqual({
        at: expect.any(String) as unknown,
        eventId: `${e.workflowId}/${e.runId}/${e.outcome}`,
        outcome: expect.toBeOneOf(['started', 'completed']) as unknown,
        workflowType: expect.toBeOneOf(['createSnapshot', 'removeSnapshot', 'mergeDisk']) as unknown,
        workflowId: expect.any(String) as unknown,
        runId: expect.any(String) as unknown,
        vmId: vm.vmId,
        hostId: s.hostId,
        detail: expect.any(Object) as unknown,
      });
    const outcomes = (type: string) =>
      audit.out.events.filter((e) => e.workflowType === type).map((e) => `${e.workflowId} ${e.outcome}`);
    expect(outcomes('createSnapshot')).toEqual(
      [s1.out.workflowId, s2.out.workflowId].flatMap((id) => [`${id} started`, `${id} completed`]),
    );
    expect(outcomes('removeSnapshot')).toEqual([`${removeId} started`, `${removeId} completed`]);
    expect(outcomes('mergeDisk').sort()).toEqual(
      vm.disks
        .flatMap((d) => [
          `merge-disk:${vm.vmId}:${d.imageId} completed`,
          `merge-disk:${vm.vmId}:${d.imageId} started`,
        ])
        .sort(),
    );
    // By UUID too; another VM's events are not there.
    expect((await cliJson<{ events: unknown[] }>(s, ['audit', '--vm', vm.vmId])).out.events).toEqual(
      audit.out.events,
    );
    expect((await cliJson<{ events: unknown[] }>(s, ['audit', '--vm', randomUUID()])).out.events).toEqual([]);

    // reconcile: nothing to delete, every chain agrees.
    const rec = await cliJson<{ workflowId: string }>(s, ['reconcile', '--storage-domain', sd]);
    expect(rec.out).toEqual({
      workflowId: expect.stringMatching(new RegExp(`^reconcile:${sd}:\\d+$`)) as unknown,
      storageDomainId: sd,
      deleted: [],
      reports: expect.arrayContaining(
        vm.disks.map((d) => ({ storageDomainId: sd, imageId: d.imageId, ok: true, disagreements: [] })),
      ) as unknown,
    });
    expect(rec.stderr).toContain(link(rec.out.workflowId));

    // vm delete: the VM and every volume of its images are gone.
    const del = await cliJson<unknown>(s, ['vm', 'delete', vm.name]);
    expect(del.out).toEqual({
      vmId: vm.vmId,
      name: vm.name,
      deletedImageIds: vm.disks.map((d) => d.imageId),
      deletedVolumeIds: expect.arrayContaining(
        vm.disks.flatMap((d, i) => [d.volumeId, s2.out.disks[i]!.leafVolumeId]),
      ) as unknown,
    });
    expect(await s.conn.findByName(vm.name)).toBeNull();
    for (const d of vm.disks) expect(await exists(path.join(s.sd.dir, 'images', d.imageId))).toBe(false);
    expect((await cli(s, ['vm', 'delete', vm.name])).code).toBe(2);
  }, 300_000);

  it('merge: the same request attaches to the running merge, a different one on that disk is refused', async () => {
    const s = await useStack();
    const vm = await createVm(s, 1);
    const disk = vm.disks[0]!;
    const dom = await s.conn.lookupByName(vm.name);
    onTestFinished(() => dom.free());
    const s1 = await cliJson<SnapshotCreated>(s, ['snapshot', 'create', '--vm', vm.name]);
    // 4 MiB in the middle volume, committed at 64 KiB/s: the merge runs for a minute, long enough for the
    // CLI calls below on a loaded machine (it is cancelled before it ends).
    await writeThroughGuest(dom, 0, { byte: 0x43, offset: 0, length: 4 << 20 });
    await cliJson<SnapshotCreated>(s, ['snapshot', 'create', '--vm', vm.name]);
    const top = s1.out.disks[0]!.leafVolumeId;
    const args = ['merge', '--vm', vm.name, '--image', disk.imageId, '--base', disk.volumeId, '--top', top];
    const mergeId = `merge-disk:${vm.vmId}:${disk.imageId}`;

    const first = await cliJson<unknown>(s, [...args, '--bandwidth', '64k']);
    expect(first.out).toEqual({ workflowId: mergeId });
    expect(first.stderr).toContain(`workflow ${mergeId} started`);
    expect(first.stderr).toContain(link(mergeId));
    await pollUntil(
      async () =>
        (await s.client.workflow.getHandle(mergeId).query<{ stage: string }>('progress')).stage === 'copying',
      60_000,
      'the merge to copy',
      100,
    );

    const again = await cliJson<unknown>(s, [...args, '--bandwidth', '65536']);
    expect(again.out).toEqual({ workflowId: mergeId });
    expect(again.stderr).toContain('already running with the same request: attached');

    const other = await cli(s, [...args, '--bandwidth', '128k', '--json']);
    expect(other.code).toBe(2);
    expect(other.stdout).toBe('');
    expect(other.stderr).toContain(`is already running as workflow ${mergeId} with a different request`);
    const removal = await cli(s, ['snapshot', 'remove', '--vm', vm.name, '--snapshot', s1.out.snapshotId]);
    expect(removal.code).toBe(2);
    expect(removal.stderr).toContain(`a merge is already running on disk vda of VM ${vm.name}`);

    // Cancelled before the pivot: the job is aborted, the chain stays as it was; --follow exits 1.
    const watching = cli(s, ['status', mergeId, '--follow', '--json']);
    const cancelled = await cliJson<{ requested: boolean; outcome: { status: string } }>(s, [
      'cancel',
      mergeId,
      '--wait',
    ]);
    expect(cancelled.out).toMatchObject({
      workflowId: mergeId,
      requested: true,
      outcome: { status: 'CANCELLED' },
    });
    const watched = await watching;
    expect(watched.code).toBe(1);
    expect(JSON.parse(watched.stdout)).toEqual({
      workflowId: mergeId,
      type: 'mergeDisk',
      status: 'CANCELLED',
      progress: expect.objectContaining({ stage: 'cancelled', removedVolumeIds: [] }) as unknown,
    });
    const chain = await cliJson<{ disks: Array<{ volumes: Array<{ volumeId: string; legality: string }> }> }>(
      s,
      ['chain', '--vm', vm.name],
    );
    expect(chain.out.disks[0]!.volumes.map((v) => v.legality)).toEqual(['LEGAL', 'LEGAL', 'LEGAL']);
    expect(chain.out.disks[0]!.volumes[1]!.volumeId).toBe(top);

    // A closed workflow cannot be cancelled (exit 1); an unknown one is bad input (exit 2).
    const closed = await cli(s, ['cancel', mergeId]);
    expect(closed.code).toBe(1);
    expect(closed.stderr).toContain('is already CANCELLED');
    expect((await cli(s, ['cancel', 'merge-disk:no-such-workflow'])).code).toBe(2);

    await cliJson<unknown>(s, ['vm', 'delete', vm.name]);
  }, 300_000);
});
