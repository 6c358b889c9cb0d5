// The production-shaped cluster (scripts/temporal-cluster.sh: the pinned Temporal server on PostgreSQL, mTLS):
// a live merge end to end over mutual TLS, the whole server SIGKILLed and restarted while the copy runs, and
// clients without the cluster's client certificate refused.
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { Connection } from '@temporalio/client';
import { describe, expect, inject, it } from 'vitest';
import { REPO_ROOT, temporalConnectionOptions } from '../../src/config';
import { parseDomainDiskChains } from '../../src/inspect/domain-xml';
import type { RemoveSnapshotResult } from '../../src/workflows/remove-snapshot';
import { dumpGuestView, hasPattern, sameContent, writeThroughGuest } from '../helpers/data';
import { pollUntil } from '../helpers/poll';
import { createStackVm, useStack } from '../helpers/stack';
import { NAMESPACE, temporalEnv } from '../helpers/temporal';
import { activityRun } from '../helpers/history';
import { createTempDir } from '../helpers/vm-fixture';
import { createSnapshot, startRemoveSnapshot } from '../helpers/workflows';
import { clusterCommand } from './global-setup';

const exec = promisify(execFile);
const MiB = 1 << 20;
const stack = () => useStack({ holds: true });

async function serverPid(): Promise<number> {
  return Number(await fs.readFile(path.join(inject('clusterDir')!, 'server.pid'), 'utf8'));
}

describe('the production-shaped cluster (PostgreSQL, mTLS)', () => {
  it('runs a live merge end to end over mutual TLS, and the CLI reaches it from the environment', async () => {
    const s = await stack();
    const tmp = await createTempDir();
    const { vm, disks } = await createStackVm(s, { disks: 1, format: 'qcow2' });
    await writeThroughGuest(vm.domain, 0, { byte: 0x41, offset: 0, length: 4 * MiB });
    const snap = await createSnapshot(s, vm.uuid);
    await writeThroughGuest(vm.domain, 0, { byte: 0x42, offset: 2 * MiB, length: 4 * MiB });
    const chain = await s.sd.readChain(disks[0]!.imageId);
    const before = await dumpGuestView(chain[1]!.path, 'qcow2', path.join(tmp.path, 'before.raw'));

    const handle = await startRemoveSnapshot(s, { vmId: vm.uuid, snapshotId: snap.snapshotId });
    const result = (await handle.result()) as RemoveSnapshotResult;
    expect(result.removedVolumeIds).toEqual([chain[1]!.volumeId]);
    const after = await s.sd.readChain(disks[0]!.imageId);
    expect(after.map((v) => v.volumeId)).toEqual([chain[0]!.volumeId]);
    const live = parseDomainDiskChains(await vm.domain.xml())[0]!;
    expect(live.chain.map((e) => e.path)).toEqual([chain[0]!.path]);
    expect(
      await sameContent({ path: before, format: 'raw' }, { path: chain[0]!.path, format: 'qcow2' }),
    ).toBe(true);

    // The CLI, configured only by TEMPORAL_* variables (README), reads the finished removal.
    const { stdout } = await exec(
      process.execPath,
      [path.join(REPO_ROOT, 'bin', 'livemerge.cjs'), 'status', handle.workflowId, '--json'],
      { env: { ...process.env, ...temporalEnv(), TEMPORAL_NAMESPACE: NAMESPACE } },
    );
    expect(JSON.parse(stdout)).toMatchObject({ workflowId: handle.workflowId, status: 'COMPLETED' });
  });

  it('survives the whole server SIGKILLed during the copy: the host unit finishes, the merge completes after the restart', async () => {
    const s = await stack();
    const holds = s.holds!;
    const { vm, disks } = await createStackVm(s, { disks: 1, format: 'qcow2', capacity: 128 * MiB });
    await writeThroughGuest(vm.domain, 0, { byte: 0x41, offset: 0, length: 4 * MiB });
    const snap = await createSnapshot(s, vm.uuid);
    const data = { byte: 0x43, offset: 8 * MiB, length: 32 * MiB };
    await writeThroughGuest(vm.domain, 0, data);
    const chain = await s.sd.readChain(disks[0]!.imageId);
    const target = parseDomainDiskChains(await vm.domain.xml())[0]!.target;

    // Throttled to ~4 s of copying; stopped right after the block commit was issued.
    holds.hold('startJob-issued');
    const handle = await startRemoveSnapshot(s, {
      vmId: vm.uuid,
      snapshotId: snap.snapshotId,
      bandwidthBytesPerSec: 8 * MiB,
    });
    await holds.waitHeld('startJob-issued');
    const job = await vm.domain.blockJobInfo(target);
    expect(job).not.toBeNull();
    expect(job!.cur).toBeLessThan(job!.end); // the copy is running

    const killed = await serverPid();
    clusterCommand(['kill', inject('clusterDir')!]);
    await expect(Connection.connect({ ...clusterClient(), connectTimeout: 1000 })).rejects.toThrow();
    holds.release('startJob-issued');
    // Without Temporal, the agent runs its unit to the end: the VM pivots onto the base.
    await pollUntil(
      async () => {
        const c = parseDomainDiskChains(await vm.domain.xml())[0]!;
        return c.chain.length === 1 && c.chain[0]!.path === chain[0]!.path;
      },
      60_000,
      'the pivot while the server is down',
    );
    clusterCommand(['start', inject('clusterDir')!]);
    expect(await serverPid()).not.toBe(killed);

    const result = (await handle.result()) as RemoveSnapshotResult;
    expect(result.removedVolumeIds).toEqual([chain[1]!.volumeId]);
    expect(await hasPattern(chain[0]!.path, 'qcow2', data)).toBe(true);
    expect((await s.sd.readChain(disks[0]!.imageId)).map((v) => v.volumeId)).toEqual([chain[0]!.volumeId]);
    // The branch: the block job issued before the kill is the only one. Either its own attempt reported
    // the unit done once the server was back, or the server had given that attempt up meanwhile (no
    // heartbeats while it was down) and the next attempt found the merge done without a second job.
    const child = s.client.workflow.getHandle(`merge-disk:${vm.uuid}:${disks[0]!.imageId}`);
    const unit = await activityRun(child, 'mergeOnHost');
    if (unit.attempt === 1) expect(unit.result).toMatchObject({ start: 'started', pivot: 'pivoted' });
    else expect(unit.result).toMatchObject({ start: 'already-done', attempt: unit.attempt });
    console.log(`server kill: the host unit completed on attempt ${unit.attempt}`);
  });

  it('refuses clients without the cluster certificate: plaintext, TLS without a client certificate, another CA', async () => {
    const address = inject('temporalAddress');
    await expect(Connection.connect({ address, connectTimeout: 3000 })).rejects.toThrow();
    const { clientCertPair: _, ...serverOnly } = clusterClient().tls!;
    await expect(Connection.connect({ address, tls: serverOnly, connectTimeout: 3000 })).rejects.toThrow();

    const tmp = await createTempDir();
    const key = path.join(tmp.path, 'rogue.key');
    const crt = path.join(tmp.path, 'rogue.pem');
    await exec(
      'openssl',
      ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=rogue'].concat([
        '-keyout',
        key,
        '-out',
        crt,
      ]),
    );
    const rogue = {
      ...serverOnly,
      clientCertPair: { crt: await fs.readFile(crt), key: await fs.readFile(key) },
    };
    await expect(Connection.connect({ address, tls: rogue, connectTimeout: 3000 })).rejects.toThrow();

    // The same connection with the cluster's own client certificate is served.
    const ok = await Connection.connect({ ...clusterClient(), connectTimeout: 3000 });
    try {
      const info = await ok.workflowService.getSystemInfo({});
      expect(info.serverVersion).toBe('1.32.1');
    } finally {
      await ok.close();
    }
  });
});

function clusterClient(): ReturnType<typeof temporalConnectionOptions> {
  return temporalConnectionOptions({
    temporalAddress: inject('temporalAddress'),
    temporalTls: inject('temporalTls'),
    temporalApiKey: undefined,
  });
}
