// backupVm on a running 2-disk VM (DESIGN "Backups"): full, then incrementals with guest writes between,
// each restore byte for byte what the guest read at that backup's snapshot; only changed blocks copied;
// the chain back to its length; a user's snapshot in the chain; one operation per VM at a time.
import path from 'node:path';
import type { WorkflowHandle } from '@temporalio/client';
import { afterEach, describe, expect, it } from 'vitest';
import { parseDomainDiskChains } from '../../src/inspect/domain-xml';
import type { BackupProgress } from '../../src/schemas/progress';
import type { BackupVmResult } from '../../src/schemas/results';
import {
  backupVm,
  compareWithView,
  guestViews,
  inside,
  ownExtents,
  pruneBackups,
  restoreBackup,
  startBackup,
} from '../helpers/backups';
import { exists, writeThroughGuest } from '../helpers/data';
import { activityRun } from '../helpers/history';
import { stopAllNbdServers, writePattern } from '../helpers/qemu';
import { createStackVm, useStack } from '../helpers/stack';
import type { Stack } from '../helpers/stack';
import { createTempDir } from '../helpers/vm-fixture';
import type { TestVm } from '../helpers/vm-fixture';
import {
  createSnapshot,
  failureTypeOf,
  removeSnapshot,
  startRemoveSnapshot,
  waitForProgress,
} from '../helpers/workflows';

const KiB = 1024;
const G = 64 * KiB; // the bitmaps' granularity

async function scheduledActivities(h: WorkflowHandle): Promise<string[]> {
  const events = (await h.fetchHistory()).events ?? [];
  return events.flatMap((e) => e.activityTaskScheduledEventAttributes?.activityType?.name ?? []);
}

async function persistentLeaves(vm: TestVm): Promise<Array<{ target: string; path: string }>> {
  return parseDomainDiskChains(await vm.domain.xml({ inactive: true }))
    .filter((d) => d.device === 'disk')
    .map((d) => ({ target: d.target, path: d.chain[0]!.path! }));
}

async function leaves(vm: TestVm): Promise<Array<{ target: string; path: string; length: number }>> {
  return parseDomainDiskChains(await vm.domain.xml())
    .filter((d) => d.device === 'disk')
    .map((d) => ({ target: d.target, path: d.chain[0]!.path!, length: d.chain.length }));
}

/** Restores `b` and compares each disk with the guest's view taken before it. */
async function expectRestores(s: Stack, b: BackupVmResult, repo: string, views: Record<string, string>) {
  const to = await createTempDir('lm-restore-');
  const r = await restoreBackup(s, {
    vmId: b.vmId,
    backupId: b.backupId,
    repository: repo,
    targetDir: to.path,
  });
  expect(r.disks.map((d) => d.target).sort()).toEqual(Object.keys(views).sort());
  for (const d of r.disks) expect(await compareWithView(d.path, views[d.target]!), d.target).toBe('');
}

describe('backupVm', () => {
  afterEach(stopAllNbdServers);

  it('full, then incrementals that copy only the changed blocks, each restoring exactly; a user snapshot in between', async () => {
    const s = await useStack();
    const { vm } = await createStackVm(s, { disks: 2, format: 'qcow2' });
    const repo = (await createTempDir('lm-repo-')).path;
    const work = (await createTempDir('lm-views-')).path;
    await writeThroughGuest(vm.domain, 0, { byte: 0x11, offset: 0, length: 1024 * KiB });
    await writeThroughGuest(vm.domain, 1, { byte: 0x12, offset: 4096 * KiB, length: 512 * KiB });
    const before = await leaves(vm);

    // Full.
    const v1 = await guestViews(before, work, 'b1');
    const b1 = await backupVm(s, { vmId: vm.uuid, repository: repo });
    expect(b1.disks.map((d) => [d.target, d.mode])).toEqual([
      ['vda', 'full'],
      ['vdb', 'full'],
    ]);
    expect(b1.disks[0]!.reason).toMatch(/no earlier backup/);
    expect((await leaves(vm)).map((l) => [l.path, l.length])).toEqual(before.map((l) => [l.path, l.length]));
    // A full copy holds the written data, not the unwritten rest of the 64 MiB.
    expect(b1.disks[0]!.copiedBytes).toBeGreaterThanOrEqual(1024 * KiB);
    expect(b1.disks[0]!.copiedBytes).toBeLessThan(4096 * KiB);

    // Incremental: two ranges on vda, one on vdb.
    const w2 = [
      { disk: 0, byte: 0x21, offset: 512 * KiB, length: 64 * KiB },
      { disk: 0, byte: 0x22, offset: 20 * 1024 * KiB, length: 192 * KiB },
      { disk: 1, byte: 0x23, offset: 8192 * KiB + 4 * KiB, length: 8 * KiB }, // inside one granule
    ];
    for (const w of w2) await writeThroughGuest(vm.domain, w.disk, w);
    const v2 = await guestViews(before, work, 'b2');
    const b2 = await backupVm(s, { vmId: vm.uuid, repository: repo });
    expect(b2.parentBackupId).toBe(b1.backupId);
    expect(b2.disks.map((d) => [d.target, d.mode])).toEqual([
      ['vda', 'incremental'],
      ['vdb', 'incremental'],
    ]);
    const [vda2, vdb2] = [b2.disks[0]!, b2.disks[1]!];
    expect(vda2.changedBytes).toBe(64 * KiB + 192 * KiB);
    expect(vdb2.changedBytes).toBe(G);
    for (const d of b2.disks) expect(d.copiedBytes).toBeLessThanOrEqual(d.changedBytes + G * d.extents);
    // Only the written granules are in the incremental's own file.
    expect(
      inside(await ownExtents(vda2.file), [
        { offset: 512 * KiB, length: 64 * KiB },
        { offset: 20 * 1024 * KiB, length: 192 * KiB },
      ]),
    ).toBe(true);
    expect(inside(await ownExtents(vdb2.file), [{ offset: 8192 * KiB, length: G }])).toBe(true);
    expect((await leaves(vm)).map((l) => l.length)).toEqual(before.map((l) => l.length));

    // A user's snapshot: the next incremental unions the bitmap over both frozen images.
    const user = await createSnapshot(s, vm.uuid, 'user snapshot');
    await writeThroughGuest(vm.domain, 0, { byte: 0x31, offset: 30 * 1024 * KiB, length: 64 * KiB });
    const withUser = await leaves(vm);
    await writeThroughGuest(vm.domain, 1, { byte: 0x32, offset: 0, length: 128 * KiB });
    const v3 = await guestViews(withUser, work, 'b3');
    const b3 = await backupVm(s, { vmId: vm.uuid, repository: repo });
    expect(b3.disks.map((d) => [d.mode, d.changedBytes])).toEqual([
      ['incremental', 64 * KiB],
      ['incremental', 128 * KiB],
    ]);
    expect((await leaves(vm)).map((l) => l.length)).toEqual(withUser.map((l) => l.length));

    // The user's snapshot still merges; the next incremental is still exact.
    await removeSnapshot(s, { vmId: vm.uuid, snapshotId: user.snapshotId });
    await writeThroughGuest(vm.domain, 0, { byte: 0x41, offset: 40 * 1024 * KiB, length: 128 * KiB });
    const v4 = await guestViews(await leaves(vm), work, 'b4');
    const b4 = await backupVm(s, { vmId: vm.uuid, repository: repo });
    expect(b4.disks.map((d) => [d.mode, d.changedBytes])).toEqual([
      ['incremental', 128 * KiB],
      ['incremental', 0],
    ]);

    for (const [b, v] of [
      [b1, v1],
      [b2, v2],
      [b3, v3],
      [b4, v4],
    ] as const)
      await expectRestores(s, b, repo, v);

    // Prune to two: the remaining points still restore exactly, the oldest files are gone.
    const pruned = await pruneBackups(s, { vmId: vm.uuid, repository: repo, keep: 2 });
    expect(pruned.removed).toEqual([b1.backupId, b2.backupId]);
    for (const d of [...b1.disks, ...b2.disks]) expect(await exists(d.file)).toBe(false);
    await expectRestores(s, b3, repo, v3);
    await expectRestores(s, b4, repo, v4);
    expect(await exists(path.join(repo, vm.uuid, 'backups.json'))).toBe(true);
  });

  it('refuses a snapshot removal while a backup of the VM runs, and a backup while a merge runs', async () => {
    const s = await useStack();
    const { vm } = await createStackVm(s, { disks: 1, format: 'qcow2' });
    const repo = (await createTempDir('lm-repo-')).path;
    await writeThroughGuest(vm.domain, 0, { byte: 0x51, offset: 0, length: 4096 * KiB });
    const user = await createSnapshot(s, vm.uuid);
    await writeThroughGuest(vm.domain, 0, { byte: 0x52, offset: 0, length: 4096 * KiB });

    // A slow full copy holds the VM: the backup job's rate limit counts the whole 64 MiB disk (8 s).
    const backup = await startBackup(s, { vmId: vm.uuid, repository: repo, bandwidthBytesPerSec: 8 << 20 });
    // The copy reports as it goes: bytes, rate and ETA per disk before it ends.
    const midway = (await waitForProgress(backup, (p) => {
      const d = (p as BackupProgress).disks[0];
      return p.stage === 'copying' && d !== undefined && d.copiedBytes > 0 && d.etaSeconds !== null;
    })) as BackupProgress;
    expect(midway.disks[0]!.bytesPerSecond).toBeGreaterThan(0);
    expect(midway.disks[0]!.copiedBytes).toBeLessThan(64 << 20);
    const refused = await startRemoveSnapshot(s, { vmId: vm.uuid, snapshotId: user.snapshotId });
    expect(await failureTypeOf(refused.result())).toBe('BackupInProgress');
    // The lock's holder was looked up: the refusal names it.
    expect((await activityRun(refused, 'vmLockHolder')).result).toMatchObject({ workflowType: 'backupVm' });
    await backup.result();

    // A slow merge holds the VM: a backup is refused, before any side effect.
    const merge = await startRemoveSnapshot(s, {
      vmId: vm.uuid,
      snapshotId: user.snapshotId,
      bandwidthBytesPerSec: 512 * KiB,
    });
    await waitForProgress(
      merge,
      (p) => p.stage === 'ready' || p.stage === 'copying' || p.stage === 'starting',
    );
    const second = await startBackup(s, { vmId: vm.uuid, repository: repo });
    expect(await failureTypeOf(second.result())).toBe('MergeInProgress');
    expect(await scheduledActivities(second)).not.toContain('addBackupBitmap');
    await merge.result();
  });

  it('cancelled during the copy: merged back, its files and bitmap removed, nothing recorded', async () => {
    const s = await useStack();
    const { vm } = await createStackVm(s, { disks: 2, format: 'qcow2' });
    const repo = (await createTempDir('lm-repo-')).path;
    const work = (await createTempDir('lm-views-')).path;
    await writeThroughGuest(vm.domain, 0, { byte: 0x61, offset: 0, length: 1024 * KiB });
    const first = await backupVm(s, { vmId: vm.uuid, repository: repo });
    await writeThroughGuest(vm.domain, 1, { byte: 0x62, offset: 0, length: 1024 * KiB });
    const before = await leaves(vm);

    const backup = await startBackup(s, { vmId: vm.uuid, repository: repo, bandwidthBytesPerSec: 8 << 20 });
    await waitForProgress(backup, (p) => p.stage === 'copying');
    await backup.cancel();
    await backup.result().catch(() => undefined);
    expect((await backup.describe()).status.name).toBe('CANCELLED');
    // The compensation ran: merged back, files gone, this backup's bitmap removed, nothing recorded.
    expect(await scheduledActivities(backup)).toEqual(
      expect.arrayContaining(['discardBackup', 'removeBackupBitmaps']),
    );
    expect((await leaves(vm)).map((l) => [l.path, l.length])).toEqual(before.map((l) => [l.path, l.length]));
    const backupId = backup.workflowId.split(':')[2]!;
    for (const d of first.disks) {
      expect(await exists(path.join(path.dirname(d.file), `${backupId}.qcow2`))).toBe(false);
      expect(await exists(path.join(path.dirname(d.file), `${backupId}.qcow2.part`))).toBe(false);
    }
    const restore = restoreBackup(s, { vmId: vm.uuid, backupId, repository: repo, targetDir: work });
    expect(await failureTypeOf(restore)).toBe('BackupNotFound');

    // The next backup is again relative to the last recorded one, and exact.
    const view = await guestViews(before, work, 'after-cancel');
    const next = await backupVm(s, { vmId: vm.uuid, repository: repo });
    expect(next.parentBackupId).toBe(first.backupId);
    expect(next.disks.map((d) => [d.mode, d.changedBytes])).toEqual([
      ['incremental', 0],
      ['incremental', 1024 * KiB],
    ]);
    await expectRestores(s, next, repo, view);
  });

  it('a shut-off VM: the bitmaps through qemu-img, the same full then exact incremental', async () => {
    const s = await useStack();
    const { vm } = await createStackVm(s, { disks: 2, format: 'qcow2', start: false });
    const repo = (await createTempDir('lm-repo-')).path;
    const work = (await createTempDir('lm-views-')).path;
    const disks = await persistentLeaves(vm);
    await writePattern(disks[0]!.path, 'qcow2', { byte: 0x71, offset: 0, length: 1024 * KiB });
    const v1 = await guestViews(disks, work, 'c1');
    const b1 = await backupVm(s, { vmId: vm.uuid, repository: repo });
    expect(b1.mode).toBe('cold');
    expect(b1.disks.map((d) => d.mode)).toEqual(['full', 'full']);
    expect((await persistentLeaves(vm)).map((l) => l.path)).toEqual(disks.map((l) => l.path));

    // Written as the VM would at its next run (the leaf open read-write, its bitmaps recording).
    await writePattern(disks[1]!.path, 'qcow2', { byte: 0x72, offset: 2048 * KiB, length: 128 * KiB });
    const v2 = await guestViews(disks, work, 'c2');
    const b2 = await backupVm(s, { vmId: vm.uuid, repository: repo });
    expect(b2.disks.map((d) => [d.mode, d.changedBytes])).toEqual([
      ['incremental', 0],
      ['incremental', 128 * KiB],
    ]);
    await expectRestores(s, b1, repo, v1);
    await expectRestores(s, b2, repo, v2);
  });
});
