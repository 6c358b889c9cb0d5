// Invariant 5 for every host activity, directly: running it twice leaves the same state as once (the VM's
// live and persistent chains, its block jobs, the image's files and metadata), and the second run says it
// recognised the work already done.
import fs from 'node:fs/promises';
import { MockActivityEnvironment } from '@temporalio/testing';
import { describe, expect, it } from 'vitest';
import type { HostActivities, JobRef, MergePlan } from '../../src/activities/contracts';
import { createHostActivities } from '../../src/activities/host';
import { parseDomainDiskChains } from '../../src/inspect/domain-xml';
import type { Domain } from '../../src/libvirt';
import { readDomainXmls } from '../../src/libvirt';
import { writeThroughGuest } from '../helpers/data';
import type { Stack } from '../helpers/stack';
import { createStackVm, useStack } from '../helpers/stack';
import { createSnapshot } from '../helpers/workflows';

const MiB = 1 << 20;

/**
 * One activity call with an activity context, as a worker would make it (heartbeats, cancellation). The
 * host unit's stage reports go to a workflow that does not exist: it logs that and goes on.
 */
function call<K extends keyof HostActivities>(
  s: Stack,
  host: HostActivities,
  name: K,
  ...args: Parameters<HostActivities[K]>
): Promise<Awaited<ReturnType<HostActivities[K]>>> {
  const fn = host[name] as (
    ...a: Parameters<HostActivities[K]>
  ) => Promise<Awaited<ReturnType<HostActivities[K]>>>;
  return new MockActivityEnvironment({ activityType: name }, { client: s.client }).run(fn, ...args);
}

interface State {
  live: string[];
  persistent: string[];
  job: boolean;
  files: string[];
  metadata: unknown[];
}

async function stateOf(s: Stack, dom: Domain, imageId: string): Promise<State> {
  const chain = async (inactive: boolean) =>
    (parseDomainDiskChains(await dom.xml({ inactive }))[0]?.chain ?? []).map((e) => e.path ?? '');
  const active = await dom.isActive();
  return {
    live: active ? await chain(false) : [],
    persistent: await chain(true),
    job: active ? (await dom.blockJobInfo('vda')) !== null : false,
    files: (await fs.readdir(s.sd.imageDir(imageId))).filter((f) => !f.startsWith('.')).sort(),
    metadata: (await s.sd.listVolumes(imageId)).map((v) => [
      v.volumeId,
      v.parentId,
      v.legality,
      v.snapshotId,
    ]),
  };
}

async function setUp(opts: { start?: boolean; format?: 'raw' | 'qcow2' } = {}) {
  const s = await useStack();
  const host = createHostActivities({
    hostId: s.hostId,
    storageRoot: s.storageRoot,
    libvirt: () => Promise.resolve(s.conn),
    domainXmls: () => readDomainXmls(s.conn),
  });
  const { vm, disks } = await createStackVm(s, {
    disks: 1,
    capacity: 64 * MiB,
    start: opts.start ?? true,
    ...(opts.format ? { format: opts.format } : {}),
  });
  await createSnapshot(s, vm.uuid);
  if (opts.start ?? true) await writeThroughGuest(vm.domain, 0, { byte: 0x61, offset: 0, length: 2 * MiB });
  const imageId = disks[0]!.imageId;
  const chain = await s.sd.readChain(imageId);
  const plan = await call(s, host, 'planMerge', {
    vmId: vm.uuid,
    storageDomainId: s.sd.id,
    imageId,
    baseVolumeId: chain[0]!.volumeId,
    topVolumeId: chain[1]!.volumeId,
    direction: 'backward',
  });
  const job: JobRef = {
    vmId: vm.uuid,
    diskTarget: plan.diskTarget,
    jobKind: plan.jobKind,
    basePath: plan.basePath,
    topPath: plan.topPath,
    removedPaths: [chain[1]!.path],
  };
  return { s, host, vm, imageId, chain, plan, job, state: () => stateOf(s, vm.domain, imageId) };
}

/** Runs `step` twice; the state after the second run is the state after the first. */
async function twice<T>(state: () => Promise<State>, step: () => Promise<T>): Promise<[T, T]> {
  const first = await step();
  const once = await state();
  const second = await step();
  expect(await state()).toEqual(once);
  return [first, second];
}

describe('every host activity, run twice, leaves the state of one run', () => {
  it('read-only: listVms, locateVm, describeVm, planMerge', async () => {
    const t = await setUp();
    await twice(t.state, () => call(t.s, t.host, 'listVms'));
    const [a, b] = await twice(t.state, () => call(t.s, t.host, 'locateVm', { vmId: t.vm.uuid }));
    expect(b).toEqual(a);
    const [d1, d2] = await twice(t.state, () => call(t.s, t.host, 'describeVm', { vmId: t.vm.uuid }));
    expect(d2).toEqual(d1);
    const input = {
      vmId: t.vm.uuid,
      storageDomainId: t.s.sd.id,
      imageId: t.imageId,
      baseVolumeId: t.chain[0]!.volumeId,
      topVolumeId: t.chain[1]!.volumeId,
      direction: 'backward' as const,
    };
    const [p1, p2] = await twice<MergePlan>(t.state, () => call(t.s, t.host, 'planMerge', input));
    expect(p2).toEqual(p1);
  });

  it('startJob, waitForJob, pivot, verifyMerged: the second start adopts, the second pivot finds it done', async () => {
    const t = await setUp();
    const [s1, s2] = await twice(t.state, () => call(t.s, t.host, 'startJob', t.job));
    expect([s1.status, s2.status]).toEqual(['started', 'adopted']);
    const [w1, w2] = await twice(t.state, () =>
      call(t.s, t.host, 'waitForJob', { ...t.job, expect: 'ready' }),
    );
    expect([w1.outcome, w2.outcome]).toEqual(['ready', 'ready']);
    await twice(t.state, () => call(t.s, t.host, 'pivot', t.job));
    expect((await t.state()).live).toEqual([t.chain[0]!.path]);
    await twice(t.state, () =>
      call(t.s, t.host, 'verifyMerged', { ...t.job, expectedLeafPath: t.chain[0]!.path }),
    );
    // Started again after the merge, the job recognises that its work is done.
    expect((await call(t.s, t.host, 'startJob', t.job)).status).toBe('already-done');
  });

  it('abortJob: the second finds no job; the chain is as before the start', async () => {
    const t = await setUp();
    const before = await t.state();
    await call(t.s, t.host, 'startJob', t.job);
    await call(t.s, t.host, 'waitForJob', { ...t.job, expect: 'ready' });
    const [a1, a2] = await twice(t.state, () => call(t.s, t.host, 'abortJob', t.job));
    expect(a1).toEqual({ aborted: true, merged: false });
    expect(a2).toEqual({ aborted: false, merged: false });
    expect(await t.state()).toEqual(before);
  });

  it('mergeOnHost: the second run finds the merge done and only verifies', async () => {
    const t = await setUp();
    const input = { ...t.job, expectedLeafPath: t.chain[0]!.path };
    const [m1, m2] = await twice(t.state, () => call(t.s, t.host, 'mergeOnHost', input));
    expect(m1).toMatchObject({ start: 'started', pivot: 'pivoted' });
    expect(m2).toMatchObject({ start: 'already-done', pivot: 'none' });
    expect((await t.state()).live).toEqual([t.chain[0]!.path]);
  });

  it('snapshotDisks: the second finds the disks on their new leaves', async () => {
    const t = await setUp();
    const leaf = await t.s.sd.createVolume({ imageId: t.imageId, parentId: t.chain[1]!.volumeId });
    const disks = [{ target: 'vda', newLeafPath: leaf.path, newLeafFormat: 'qcow2' as const }];
    const [r1, r2] = await twice(t.state, () =>
      call(t.s, t.host, 'snapshotDisks', { vmId: t.vm.uuid, disks }),
    );
    expect([r1.status, r2.status]).toEqual(['taken', 'already-taken']);
    expect((await t.state()).live[0]).toBe(leaf.path);
  });

  it('setDiskSources (shut-off VM): the second changes nothing', async () => {
    const t = await setUp({ start: false });
    const disks = [{ target: 'vda', path: t.chain[0]!.path, format: t.chain[0]!.format }];
    const [r1, r2] = await twice(t.state, () =>
      call(t.s, t.host, 'setDiskSources', { vmId: t.vm.uuid, disks }),
    );
    expect([r1.changed, r2.changed]).toEqual([true, false]);
    expect((await t.state()).persistent[0]).toBe(t.chain[0]!.path);
  });
});

describe('a stopped VM: the chain it boots from decides whether its merge is done', () => {
  /** A second snapshot, and the commit of the first snapshot's leaf (now intermediate) into the base. */
  async function withSecondSnapshot(t: Awaited<ReturnType<typeof setUp>>) {
    await createSnapshot(t.s, t.vm.uuid);
    const chain = await t.s.sd.readChain(t.imageId); // base, the first snapshot's leaf, the new leaf
    const intermediate: JobRef = {
      ...t.job,
      jobKind: 'commit',
      topPath: chain[1]!.path,
      removedPaths: [chain[1]!.path],
    };
    return { chain, intermediate };
  }

  it('startJob: VmCrashed while the definition and the headers below it hold top, an intermediate top too', async () => {
    const t = await setUp();
    const { chain, intermediate } = await withSecondSnapshot(t);
    await t.vm.domain.destroy();
    expect((await t.state()).persistent).toEqual([chain[2]!.path, chain[1]!.path, chain[0]!.path]);
    await expect(call(t.s, t.host, 'startJob', intermediate)).rejects.toMatchObject({ type: 'VmCrashed' });
    await expect(call(t.s, t.host, 'abortJob', intermediate)).resolves.toEqual({
      aborted: false,
      merged: false,
    });
  });

  it('startJob after an intermediate commit completed and a crash: already-done (the headers skip top)', async () => {
    const t = await setUp();
    const { intermediate } = await withSecondSnapshot(t);
    expect((await call(t.s, t.host, 'startJob', intermediate)).status).toBe('started');
    expect((await call(t.s, t.host, 'waitForJob', { ...intermediate, expect: 'completed' })).outcome).toBe(
      'completed',
    );
    await t.vm.domain.destroy();
    expect((await call(t.s, t.host, 'startJob', intermediate)).status).toBe('already-done');
    expect(await call(t.s, t.host, 'abortJob', intermediate)).toEqual({ aborted: false, merged: true });
  });

  it('startJob after the pivot and a crash: already-done (libvirt wrote the pivot into the definition)', async () => {
    const t = await setUp();
    await call(t.s, t.host, 'mergeOnHost', { ...t.job, expectedLeafPath: t.chain[0]!.path });
    await t.vm.domain.destroy();
    expect((await t.state()).persistent).toEqual([t.chain[0]!.path]);
    expect((await call(t.s, t.host, 'startJob', t.job)).status).toBe('already-done');
    expect(await call(t.s, t.host, 'abortJob', t.job)).toEqual({ aborted: false, merged: true });
  });
});

describe('verifyMerged: the qcow2 headers below the leaf are a view of their own', () => {
  it('refuses a leaf whose headers still name a removed volume, the definition not naming it', async () => {
    const t = await setUp({ start: false });
    const [base, leaf] = [t.chain[0]!.path, t.chain[1]!.path];
    const input = { ...t.job, removedPaths: [base], expectedLeafPath: leaf };
    const err: unknown = await call(t.s, t.host, 'verifyMerged', input).catch((e: unknown) => e);
    expect(err).toMatchObject({ type: 'ChainMismatch' });
    expect(String((err as Error).message)).toContain(`qcow2 headers still holds ${base}`);
    expect(String((err as Error).message)).not.toContain('persistent XML still holds');
  });

  it('reads a raw leaf as the VM opens it (its XML says raw): no qemu-img probe', async () => {
    const t = await setUp({ format: 'raw' });
    const input = { ...t.job, expectedLeafPath: t.chain[0]!.path };
    await call(t.s, t.host, 'mergeOnHost', input);
    expect((await t.state()).live).toEqual([t.chain[0]!.path]);
    // A qemu-img that always fails: a probe of the raw leaf would fail these calls.
    const saved = process.env.LIVEMERGE_QEMU_IMG;
    process.env.LIVEMERGE_QEMU_IMG = '/bin/false';
    try {
      await call(t.s, t.host, 'verifyMerged', input);
      await t.vm.domain.destroy(); // and the stopped VM's definition is read the same way
      expect((await call(t.s, t.host, 'startJob', t.job)).status).toBe('already-done');
    } finally {
      if (saved === undefined) delete process.env.LIVEMERGE_QEMU_IMG;
      else process.env.LIVEMERGE_QEMU_IMG = saved;
    }
  });
});

describe('setDiskSources of two disks at once (the cold merges of removeSnapshot run in parallel)', () => {
  it('both changes are in the definition: neither redefinition undoes the other', async () => {
    const s = await useStack();
    const host = createHostActivities({
      hostId: s.hostId,
      storageRoot: s.storageRoot,
      libvirt: () => Promise.resolve(s.conn),
      domainXmls: () => readDomainXmls(s.conn),
    });
    const { vm, disks } = await createStackVm(s, { disks: 2, capacity: 64 * MiB, start: false });
    await createSnapshot(s, vm.uuid);
    const chains = await Promise.all(disks.map((d) => s.sd.readChain(d.imageId)));
    const persistent = async () =>
      parseDomainDiskChains(await vm.domain.xml({ inactive: true })).map((d) => [d.target, d.chain[0]!.path]);
    expect(await persistent()).toEqual(chains.map((c, i) => [`vd${'ab'[i]}`, c[1]!.path]));
    // Each disk pointed back at its base, both calls in flight together.
    const results = await Promise.all(
      chains.map((c, i) =>
        call(s, host, 'setDiskSources', {
          vmId: vm.uuid,
          disks: [{ target: `vd${'ab'[i]}`, path: c[0]!.path, format: c[0]!.format }],
        }),
      ),
    );
    expect(results.map((r) => r.changed)).toEqual([true, true]);
    expect(await persistent()).toEqual(chains.map((c, i) => [`vd${'ab'[i]}`, c[0]!.path]));
  });
});
