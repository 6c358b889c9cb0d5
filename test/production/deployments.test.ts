// Safe upgrades (issue #11 item 3, docs/upgrades.md): two builds of one Worker Deployment, each a full set
// of real worker processes (engine, the VM's host agent, the storage-role agent) with its own
// LIVEMERGE_BUILD_ID. A snapshot removal on build A is held mid-copy (after the block commit was issued,
// the QEMU job copying at a limited rate); build B starts and is made current with `livemerge deployment
// set-current`; a new removal then runs on B while A's is still held; A's is released and completes on A.
// The histories prove where each ran: every WorkflowTaskCompleted names the build (deployment version) and
// PINNED, every ActivityTaskStarted the identity (`<pid>@host`) of a worker process of that build, so the
// host and storage activities went to the build's own agents although both builds' agents poll the same
// task queues. The data is checked as every merge test does: the guest's view byte for byte, the chains in
// the metadata and in the live libvirt definition. It runs on the production stage's cluster (mTLS), in a
// namespace of its own, which it also leaves unversioned again.
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import type { WorkflowHandle } from '@temporalio/client';
import { temporal as proto } from '@temporalio/proto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ENGINE_TASK_QUEUE } from '../../src/common/task-queues';
import { REPO_ROOT } from '../../src/config';
import { hmpQemuIo } from '../../src/libvirt';
import type { RemoveSnapshotInput } from '../../src/schemas/inputs';
import { StorageDomain } from '../../src/storage/storage-domain';
import type { StoredVolume } from '../../src/storage/storage-domain';
import { createSnapshot, diskChainOf, faultContext, progressOf, withDom } from '../faults/harness';
import type { FaultContext } from '../faults/harness';
import { dumpGuestView, exists, hasPattern, sameContent, writeThroughGuest } from '../helpers/data';
import type { Pattern } from '../helpers/data';
import type { WorkerEnv, WorkerPart } from '../helpers/process-stack';
import { ProcessStack, until } from '../helpers/process-stack';
import { temporalEnv } from '../helpers/temporal';
import { UPGRADES_NAMESPACE } from './global-setup';
import { removeVm, testVmXml, uniqueVmName } from '../helpers/vm-fixture';

const exec = promisify(execFile);
const MiB = 1 << 20;
const DEPLOYMENT = 'livemerge-upgrade-test';
const BUILD_A = 'build-a';
const BUILD_B = 'build-b';
/** The same LIVEMERGE_DEPLOYMENT/LIVEMERGE_BUILD_ID on the engine and both agents of a build. */
function buildEnv(buildId: string): WorkerEnv {
  const env = { LIVEMERGE_DEPLOYMENT: DEPLOYMENT, LIVEMERGE_BUILD_ID: buildId };
  return { engine: env, host: env, storage: env };
}
/** The worker set of each build in the ProcessStack: A is the stack's own, B a further set. */
const SET = { [BUILD_A]: '', [BUILD_B]: 'b' } as const;
type Build = keyof typeof SET;

// Disjoint, so that each one is still readable whole through the merged chain.
const P1: Pattern = { byte: 0x41, offset: 0, length: MiB };
const P2: Pattern = { byte: 0x42, offset: MiB, length: MiB };
const P3: Pattern = { byte: 0x43, offset: 2 * MiB, length: MiB };
/** Data for the held merge to copy: at BANDWIDTH the commit copies for ≈ 18 s. */
const BULK: Pattern = { byte: 0x44, offset: 4 * MiB, length: 8 * MiB };
const BANDWIDTH = 512 * 1024;

interface Vm {
  name: string;
  vmId: string;
  sd: StorageDomain;
  imageId: string;
  /** base ← mid ← leaf; the removal of `snapshotId` (mid's) commits leaf into mid and pivots to mid. */
  chain: [StoredVolume, StoredVolume, StoredVolume];
  snapshotIds: string[];
  /** The guest's view before the removal, as a raw file. */
  before: string;
  patterns: Pattern[];
}

describe('safe upgrades: Worker Deployments, merges PINNED to their build', () => {
  let stack: ProcessStack | undefined;
  let ctx: FaultContext | undefined;

  beforeAll(async () => {
    stack = await ProcessStack.start({
      hostId: 'upg-a',
      storageHostId: 'upg-b',
      namespace: UPGRADES_NAMESPACE,
      externalTemporal: temporalEnv(),
      workerEnv: buildEnv(BUILD_A),
    });
    ctx = faultContext(stack);
    // First rollout: until a version is current, new workflows would wait for unversioned workers.
    const first = await setCurrent(stack, BUILD_A);
    expect(first).toMatchObject({ deploymentName: DEPLOYMENT, current: BUILD_A, previous: null });
  });

  afterAll(async () => {
    stack?.releaseAll();
    if (stack) await leaveUnversioned(stack);
    const conn = await ctx?.libvirt().catch(() => undefined);
    if (conn) for (const name of vmNames) await removeVm(conn, name).catch(() => undefined);
    await ctx?.libvirt.close();
    await stack?.stop(); // every worker of both builds, the server, and the directory (images included)
  });

  it('a merge held on build A finishes on A after B became current; a new merge runs on B', async () => {
    const s = stack!;
    const c = ctx!;
    try {
      // --- build A: a removal held mid-copy ----------------------------------------------------------
      const vm1 = await createVm(c, [P1, P2, P3, BULK]);
      const mergeId1 = `merge-disk:${vm1.vmId}:${vm1.imageId}`;
      s.holds.hold('startJob-issued', mergeId1);
      const removal1 = await startRemoval(c, vm1, BANDWIDTH);
      const held = await s.waitHeld('startJob-issued', mergeId1);
      expect(held.pid).toBe(s.pid('host', SET[BUILD_A])); // the job was started by A's host agent
      const copying = await until(
        'the held merge to be copying',
        async () => {
          const i = await withDom(c, vm1.vmId, (d) => d.blockJobInfo('vda'));
          return i && i.cur > 0 ? i : undefined;
        },
        60_000,
        20,
      );
      expect(copying.cur).toBeLessThan(copying.end);
      c.log(`held on ${BUILD_A} mid-copy: ${copying.cur}/${copying.end}`);

      // --- build B deployed and made current -------------------------------------------------------
      await s.startWorkerSet(SET[BUILD_B], buildEnv(BUILD_B));
      const switched = await setCurrent(s, BUILD_B);
      expect(switched).toEqual({ deploymentName: DEPLOYMENT, current: BUILD_B, previous: BUILD_A });
      const described = await cli(s, ['deployment', 'describe', '--deployment', DEPLOYMENT, '--json']);
      expect(described).toMatchObject({ current: BUILD_B });

      // --- a new removal runs on B while A's is still held -------------------------------------------
      const vm2 = await createVm(c, [P1, P2, P3]);
      const removal2 = await startRemoval(c, vm2);
      await removal2.result();
      expect(await fs.readFile(path.join(s.holdDir, 'held-startJob-issued'), 'utf8')).toContain(mergeId1);
      expect((await progressOf(removal1))?.stage).not.toBe('done');

      // --- A's removal released: it completes on A -------------------------------------------------
      s.holds.release('startJob-issued', mergeId1);
      await removal1.result();

      for (const [vm, build] of [
        [vm1, BUILD_A],
        [vm2, BUILD_B],
      ] as const) {
        await assertMerged(c, vm);
        const runs = [
          ...vm.snapshotIds.map((id) => `create-snapshot:${vm.vmId}:${id}`),
          `remove-snapshot:${vm.vmId}:${vm.snapshotIds[1]}`,
          `merge-disk:${vm.vmId}:${vm.imageId}`,
        ];
        for (const workflowId of runs) await assertRanOn(s, workflowId, build);
      }

      // --- leaving versioning: new workflows go to unversioned workers again -----------------------
      const back = await cli(s, [
        ...['deployment', 'set-current', '--deployment', DEPLOYMENT, '--unversioned'],
        ...['--ignore-missing-task-queues', '--allow-no-pollers', '--json'],
      ]);
      expect(back).toEqual({ deploymentName: DEPLOYMENT, current: null, previous: BUILD_B });
    } catch (err) {
      console.error(s.allLogs());
      throw err;
    }
  });
});

// ---- the operator's CLI ----------------------------------------------------------------------------

async function cli(s: ProcessStack, args: string[]): Promise<unknown> {
  const { stdout } = await exec(process.execPath, [path.join(REPO_ROOT, 'bin', 'livemerge.cjs'), ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, ...temporalEnv(), TEMPORAL_NAMESPACE: s.namespace },
    timeout: 120_000,
  });
  return JSON.parse(stdout) as unknown;
}

/**
 * With a version of this test current (its workers gone), unversioned workers in the namespace would never
 * get a workflow again: back to unversioned, for whoever uses the namespace next.
 */
async function leaveUnversioned(s: ProcessStack): Promise<void> {
  const service = s.client.workflowService;
  const described = await service
    .describeWorkerDeployment({ namespace: s.namespace, deploymentName: DEPLOYMENT })
    .catch(() => undefined);
  if (!described?.workerDeploymentInfo?.routingConfig?.currentDeploymentVersion) return;
  await service.setWorkerDeploymentCurrentVersion({
    namespace: s.namespace,
    deploymentName: DEPLOYMENT,
    buildId: '', // nil: the unversioned workers
    ignoreMissingTaskQueues: true,
    allowNoPollers: true,
    identity: 'deployments.test cleanup',
  });
  const after = await service.describeWorkerDeployment({
    namespace: s.namespace,
    deploymentName: DEPLOYMENT,
  });
  const still = after.workerDeploymentInfo?.routingConfig?.currentDeploymentVersion?.buildId;
  if (still) throw new Error(`deployment ${DEPLOYMENT} still routes new workflows to ${still}`);
}

/** `livemerge deployment set-current`, retried while the server does not know the version yet. */
async function setCurrent(s: ProcessStack, buildId: string): Promise<unknown> {
  const args = ['deployment', 'set-current', '--deployment', DEPLOYMENT, '--build-id', buildId, '--json'];
  const deadline = Date.now() + 90_000;
  const t0 = Date.now();
  for (;;) {
    try {
      const out = await cli(s, args);
      console.log(`set-current ${buildId}: ${Date.now() - t0} ms`);
      return out;
    } catch (err) {
      const why = (err as { stderr?: string }).stderr || String(err);
      if (Date.now() > deadline)
        throw new Error(`build ${buildId} was not made current: ${why}`, { cause: err });
      console.log(`set-current ${buildId} refused, retrying: ${why.trim()}`);
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}

// ---- VMs and merges --------------------------------------------------------------------------------

/** A running VM whose disk is base ← mid ← leaf, the patterns written through the guest (the first into
 *  base, the second into mid, the rest into leaf), snapshots taken by the current build. */
async function createVm(c: FaultContext, patterns: Pattern[]): Promise<Vm> {
  const sd = await StorageDomain.create(c.stack.storageRoot, randomUUID());
  const base = await sd.createImage({ format: 'qcow2', capacity: 64 * MiB });
  const name = uniqueVmName();
  const conn = await c.libvirt();
  const dom = await conn.defineXml(testVmXml(name, [{ path: base.path, format: 'qcow2' }]));
  const vmId = dom.uuid;
  vmNames.push(name); // removed at the end even when the rest fails
  try {
    await dom.create();
  } finally {
    dom.free();
  }
  const write = (p: Pattern) => withDom(c, vmId, (d) => writeThroughGuest(d, 0, p));
  const [first, second, ...rest] = patterns as [Pattern, Pattern, ...Pattern[]];
  const snapshotIds: string[] = [];
  await write(first);
  snapshotIds.push(await createSnapshot(c, vmId));
  await write(second);
  snapshotIds.push(await createSnapshot(c, vmId));
  for (const p of rest) await write(p);
  const chain = await sd.readChain(base.imageId);
  expect(chain).toHaveLength(3);
  const tmp = path.join(c.stack.dir, 'vms', vmId);
  const before = await dumpGuestView(chain[2]!.path, 'qcow2', path.join(tmp, 'before.raw'));
  return {
    name,
    vmId,
    sd,
    imageId: base.imageId,
    chain: chain as Vm['chain'],
    snapshotIds,
    before,
    patterns,
  };
}
/** Every VM the test defined, for the cleanup. */
const vmNames: string[] = [];

async function startRemoval(c: FaultContext, vm: Vm, bandwidth?: number): Promise<WorkflowHandle> {
  const snapshotId = vm.snapshotIds[1]!;
  const input: RemoveSnapshotInput = {
    vmId: vm.vmId,
    snapshotId,
    ...(bandwidth ? { bandwidthBytesPerSec: bandwidth } : {}),
  };
  return await c.stack.client.workflow.start('removeSnapshot', {
    taskQueue: ENGINE_TASK_QUEUE,
    workflowId: `remove-snapshot:${vm.vmId}:${snapshotId}`,
    args: [input],
  });
}

/** The leaf was committed into mid and the VM pivoted to mid: same guest bytes, chains agree, leaf gone. */
async function assertMerged(c: FaultContext, vm: Vm): Promise<void> {
  const [base, mid, leaf] = vm.chain;
  await withDom(c, vm.vmId, (d) => hmpQemuIo(d, 'virtio-disk0', 'flush'));
  expect(await sameContent({ path: vm.before, format: 'raw' }, { path: mid.path, format: 'qcow2' })).toBe(
    true,
  );
  for (const p of vm.patterns)
    expect(await hasPattern(mid.path, 'qcow2', p), `pattern 0x${p.byte.toString(16)}`).toBe(true);
  const final = await vm.sd.readChain(vm.imageId);
  expect(final.map((v) => [v.volumeId, v.legality])).toEqual([
    [base.volumeId, 'LEGAL'],
    [mid.volumeId, 'LEGAL'],
  ]);
  expect(await diskChainOf(c, vm.vmId, false)).toEqual([mid.path, base.path]);
  expect(await exists(leaf.path)).toBe(false);
}

// ---- where a workflow ran, from its history ----------------------------------------------------------

/** Every workflow task of `workflowId` completed by `build` (PINNED); every activity started by its workers. */
async function assertRanOn(s: ProcessStack, workflowId: string, build: Build): Promise<void> {
  const history = await s.client.workflow.getHandle(workflowId).fetchHistory();
  const events = history.events ?? [];
  const tasks = events.flatMap((e) => e.workflowTaskCompletedEventAttributes ?? []);
  expect(tasks.length, workflowId).toBeGreaterThan(0);
  for (const t of tasks) {
    expect(t.deploymentVersion?.deploymentName, workflowId).toBe(DEPLOYMENT);
    expect(t.deploymentVersion?.buildId, workflowId).toBe(build);
    expect(t.versioningBehavior, workflowId).toBe(
      proto.api.enums.v1.VersioningBehavior.VERSIONING_BEHAVIOR_PINNED,
    );
  }
  const ownPids = new Map<string, WorkerPart>();
  for (const part of ['engine', 'host', 'storage'] as const) {
    const pid = s.pid(part, SET[build]);
    expect(pid, `${part} of ${build}`).toBeDefined();
    ownPids.set(String(pid), part);
  }
  const scheduled = new Map<string, string>();
  for (const e of events) {
    const a = e.activityTaskScheduledEventAttributes;
    if (a) scheduled.set(String(e.eventId), `${a.activityType?.name ?? '?'} on ${a.taskQueue?.name ?? '?'}`);
  }
  const started = events.flatMap((e) => e.activityTaskStartedEventAttributes ?? []);
  for (const a of started) {
    const what = `${workflowId}: ${scheduled.get(String(a.scheduledEventId)) ?? '?'}`;
    const pid = (a.identity ?? '').split('@')[0] ?? '';
    expect(ownPids.has(pid), `${what} started by ${a.identity}, not a worker of ${build}`).toBe(true);
  }
  // The merge's host unit ran on the VM host's agent of the build, its deletions on the build's storage role.
  if (workflowId.startsWith('merge-disk:')) {
    const parts = started.map((a) => ({
      what: scheduled.get(String(a.scheduledEventId)) ?? '',
      part: ownPids.get((a.identity ?? '').split('@')[0] ?? ''),
    }));
    expect(parts.find((p) => p.what.startsWith('mergeOnHost '))?.part).toBe('host');
    expect(parts.find((p) => p.what.startsWith('recordAndDelete '))?.part).toBe('storage');
  }
  const info = (await s.client.workflow.getHandle(workflowId).describe()).raw.workflowExecutionInfo;
  expect(info?.versioningInfo?.deploymentVersion?.buildId, workflowId).toBe(build);
}
