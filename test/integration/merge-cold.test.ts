// Shut-off VMs: snapshots rewrite the persistent definition; merges run with qemu-img on the storage role.
import path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { parseDomainDiskChains } from '../../src/inspect/domain-xml';
import { qcow2Chain } from '../../src/inspect/qcow2-chain';
import { LibvirtError } from '../../src/libvirt';
import { dumpGuestView, exists, hasPattern, sameContent } from '../helpers/data';
import { dirtyMaps, qemuImgCommitRunsOn, stopAllNbdServers, uncovered } from '../helpers/qemu';
import { createStackVm, useStack } from '../helpers/stack';
import { createTempDir, pollUntil } from '../helpers/vm-fixture';
import { createSnapshot, removeSnapshot, startMergeDisk, waitForProgress } from '../helpers/workflows';

const exec = promisify(execFile);
const KiB = 1024;

async function writeOffline(
  file: string,
  format: string,
  p: { byte: number; offset: number; length: number },
) {
  await exec('qemu-io', [
    '-f',
    format,
    '-c',
    `write -P 0x${p.byte.toString(16)} ${p.offset} ${p.length}`,
    file,
  ]);
}

describe('cold merges (VM shut off)', () => {
  afterEach(stopAllNbdServers);

  it('backward: intermediate then leaf; definition follows; data and bitmaps intact; the VM boots from it', async () => {
    const s = await useStack();
    const tmp = await createTempDir();
    const { vm, disks } = await createStackVm(s, { disks: 1, start: false });
    const base = disks[0]!.base;
    await exec('qemu-img', ['bitmap', '--add', '--enable', '-g', '64K', base.path, 'backup-1']);
    const writes = [
      { byte: 0x41, offset: 0, length: 256 * KiB },
      { byte: 0x42, offset: 128 * KiB, length: 256 * KiB },
      { byte: 0x43, offset: 320 * KiB, length: 256 * KiB },
    ];
    await writeOffline(base.path, 'qcow2', writes[0]!);
    const s1 = await createSnapshot(s, vm.uuid);
    expect(s1.mode).toBe('cold');
    let chain = await s.sd.readChain(disks[0]!.imageId);
    // The new leaf carries the bitmap too, as libvirt does for a live snapshot.
    await exec('qemu-img', ['bitmap', '--add', '--enable', '-g', '64K', chain[1]!.path, 'backup-1']);
    await writeOffline(chain[1]!.path, 'qcow2', writes[1]!);
    const s2 = await createSnapshot(s, vm.uuid);
    chain = await s.sd.readChain(disks[0]!.imageId);
    await exec('qemu-img', ['bitmap', '--add', '--enable', '-g', '64K', chain[2]!.path, 'backup-1']);
    await writeOffline(chain[2]!.path, 'qcow2', writes[2]!);
    expect(parseDomainDiskChains(await vm.domain.xml({ inactive: true }))[0]!.chain[0]!.path).toBe(
      chain[2]!.path,
    );
    const before = await dumpGuestView(chain[2]!.path, 'qcow2', path.join(tmp.path, 'before.raw'));

    // Intermediate: S1's volume (base) absorbs S2's volume; the leaf is rebased onto base.
    const r1 = await removeSnapshot(s, { vmId: vm.uuid, snapshotId: s1.snapshotId });
    expect(r1.removedVolumeIds).toEqual([chain[1]!.volumeId]);
    expect(await exists(chain[1]!.path)).toBe(false);
    const mid = await s.sd.readChain(disks[0]!.imageId);
    expect(mid.map((v) => v.volumeId)).toEqual([chain[0]!.volumeId, chain[2]!.volumeId]);
    expect((await qcow2Chain(mid[1]!.path))[0]!.backingFilename).toBe(chain[0]!.volumeId);

    // Leaf: base absorbs the leaf; the persistent definition now points at base.
    const r2 = await removeSnapshot(s, { vmId: vm.uuid, snapshotId: s2.snapshotId });
    expect(r2.removedVolumeIds).toEqual([chain[2]!.volumeId]);
    const final = await s.sd.readChain(disks[0]!.imageId);
    expect(final.map((v) => v.volumeId)).toEqual([base.volumeId]);
    expect(parseDomainDiskChains(await vm.domain.xml({ inactive: true }))[0]!.chain[0]!.path).toBe(base.path);
    expect(await sameContent({ path: before, format: 'raw' }, { path: base.path, format: 'qcow2' })).toBe(
      true,
    );

    const [info] = await qcow2Chain(base.path);
    const bitmap = info!.bitmaps?.find((b) => b.name === 'backup-1');
    expect(bitmap?.flags).toContain('auto');
    expect(bitmap?.flags).not.toContain('in-use');
    expect(uncovered((await dirtyMaps(base.path, ['backup-1']))['backup-1']!, writes)).toEqual([]);

    await vm.domain.create();
    expect(parseDomainDiskChains(await vm.domain.xml())[0]!.chain.map((e) => e.path)).toEqual([base.path]);
    expect(await hasPattern(base.path, 'qcow2', { byte: 0x43, offset: 320 * KiB, length: 256 * KiB })).toBe(
      true,
    );
  });

  it("qemu-img's image locks keep the VM from starting during a cold merge", async () => {
    const s = await useStack();
    const { vm, disks } = await createStackVm(s, { disks: 1, capacity: 64 << 20, start: false });
    const snap = await createSnapshot(s, vm.uuid);
    const chain = await s.sd.readChain(disks[0]!.imageId);
    await writeOffline(chain[1]!.path, 'qcow2', { byte: 0x55, offset: 0, length: 8 << 20 });
    // 8 MiB at 1 MiB/s: the commit holds the images for about 8 s.
    const handle = await startMergeDisk(s, {
      vmId: vm.uuid,
      storageDomainId: s.sd.id,
      imageId: disks[0]!.imageId,
      baseVolumeId: chain[0]!.volumeId,
      topVolumeId: chain[1]!.volumeId,
      bandwidthBytesPerSec: 1 << 20,
    });
    await waitForProgress(handle, (p) => p.stage === 'copying' && p.mode === 'cold');
    await pollUntil(() => qemuImgCommitRunsOn(chain[1]!.path), 30_000, 'qemu-img commit to run');
    const refused = await vm.domain.create().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(refused).toBeInstanceOf(LibvirtError);
    expect((refused as LibvirtError).message, (refused as LibvirtError).message).toMatch(/lock/i);
    await handle.result();
    expect((await s.sd.readChain(disks[0]!.imageId)).map((v) => v.volumeId)).toEqual([chain[0]!.volumeId]);
    await vm.domain.create();
    expect(await hasPattern(chain[0]!.path, 'qcow2', { byte: 0x55, offset: 0, length: 8 << 20 })).toBe(true);
    expect(snap.mode).toBe('cold');
  });

  it('forward: pulls the snapshot volume into the leaf (safe rebase)', async () => {
    const s = await useStack();
    const tmp = await createTempDir();
    const { vm, disks } = await createStackVm(s, { disks: 1, format: 'raw', start: false });
    await writeOffline(disks[0]!.base.path, 'raw', { byte: 0x41, offset: 0, length: 256 * KiB });
    const s1 = await createSnapshot(s, vm.uuid);
    let chain = await s.sd.readChain(disks[0]!.imageId);
    await writeOffline(chain[1]!.path, 'qcow2', { byte: 0x42, offset: 128 * KiB, length: 256 * KiB });
    const s2 = await createSnapshot(s, vm.uuid);
    chain = await s.sd.readChain(disks[0]!.imageId);
    await writeOffline(chain[2]!.path, 'qcow2', { byte: 0x43, offset: 320 * KiB, length: 64 * KiB });
    const before = await dumpGuestView(chain[2]!.path, 'qcow2', path.join(tmp.path, 'before.raw'));

    const r = await removeSnapshot(s, { vmId: vm.uuid, snapshotId: s2.snapshotId, direction: 'forward' });
    expect(r.removedVolumeIds).toEqual([chain[1]!.volumeId]);
    const after = await s.sd.readChain(disks[0]!.imageId);
    expect(after.map((v) => v.volumeId)).toEqual([chain[0]!.volumeId, chain[2]!.volumeId]);
    expect(after[0]!.snapshotId).toBe(s1.snapshotId);
    const headers = await qcow2Chain(after[1]!.path);
    expect(headers.map((h) => h.format)).toEqual(['qcow2', 'raw']);
    expect(headers[0]!.backingFilename).toBe(chain[0]!.volumeId);
    expect(
      await sameContent({ path: before, format: 'raw' }, { path: after[1]!.path, format: 'qcow2' }),
    ).toBe(true);
  });
});
