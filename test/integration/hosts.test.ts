// Several hosts (DESIGN.md "Hosts"): the system libvirtd (host A, storage role) and a simulated host B,
// a real libvirtd of its own, each with its agent. Every cross-host check reads both hosts' libvirtds.
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import type { WorkflowHandle } from '@temporalio/client';
import { describe, expect, it } from 'vitest';
import { HOLD_NAMESPACE } from '../../src/activities/host/vm-hold';
import { hostTaskQueue } from '../../src/common/task-queues';
import { simHostPid, startSimHost } from '../../src/devstack/sim-host';
import { deleteVolumeGuarded } from '../../src/guard/deletion-guard';
import { parseDomainDiskChains } from '../../src/inspect/domain-xml';
import { ENGINE_TASK_QUEUE } from '../../src/common/task-queues';
import { REPO_ROOT } from '../../src/config';
import { NAMESPACE } from '../helpers/temporal';
import { DeletionRefused } from '../../src/storage/errors';
import { fleetDomainXmls } from '../../src/workers/libvirt-provider';
import type { ReconcileResult } from '../../src/workflows/reconcile';
import { dumpGuestView, exists, hasPattern, sameContent, writeThroughGuest } from '../helpers/data';
import type { Stack, StackHost } from '../helpers/stack';
import { createStackVm, useStack } from '../helpers/stack';
import { createTempDir, pollUntil, removeVm, testVmXml, uniqueVmName } from '../helpers/vm-fixture';
import { createSnapshot, failureTypeOf, removeSnapshot, startRemoveSnapshot } from '../helpers/workflows';

const exec = promisify(execFile);
const MiB = 1 << 20;

const stack = () => useStack({ simHosts: 1, holds: true });
const BIN = path.join(REPO_ROOT, 'bin', 'livemerge.cjs');

/** The CLI as an operator on host A runs it: A's libvirtd is the local one; it knows no host B. */
function cli(s: Stack, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    TEMPORAL_ADDRESS: s.address,
    TEMPORAL_NAMESPACE: NAMESPACE,
    LIVEMERGE_HOST_ID: s.hostId,
    LIVEMERGE_STORAGE_ROOT: s.storageRoot,
    LIVEMERGE_AUDIT_LOG: s.auditLog.file,
    LIBVIRT_DEFAULT_URI: 'qemu:///system',
  };
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { env, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

async function cliJson<T>(s: Stack, args: string[]): Promise<T> {
  const r = await cli(s, [...args, '--json']);
  if (r.code !== 0) throw new Error(`livemerge ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}
const hostB = (s: Stack): StackHost => s.hosts[1]!;

/** The task queues each activity type of the workflow (and of its children) was scheduled on. */
async function queuesOf(s: Stack, handle: WorkflowHandle, type: string): Promise<string[]> {
  const out: string[] = [];
  const ids = [handle.workflowId];
  for (const e of (await handle.fetchHistory()).events ?? []) {
    const child = e.startChildWorkflowExecutionInitiatedEventAttributes?.workflowId;
    if (child) ids.push(child);
  }
  for (const id of ids)
    for (const e of (await s.client.workflow.getHandle(id).fetchHistory()).events ?? []) {
      const a = e.activityTaskScheduledEventAttributes;
      if (a?.activityType?.name === type) out.push(a.taskQueue?.name ?? '');
    }
  return out;
}

async function migrate(vmName: string, from: string, to: string): Promise<void> {
  await exec('virsh', [
    '-c',
    from,
    'migrate',
    '--live',
    '--unsafe', // a local directory is shared storage, which libvirt cannot tell
    '--persistent',
    '--undefinesource',
    vmName,
    to,
    '--migrateuri',
    'tcp://127.0.0.1',
  ]);
}

/** libvirt's error text of a migration that must be refused; fails the test when it goes through. */
async function migrateRefusal(vmName: string, from: string, to: string): Promise<string> {
  try {
    await migrate(vmName, from, to);
  } catch (e) {
    return (e as { stderr?: string }).stderr ?? (e instanceof Error ? e.message : 'unknown');
  }
  throw new Error(`the migration of ${vmName} went through`);
}

describe('several hosts', () => {
  it('merges live a VM that runs on host B; the storage role on host A deletes the volume', async () => {
    const s = await stack();
    const b = hostB(s);
    const tmp = await createTempDir();
    const { vm, disks } = await createStackVm(s, { hostId: b.hostId, capacity: 64 * MiB });
    const imageId = disks[0]!.imageId;
    await writeThroughGuest(vm.domain, 0, { byte: 0x61, offset: 0, length: 2 * MiB });
    const snap = await createSnapshot(s, vm.uuid);
    await writeThroughGuest(vm.domain, 0, { byte: 0x62, offset: MiB, length: 2 * MiB });
    const chain = await s.sd.readChain(imageId);
    const before = await dumpGuestView(chain[1]!.path, 'qcow2', path.join(tmp.path, 'before.raw'));

    const handle = await startRemoveSnapshot(s, { vmId: vm.uuid, snapshotId: snap.snapshotId });
    const result = (await handle.result()) as { hostId: string; removedVolumeIds: string[] };
    expect(result.hostId).toBe(b.hostId);
    expect(result.removedVolumeIds).toEqual([chain[1]!.volumeId]);
    // The job ran on B's agent, the deletion on the storage role (A's agent).
    expect(await queuesOf(s, handle, 'mergeOnHost')).toEqual([hostTaskQueue(b.hostId)]);
    expect(await queuesOf(s, handle, 'recordAndDelete')).toEqual(['livemerge-storage']);
    expect(await exists(chain[1]!.path)).toBe(false);
    // B's libvirtd runs the VM on base alone, byte for byte what the guest saw.
    const live = parseDomainDiskChains(await vm.domain.xml())[0]!;
    expect(live.chain.map((e) => e.path).filter(Boolean)).toEqual([chain[0]!.path]);
    expect(
      await sameContent({ path: before, format: 'raw' }, { path: chain[0]!.path, format: 'qcow2' }),
    ).toBe(true);
    // A does not know the VM at all; B's unit left no hold.
    expect(await s.conn.findByName(vm.name)).toBeNull();
    expect(await vm.domain.liveMetadata(HOLD_NAMESPACE)).toBeNull();
  });

  it("refuses on A to delete a volume that only host B's persistent definition names", async () => {
    const s = await stack();
    const b = hostB(s);
    const base = await s.sd.createImage({ format: 'qcow2', capacity: 16 * MiB });
    await s.sd.setLegality(base.imageId, base.volumeId, 'ILLEGAL');
    const name = uniqueVmName();
    const dom = await b.conn.defineXml(testVmXml(name, [{ path: base.path, format: 'qcow2' }]));
    dom.free();
    // A's own view: the guard of A's storage agent, reading every host as `worker host` does.
    const uris = Object.fromEntries(s.hosts.map((h) => [h.hostId, h.uri]));
    const fleet = fleetDomainXmls({ hostId: s.hostId, libvirt: () => Promise.resolve(s.conn) }, uris);
    try {
      const refused = await deleteVolumeGuarded(base, { domain: s.sd, domainXmls: fleet }).catch(
        (e: unknown) => e,
      );
      expect(refused).toBeInstanceOf(DeletionRefused);
      expect((refused as DeletionRefused).reason).toBe('in-persistent-chain');
      expect((refused as DeletionRefused).message).toContain(`${name} on host ${b.hostId}`);
      expect(await exists(base.path)).toBe(true);
      // Once B no longer names it, the same guard lets it go.
      await removeVm(b.conn, name);
      expect(await deleteVolumeGuarded(base, { domain: s.sd, domainXmls: fleet })).toEqual({ deleted: true });
      expect(await exists(base.path)).toBe(false);
    } finally {
      await removeVm(b.conn, name);
      await fleet.close();
    }
  });

  it('refuses to commit into a base that a VM on the other host also uses (SharedBase)', async () => {
    const s = await stack();
    const b = hostB(s);
    const { vm, disks } = await createStackVm(s, { capacity: 16 * MiB });
    const snap = await createSnapshot(s, vm.uuid);
    const [baseVol] = await s.sd.readChain(disks[0]!.imageId);
    // A VM on B opens A's base read-only below an overlay of its own, outside the storage domain.
    const tmp = await createTempDir();
    const overlay = path.join(tmp.path, 'other.qcow2');
    await exec('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', baseVol!.path, overlay]);
    const name = uniqueVmName();
    const other = await b.conn.defineXml(testVmXml(name, [{ path: overlay, format: 'qcow2' }]));
    other.free();
    try {
      const failed = removeSnapshot(s, { vmId: vm.uuid, snapshotId: snap.snapshotId });
      expect(await failureTypeOf(failed)).toBe('SharedBase');
      // The chain is unchanged: base and the snapshot's leaf, both LEGAL.
      const chain = await s.sd.readChain(disks[0]!.imageId);
      expect(chain.map((v) => v.legality)).toEqual(['LEGAL', 'LEGAL']);
    } finally {
      await removeVm(b.conn, name);
    }
  });

  it('a VM migrated from A to B between its snapshot and the removal is merged on B', async () => {
    const s = await stack();
    const b = hostB(s);
    const { vm, disks } = await createStackVm(s, { capacity: 32 * MiB });
    const imageId = disks[0]!.imageId;
    try {
      await writeThroughGuest(vm.domain, 0, { byte: 0x71, offset: 0, length: MiB });
      const snap = await createSnapshot(s, vm.uuid);
      await writeThroughGuest(vm.domain, 0, { byte: 0x72, offset: MiB, length: MiB });
      await migrate(vm.name, s.conn.uri, b.uri);
      expect(await s.conn.findByName(vm.name)).toBeNull();

      const handle = await startRemoveSnapshot(s, { vmId: vm.uuid, snapshotId: snap.snapshotId });
      const result = (await handle.result()) as { hostId: string };
      expect(result.hostId).toBe(b.hostId);
      expect(await queuesOf(s, handle, 'mergeOnHost')).toEqual([hostTaskQueue(b.hostId)]);
      const chain = await s.sd.readChain(imageId);
      expect(chain).toHaveLength(1);
      const onB = await b.conn.lookupByUuid(vm.uuid);
      try {
        const live = parseDomainDiskChains(await onB.xml())[0]!;
        expect(live.chain[0]!.path).toBe(chain[0]!.path);
      } finally {
        onB.free();
      }
      for (const p of [
        { byte: 0x71, offset: 0, length: MiB },
        { byte: 0x72, offset: MiB, length: MiB },
      ])
        expect(await hasPattern(chain[0]!.path, 'qcow2', p)).toBe(true);
    } finally {
      await removeVm(b.conn, vm.name);
    }
  });

  it('refuses a migration while the host unit holds the VM (the hook), and allows it after', async () => {
    const s = await stack();
    const b = hostB(s);
    const holds = s.holds!;
    const { vm } = await createStackVm(s, { capacity: 16 * MiB });
    try {
      await writeThroughGuest(vm.domain, 0, { byte: 0x51, offset: 0, length: MiB });
      const snap = await createSnapshot(s, vm.uuid);
      holds.hold('startJob');
      holds.hold('pivot');
      holds.hold('verifyMerged');
      const handle = await startRemoveSnapshot(s, { vmId: vm.uuid, snapshotId: snap.snapshotId });
      try {
        // Before the job starts, libvirt has nothing to refuse for: the hold (and the hook) refuse.
        await holds.waitHeld('startJob');
        expect(await vm.domain.liveMetadata(HOLD_NAMESPACE)).toContain('merge-disk:');
        expect(await migrateRefusal(vm.name, s.conn.uri, b.uri)).toMatch(
          /livemerge: VM .* is held by a running merge \(workflow merge-disk:/,
        );
        holds.release('startJob');
        // At READY the active block job is libvirt's own reason.
        await holds.waitHeld('pivot');
        expect(await migrateRefusal(vm.name, s.conn.uri, b.uri)).toMatch(/active block job/);
        holds.release('pivot');
        // After the pivot, before the result is verified: no job any more, the hold again.
        await holds.waitHeld('verifyMerged');
        expect(await migrateRefusal(vm.name, s.conn.uri, b.uri)).toMatch(/livemerge: VM .* is held/);
        expect(await s.conn.findByName(vm.name)).not.toBeNull();
      } finally {
        holds.releaseAll();
      }
      await handle.result();
      // The unit released its hold: the same migration now goes through.
      expect(await vm.domain.liveMetadata(HOLD_NAMESPACE)).toBeNull();
      await migrate(vm.name, s.conn.uri, b.uri);
      expect(await s.conn.findByName(vm.name)).toBeNull();
    } finally {
      await removeVm(b.conn, vm.name);
    }
  });

  it('the CLI on host A finds, snapshots, shows and merges a VM that runs on host B (through the agents)', async () => {
    const s = await stack();
    const b = hostB(s);
    const { vm, disks } = await createStackVm(s, { hostId: b.hostId, capacity: 16 * MiB });
    await writeThroughGuest(vm.domain, 0, { byte: 0x33, offset: 0, length: MiB });
    const created = await cliJson<{ snapshotId: string; disks: Array<{ leafVolumeId: string }> }>(s, [
      'snapshot',
      'create',
      '--vm',
      vm.name,
    ]);
    const chain = await cliJson<{ disks: Array<{ imageId: string; volumes: Array<{ volumeId: string }> }> }>(
      s,
      ['chain', '--vm', vm.name],
    );
    expect(chain.disks.map((d) => [d.imageId, d.volumes.length])).toEqual([[disks[0]!.imageId, 2]]);
    const removed = await cliJson<{ status: string; removedVolumeIds: string[] }>(s, [
      'snapshot',
      'remove',
      '--vm',
      vm.name,
      '--snapshot',
      created.snapshotId,
      '--wait',
    ]);
    expect(removed.status).toBe('COMPLETED');
    expect(removed.removedVolumeIds).toEqual([created.disks[0]!.leafVolumeId]);
    const audit = await cliJson<{ events: Array<{ hostId: string | null }> }>(s, ['audit', '--vm', vm.name]);
    expect(audit.events.length).toBeGreaterThan(0);
    expect(new Set(audit.events.map((e) => e.hostId))).toEqual(new Set([b.hostId]));
    // An unknown name: every host answered no.
    const unknown = await cli(s, ['chain', '--vm', 'lm-no-such-vm', '--json']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain(
      `no VM "lm-no-such-vm" is defined on any of the hosts ${s.hostId}, ${b.hostId}`,
    );
  });

  // Last in the file: it restarts B's libvirtd, whose connection the test and B's agent hold.
  it("reconcile with host B's libvirtd down deletes nothing, says why, and finishes once B answers", async () => {
    const s = await stack();
    const b = hostB(s);
    const orphan = await s.sd.createImage({ format: 'qcow2', capacity: 16 * MiB });
    await s.sd.setLegality(orphan.imageId, orphan.volumeId, 'ILLEGAL');
    const pid = simHostPid(b.simDir!)!;
    process.kill(pid, 'SIGTERM');
    await pollUntil(() => simHostPid(b.simDir!) === undefined, 20_000, "B's libvirtd to exit");

    const handle = await s.client.workflow.start('reconcile', {
      taskQueue: ENGINE_TASK_QUEUE,
      workflowId: `reconcile:${s.sd.id}:${Date.now()}`,
      args: [{ storageDomainId: s.sd.id }],
    });
    // The scan refuses, retryably, naming the host that did not answer.
    const why = await pollUntil(
      async () => {
        const d = await handle.describe();
        const msg = d.raw.pendingActivities?.[0]?.lastFailure?.message;
        return msg && msg.includes(`host ${b.hostId}`) ? msg : undefined;
      },
      60_000,
      'the scan to name the silent host',
    );
    expect(why).toMatch(/cannot tell which domains use .* did not answer/);
    expect(await exists(orphan.path)).toBe(true);
    expect((await handle.describe()).status.name).toBe('RUNNING');

    await startSimHost({ dir: b.simDir!, index: b.simIndex! });
    const result = (await handle.result()) as ReconcileResult;
    expect(result.deleted.map((o) => o.volumeId)).toContain(orphan.volumeId);
    expect(await exists(orphan.path)).toBe(false);
    await fs.rm(path.dirname(orphan.path), { recursive: true, force: true });
  });
});
