// The failure-injection harness: one "cell" = one live merge of a running VM's disk, stopped at a chosen
// stage, hit by one fault, the faulty part restored as an operator would, and every invariant checked.
//
// The scenario of every cell: a fresh storage domain and a TCG VM on host A whose disk is a 3-volume chain
// base (A pattern) ← mid (B) ← leaf (C), written through the guest; the merge commits leaf and mid into
// base (an active commit with a pivot: the only kind with all five stages), removing two volumes.
//
// Stages are reached through the workflow, never by sleeping: a hold (src/workers/hold-interceptor.ts)
// stops the worker before the step, and the harness waits for its `held-*` marker; "during the copy" is
// the `copying` stage of the progress query plus 0 < cur < end of the QEMU job, the copy slowed with
// bandwidthBytesPerSec so that it lasts seconds. Facts about the stage are asserted before the fault.
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { WorkflowHandle } from '@temporalio/client';
import { expect } from 'vitest';
import { AuditLog } from '../../src/audit/audit-log';
import { ENGINE_TASK_QUEUE } from '../../src/common/task-queues';
import { parseDomainDiskChains } from '../../src/inspect/domain-xml';
import { HOLD_NAMESPACE } from '../../src/activities/host/vm-hold';
import type { Domain } from '../../src/libvirt';
import { hmpQemuIo } from '../../src/libvirt';
import type { MergeDiskInput } from '../../src/schemas/inputs';
import type { Progress } from '../../src/schemas/progress';
import type { ReconcileResult } from '../../src/schemas/results';
import type { reconcile as ReconcileWorkflow } from '../../src/workflows/reconcile';
import { StorageDomain } from '../../src/storage/storage-domain';
import type { StoredVolume } from '../../src/storage/storage-domain';
import type { LibvirtProvider } from '../../src/workers/libvirt-provider';
import { libvirtProvider } from '../../src/workers/libvirt-provider';
import { dumpGuestView, exists, sameContent, writeThroughGuest } from '../helpers/data';
import type { WatchReport } from '../helpers/file-watch';
import { deletedWhileIllegal, ImageDirWatch } from '../helpers/file-watch';
import { checkImage } from '../helpers/invariants';
import type { ProcessStack } from '../helpers/process-stack';
import { foreignVitestPids, libvirtdAnswers, until } from '../helpers/process-stack';
import type { SimHostOptions } from '../../src/devstack/sim-host';
import { simHostPid, simHostUri, startSimHost } from '../../src/devstack/sim-host';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { removeVm, testVmXml, uniqueVmName } from '../helpers/vm-fixture';
import { failureTypeOf } from '../helpers/workflows';
import { activityRun, scheduledEventIds } from '../helpers/history';

const exec = promisify(execFile);
const MiB = 1 << 20;

export const FAULTS = [
  'engine-kill',
  'host-kill',
  'vm-crash',
  'libvirtd-restart',
  'temporal-restart',
  'storage-kill',
] as const;
export type Fault = (typeof FAULTS)[number];

export const STAGES = ['before-job', 'copy', 'ready', 'after-pivot', 'deletion', 'deletion-partial'] as const;
export type StageName = (typeof STAGES)[number];

export const FAULT_TITLE: Record<Fault, string> = {
  'engine-kill': 'SIGKILL engine worker',
  'host-kill': 'SIGKILL host agent',
  'vm-crash': 'VM crash (destroy)',
  'libvirtd-restart': 'restart libvirtd',
  'temporal-restart': 'SIGKILL+restart Temporal server',
  'storage-kill': 'SIGKILL storage-role agent',
};

export const STAGE_TITLE: Record<StageName, string> = {
  'before-job': 'before the job starts',
  copy: 'during the copy',
  ready: 'READY before the pivot',
  'after-pivot': 'after the pivot, before deletion',
  deletion: 'during deletion (none deleted yet)',
  'deletion-partial': 'during deletion (1 of 2 deleted)',
};

export interface Cell {
  fault: Fault;
  stage: StageName;
  /** VM crash before the pivot: how the merge is retried (VM restarted: live; VM left down: cold). */
  retry?: 'live' | 'cold';
  /** The breakpoint; default: holdFor(fault, stage). */
  hold?: string;
  /**
   * Soak only: release the breakpoint (or, during the copy, wait from the copy's start) and inject the
   * fault this many ms later, wherever the merge then is: a randomized timing, not a synchronisation.
   */
  offsetMs?: number;
}

/**
 * Where the merge is stopped for a stage; after the pivot, the step the faulty part itself runs. startJob,
 * pivot and verifyMerged are breakpoints inside the host unit (mergeOnHost), at the same steps.
 */
export function holdFor(fault: Fault, stage: StageName): string | undefined {
  switch (stage) {
    case 'before-job':
      return 'startJob';
    case 'copy':
      return undefined;
    case 'ready':
      return 'pivot';
    case 'after-pivot':
      // verifyMerged runs on the VM's host (agent A, libvirt); recordMerge on the storage role (agent B).
      return fault === 'host-kill' || fault === 'libvirtd-restart' || fault === 'vm-crash'
        ? 'verifyMerged'
        : 'recordMerge';
    case 'deletion':
      return 'deleteVolumes';
    case 'deletion-partial':
      return 'deleteVolumes-next';
  }
}

export function cellName(c: Cell): string {
  const retry = c.retry ? ` [${c.retry} retry]` : '';
  const hold = c.hold ?? holdFor(c.fault, c.stage);
  const at = hold ? `held at ${hold}` : 'copy slowed';
  const offset = c.offsetMs !== undefined ? ` +${c.offsetMs} ms` : '';
  return `${FAULT_TITLE[c.fault]} × ${STAGE_TITLE[c.stage]} (${at}${offset})${retry}`;
}

/** A VM crash before the pivot fails the merge; every other cell completes it. */
/**
 * A cell's time limit: a libvirtd cell may first have to wait (up to 30 min) for another vitest run on the
 * machine to finish, since they share libvirtd.
 */
export function cellTimeoutMs(c: Cell): number {
  return c.fault === 'libvirtd-restart' ? 40 * 60_000 : 5 * 60_000;
}

export function expectsVmCrashed(c: Cell): boolean {
  return c.fault === 'vm-crash' && ['before-job', 'copy', 'ready'].includes(c.stage);
}

// ---- context shared by the cells of a file ----------------------------------------------------------

export interface FaultContext {
  stack: ProcessStack;
  /** The VM host's libvirtd. */
  libvirt: LibvirtProvider;
  log: (line: string) => void;
  /** The VM host's libvirtd when it is a simulated host (its restart is its own, not the system's). */
  simHost?: SimHostOptions;
}

export function faultContext(
  stack: ProcessStack,
  log: (line: string) => void = console.log,
  simHost?: SimHostOptions,
): FaultContext {
  return {
    stack,
    libvirt: libvirtProvider(simHost ? simHostUri(simHost.dir) : 'qemu:///system'),
    log,
    ...(simHost ? { simHost } : {}),
  };
}

/** The VM's domain on the test's current libvirt connection (reopened after a libvirtd restart). */
export async function withDom<T>(
  ctx: FaultContext,
  uuid: string,
  fn: (dom: Domain) => Promise<T>,
): Promise<T> {
  const conn = await ctx.libvirt();
  const dom = await conn.lookupByUuid(uuid);
  try {
    return await fn(dom);
  } finally {
    dom.free();
  }
}

export async function diskChainOf(ctx: FaultContext, uuid: string, inactive: boolean): Promise<string[]> {
  return await withDom(ctx, uuid, async (dom) => {
    const d = parseDomainDiskChains(await dom.xml({ inactive })).find((x) => x.target === 'vda');
    return d ? d.chain.map((e) => e.path ?? '') : [];
  });
}

// ---- workflows -------------------------------------------------------------------------------------

export async function createSnapshot(ctx: FaultContext, vmId: string): Promise<string> {
  const snapshotId = randomUUID();
  await ctx.stack.client.workflow.execute('createSnapshot', {
    taskQueue: ENGINE_TASK_QUEUE,
    workflowId: `create-snapshot:${vmId}:${snapshotId}`,
    args: [{ vmId, snapshotId }],
  });
  return snapshotId;
}

async function startMerge(ctx: FaultContext, input: MergeDiskInput): Promise<WorkflowHandle> {
  return await ctx.stack.client.workflow.start('mergeDisk', {
    taskQueue: ENGINE_TASK_QUEUE,
    workflowId: `merge-disk:${input.vmId}:${input.imageId}`,
    args: [input],
  });
}

export async function reconcile(ctx: FaultContext, storageDomainId: string): Promise<ReconcileResult> {
  return await ctx.stack.client.workflow.execute<typeof ReconcileWorkflow>('reconcile', {
    taskQueue: ENGINE_TASK_QUEUE,
    workflowId: `reconcile-${randomUUID()}`,
    args: [{ storageDomainId }],
  });
}

export async function progressOf(handle: WorkflowHandle): Promise<Progress | undefined> {
  return await handle.query<Progress>('progress').catch(() => undefined);
}

/** The workflow's result within `ms`, or a failure that carries every part's log tail. */
export async function outcomeWithin(
  ctx: FaultContext,
  handle: WorkflowHandle,
  ms: number,
): Promise<{ failure: string | undefined }> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      void progressOf(handle).then((p) =>
        reject(
          new Error(
            `merge ${handle.workflowId} did not end within ${ms} ms (progress ${JSON.stringify(p)})\n` +
              ctx.stack.allLogs(),
          ),
        ),
      );
    }, ms);
  });
  try {
    const failure = await Promise.race([failureTypeOf(handle.result()), timeout]);
    return { failure };
  } finally {
    clearTimeout(timer);
  }
}

/** ms timestamp of the first completion of activity `type` in the run's history. */
export async function completedAt(handle: WorkflowHandle, type: string): Promise<number | undefined> {
  const events = (await handle.fetchHistory()).events ?? [];
  const scheduled = scheduledEventIds(events, type);
  const done = events.find(
    (e) =>
      e.activityTaskCompletedEventAttributes &&
      scheduled.has(String(e.activityTaskCompletedEventAttributes.scheduledEventId)),
  );
  if (!done?.eventTime) return undefined;
  return Number(done.eventTime.seconds) * 1000 + Math.floor((done.eventTime.nanos ?? 0) / 1e6);
}

// ---- faults ----------------------------------------------------------------------------------------

/** libvirtd is stopped only when no other vitest run uses it (docs/failure-model.md). */
export async function waitForLibvirtdAlone(ctx: FaultContext): Promise<void> {
  await until(
    'other vitest runs to finish (they share libvirtd)',
    async () => {
      const others = await foreignVitestPids();
      if (others.length > 0)
        ctx.log(`  libvirtd restart waits for other vitest run(s): ${others.join(', ')}`);
      return others.length === 0;
    },
    30 * 60_000,
    2000,
  );
}

function libvirtdPid(): Promise<number | undefined> {
  return fs
    .readFile('/run/libvirtd.pid', 'utf8')
    .then((s) => Number(s.trim()))
    .catch(() => undefined);
}

async function alive(pid: number): Promise<boolean> {
  return await fs.readFile(`/proc/${pid}/cmdline`, 'utf8').then(
    (c) => c.length > 0,
    () => false,
  );
}

/** Injects the fault; returns the operator's restoration (restart of what was stopped). */
export async function inject(ctx: FaultContext, fault: Fault, vmId: string): Promise<() => Promise<void>> {
  const { stack } = ctx;
  switch (fault) {
    case 'engine-kill':
      await stack.kill('engine');
      return () => stack.startPart('engine');
    case 'host-kill':
      await stack.kill('host');
      return () => stack.startPart('host');
    case 'storage-kill':
      await stack.kill('storage');
      return () => stack.startPart('storage');
    case 'temporal-restart':
      await stack.kill('temporal');
      return async () => {
        await stack.startPart('temporal');
        await stack.waitHealthy();
      };
    case 'vm-crash':
      await withDom(ctx, vmId, (dom) => dom.destroy());
      return () => Promise.resolve();
    case 'libvirtd-restart': {
      const sim = ctx.simHost;
      if (sim) {
        // The VM host's own libvirtd: its QEMUs keep running in its namespace and are found again.
        const simPid = simHostPid(sim.dir);
        if (simPid === undefined) throw new Error(`sim host ${sim.dir} is not running`);
        process.kill(simPid, 'SIGTERM');
        await until("the sim host's libvirtd to exit", () => simHostPid(sim.dir) === undefined, 60_000);
        return async () => {
          await startSimHost(sim);
        };
      }
      const pid = await libvirtdPid();
      if (pid === undefined || !(await alive(pid))) throw new Error('libvirtd is not running');
      process.kill(pid, 'SIGTERM');
      await until('libvirtd to exit', () => alive(pid).then((a) => !a), 60_000);
      return async () => {
        await exec('libvirtd', ['-d']);
        await until('libvirtd to answer', libvirtdAnswers, 60_000, 100);
      };
    }
  }
}

// ---- the cell ---------------------------------------------------------------------------------------

const A = { byte: 0x41, offset: 0, length: 1 * MiB };
const B = { byte: 0x42, offset: MiB / 2, length: 1 * MiB };
const C = { byte: 0x43, offset: 1 * MiB, length: 1 * MiB };
/** The copy-stage data: at BANDWIDTH the commit runs ≈ 5 s. */
const BULK = { byte: 0x44, offset: 4 * MiB, length: 8 * MiB };
const BANDWIDTH = 2 * MiB;
/** A merge must end this soon after its faulty part is back (heartbeat timeouts are 5-10 s). */
const RESUME_LIMIT_S = 45;

export interface CellResult {
  name: string;
  outcome: 'completed' | 'VmCrashed';
  seconds: number;
}

interface Scenario {
  sd: StorageDomain;
  imageId: string;
  vmId: string;
  vmName: string;
  chain: StoredVolume[];
  before: string;
  tmp: string;
}

async function setUp(ctx: FaultContext, cell: Cell): Promise<Scenario> {
  const { stack } = ctx;
  const sd = await StorageDomain.create(stack.storageRoot, randomUUID());
  const base = await sd.createImage({ format: 'qcow2', capacity: 64 * MiB });
  const tmp = path.join(stack.dir, 'cells', randomUUID());
  await fs.mkdir(tmp, { recursive: true });
  const vmName = uniqueVmName();
  const conn = await ctx.libvirt();
  const dom = await conn.defineXml(testVmXml(vmName, [{ path: base.path, format: 'qcow2' }]));
  const vmId = dom.uuid;
  try {
    await dom.create();
  } finally {
    dom.free();
  }
  const write = (p: typeof A) => withDom(ctx, vmId, (d) => writeThroughGuest(d, 0, p));
  await write(A);
  await createSnapshot(ctx, vmId);
  await write(B);
  await createSnapshot(ctx, vmId);
  await write(C);
  if (cell.stage === 'copy') await write(BULK);
  const chain = await sd.readChain(base.imageId);
  expect(chain.map((v) => v.volumeId)[0]).toBe(base.volumeId);
  expect(chain).toHaveLength(3);
  const before = await dumpGuestView(chain[2]!.path, 'qcow2', path.join(tmp, 'before.raw'));
  return { sd, imageId: base.imageId, vmId, vmName, chain, before, tmp };
}

async function cleanUp(ctx: FaultContext, sc: Scenario | undefined): Promise<void> {
  ctx.stack.releaseAll();
  if (!sc) return;
  const conn = await ctx.libvirt().catch(() => undefined);
  if (conn) await removeVm(conn, sc.vmName);
  await fs.rm(sc.tmp, { recursive: true, force: true });
}

/** Waits until the merge is at the cell's stage and asserts what must be true there. */
async function reachStage(
  ctx: FaultContext,
  cell: Cell,
  sc: Scenario,
  handle: WorkflowHandle,
  hold: string | undefined,
): Promise<void> {
  const [base, mid, leaf] = sc.chain as [StoredVolume, StoredVolume, StoredVolume];
  if (hold) {
    const held = await ctx.stack.waitHeld(hold, handle.workflowId);
    ctx.log(`  held at ${hold} (pid ${held.pid}, attempt ${held.attempt})`);
  }
  const job = () => withDom(ctx, sc.vmId, (d) => d.blockJobInfo('vda'));
  switch (cell.stage) {
    case 'before-job':
      expect(await job()).toBeNull();
      expect((await progressOf(handle))?.stage).toBe('starting');
      break;
    case 'copy': {
      await until('the merge to copy', async () => (await progressOf(handle))?.stage === 'copying', 60_000);
      const info = await until(
        'the QEMU job to have copied something (and not all)',
        async () => {
          const i = await job();
          return i && i.cur > 0 ? i : undefined;
        },
        60_000,
        20,
      );
      expect(info.cur).toBeLessThan(info.end);
      ctx.log(`  copying: ${info.cur}/${info.end}`);
      break;
    }
    case 'ready': {
      const info = await job();
      expect(info).not.toBeNull();
      expect(info!.end).toBeGreaterThan(0);
      expect(info!.cur).toBe(info!.end); // READY: mirroring, waiting for the pivot
      // The host unit reports READY to the workflow (a signal): the query shows it once it arrived.
      await until(
        'the merge to report READY',
        async () => (await progressOf(handle))?.stage === 'ready',
        10_000,
      );
      break;
    }
    case 'after-pivot':
      expect(await job()).toBeNull();
      expect((await diskChainOf(ctx, sc.vmId, false))[0]).toBe(base.path);
      for (const v of sc.chain) expect(await exists(v.path)).toBe(true);
      break;
    case 'deletion':
      // Recording and deleting are one storage task (lean histories v3): the query shows `recording` until
      // it ends; what proves the stage is the metadata (recorded) and the files (none deleted yet).
      expect((await progressOf(handle))?.stage).toBe('recording');
      for (const v of [mid, leaf])
        expect((await sc.sd.readVolume(sc.imageId, v.volumeId)).legality).toBe('ILLEGAL');
      for (const v of sc.chain) expect(await exists(v.path)).toBe(true);
      break;
    case 'deletion-partial':
      expect(await exists(mid.path)).toBe(false);
      expect(await exists(leaf.path)).toBe(true);
      break;
  }
}

/** Flushes the guest's disk when the VM runs, so the image reads from outside as the guest sees it. */
async function flushGuest(ctx: FaultContext, vmId: string): Promise<boolean> {
  return await withDom(ctx, vmId, async (dom) => {
    if (!(await dom.isActive())) return false;
    await hmpQemuIo(dom, 'virtio-disk0', 'flush');
    return true;
  });
}

async function auditOf(ctx: FaultContext, vmId: string, runId: string) {
  const all = await new AuditLog(ctx.stack.auditLogFile).read({ vmId });
  return all.filter((e) => e.workflowType === 'mergeDisk' && e.runId === runId);
}

/** Everything a completed merge must satisfy (invariants 1, 2 and 4, audit, reconcile). */
async function assertCompleted(
  ctx: FaultContext,
  sc: Scenario,
  handle: WorkflowHandle,
  watch: WatchReport,
): Promise<void> {
  const [base, mid, leaf] = sc.chain as [StoredVolume, StoredVolume, StoredVolume];
  const removed = [mid.volumeId, leaf.volumeId];
  // Data, byte for byte (the guest view before the merge vs the base now).
  await flushGuest(ctx, sc.vmId);
  expect(await sameContent({ path: sc.before, format: 'raw' }, { path: base.path, format: 'qcow2' })).toBe(
    true,
  );
  // Metadata: base alone, LEGAL.
  const final = await sc.sd.readChain(sc.imageId);
  expect(final.map((v) => [v.volumeId, v.legality])).toEqual([[base.volumeId, 'LEGAL']]);
  // Files: each committed volume deleted exactly once, while ILLEGAL, after step 6 passed (the live host
  // unit mergeOnHost, or verifyMerged of a cold merge); nothing else deleted, re-created or missed.
  expect(watch.missed).toEqual([]);
  expect(watch.reappeared).toEqual([]);
  expect([...watch.unlinks.entries()].sort()).toEqual(removed.map((id) => [id, 1]).sort());
  const verified = (await completedAt(handle, 'mergeOnHost')) ?? (await completedAt(handle, 'verifyMerged'));
  expect(verified).toBeDefined();
  for (const e of watch.events.filter((x) => x.kind === 'unlink')) {
    expect(deletedWhileIllegal(e), `${e.volumeId} deleted while ${e.legality}`).toBe(true);
    expect(e.at, `deletion of ${e.volumeId} after step 6 passed`).toBeGreaterThanOrEqual(verified!);
  }
  for (const v of removed) expect(await exists(sc.sd.volumePath(sc.imageId, v))).toBe(false);
  // No hold is left behind (vm-hold.ts): not by an attempt that died, nor by the one that finished.
  await withDom(ctx, sc.vmId, async (d) => {
    if (await d.isActive()) expect(await d.liveMetadata(HOLD_NAMESPACE)).toBeNull();
  });
  // Audit: this run started and completed, once each.
  const runId = (await handle.describe()).runId;
  expect((await auditOf(ctx, sc.vmId, runId)).map((e) => e.outcome)).toEqual(['started', 'completed']);
  // Reconcile has nothing left to do; invariant 4 holds.
  const rec = await reconcile(ctx, sc.sd.id);
  expect(rec.deleted).toEqual([]);
  expect(rec.reports.find((r) => r.imageId === sc.imageId)?.ok).toBe(true);
  await withDom(ctx, sc.vmId, async (dom) =>
    expect(await checkImage(sc.sd, sc.imageId, dom)).toEqual({ orphans: [], disagreements: [] }),
  );
}

/**
 * Held with 1 of 2 volumes deleted. A fault that fails the deletion step (the storage role killed, or libvirt
 * gone when the guard asks) makes its retry find the deletion begun: the record is not redone, the volume
 * already gone counts as such, and only the other is deleted (the branch, read from the step's result).
 */
async function assertDeletionResumed(
  handle: WorkflowHandle,
  fault: Fault,
  mid: StoredVolume,
  leaf: StoredVolume,
): Promise<void> {
  const run = await activityRun(handle, 'recordAndDelete');
  // A killed storage agent always fails its attempt; a libvirtd restart only when the guard asks meanwhile.
  if (fault === 'storage-kill') expect(run.attempt).toBeGreaterThan(1);
  if (run.attempt > 1) expect(run.result).toEqual({ deleted: [leaf.volumeId], alreadyGone: [mid.volumeId] });
  else expect(run.result).toEqual({ deleted: [mid.volumeId, leaf.volumeId], alreadyGone: [] });
}

/** What a merge failed by a VM crash must have left: the whole chain, LEGAL, unchanged, audited. */
async function assertCrashedCleanly(
  ctx: FaultContext,
  sc: Scenario,
  handle: WorkflowHandle,
  watch: ImageDirWatch,
): Promise<void> {
  expect(watch.unlinked()).toEqual([]);
  const now = await sc.sd.listVolumes(sc.imageId);
  expect(now.map((v) => [v.volumeId, v.parentId, v.legality]).sort()).toEqual(
    sc.chain.map((v) => [v.volumeId, v.parentId, 'LEGAL']).sort(),
  );
  for (const v of sc.chain) expect(await exists(v.path)).toBe(true);
  expect((await diskChainOf(ctx, sc.vmId, true))[0]).toBe(sc.chain[2]!.path);
  const runId = (await handle.describe()).runId;
  const events = await auditOf(ctx, sc.vmId, runId);
  expect(events.map((e) => e.outcome)).toEqual(['started', 'failed']);
  expect(events[1]!.detail.failureType).toBe('VmCrashed');
  // Reconcile must not touch a valid chain: nothing is ILLEGAL, nothing to delete.
  const rec = await reconcile(ctx, sc.sd.id);
  expect(rec.deleted).toEqual([]);
  expect(rec.reports.find((r) => r.imageId === sc.imageId)?.ok).toBe(true);
  expect(watch.unlinked()).toEqual([]);
}

/** The VM started again reads exactly what it had: its chain as before, the same bytes. */
async function restartVmAndCompare(ctx: FaultContext, sc: Scenario, leafPath: string): Promise<void> {
  await withDom(ctx, sc.vmId, (dom) => dom.create());
  expect((await diskChainOf(ctx, sc.vmId, false))[0]).toBe(leafPath);
  await flushGuest(ctx, sc.vmId);
  expect(await sameContent({ path: sc.before, format: 'raw' }, { path: leafPath, format: 'qcow2' })).toBe(
    true,
  );
}

export async function runCell(ctx: FaultContext, cell: Cell): Promise<CellResult> {
  const t0 = Date.now();
  const name = cellName(cell);
  const { stack } = ctx;
  ctx.log(`[cell] ${name}`);
  let sc: Scenario | undefined;
  let watch: ImageDirWatch | undefined;
  try {
    stack.releaseAll();
    await stack.waitHealthy();
    if (cell.fault === 'libvirtd-restart' && !ctx.simHost) await waitForLibvirtdAlone(ctx);
    sc = await setUp(ctx, cell);
    const [base, mid, leaf] = sc.chain as [StoredVolume, StoredVolume, StoredVolume];
    const input: MergeDiskInput = {
      vmId: sc.vmId,
      storageDomainId: sc.sd.id,
      imageId: sc.imageId,
      baseVolumeId: base.volumeId,
      topVolumeId: leaf.volumeId,
      ...(cell.stage === 'copy' ? { bandwidthBytesPerSec: BANDWIDTH } : {}),
    };
    watch = new ImageDirWatch(sc.sd.imageDir(sc.imageId));
    const hold = cell.hold ?? holdFor(cell.fault, cell.stage);
    if (hold) stack.hold(hold);
    const handle = await startMerge(ctx, input);
    await reachStage(ctx, cell, sc, handle, hold);

    let restore: () => Promise<void>;
    if (cell.offsetMs !== undefined) {
      // Soak: let the merge run on for a random time, then strike wherever it is.
      if (hold) stack.release(hold);
      await new Promise((r) => setTimeout(r, cell.offsetMs));
      if (cell.fault === 'libvirtd-restart') await waitForLibvirtdAlone(ctx);
      ctx.log(`  inject ${cell.fault} at stage ${(await progressOf(handle))?.stage ?? '?'}`);
      restore = await inject(ctx, cell.fault, sc.vmId);
    } else {
      if (cell.fault === 'libvirtd-restart' && !ctx.simHost) await waitForLibvirtdAlone(ctx);
      if (cell.stage === 'copy') {
        // Still copying when the fault strikes.
        const info = await withDom(ctx, sc.vmId, (d) => d.blockJobInfo('vda'));
        expect(info && info.cur < info.end).toBe(true);
      }
      restore = await inject(ctx, cell.fault, sc.vmId);
      // The held step goes on while the faulty part is down (or, killed with its agent, is retried).
      if (hold) stack.release(hold);
    }
    ctx.log(`  injected ${cell.fault}; restoring`);
    await restore();
    stack.releaseAll();
    const restored = Date.now();

    const first = await outcomeWithin(ctx, handle, 180_000);
    // Resumed within seconds of the restoration: an activity that died with its agent is retried after
    // its heartbeat timeout (10 s), not after its startToCloseTimeout (2-10 min).
    const resumeSeconds = (Date.now() - restored) / 1000;
    ctx.log(`  merge ended ${resumeSeconds.toFixed(1)} s after the restoration`);
    expect(resumeSeconds).toBeLessThan(RESUME_LIMIT_S);
    let outcome: CellResult['outcome'] = 'completed';
    if (first.failure !== undefined) {
      // Only a VM crash before the pivot may fail the merge, and only with VmCrashed.
      expect(cell.fault, `merge failed with ${first.failure}\n${stack.allLogs()}`).toBe('vm-crash');
      expect(first.failure).toBe('VmCrashed');
      if (cell.offsetMs === undefined) expect(expectsVmCrashed(cell)).toBe(true);
      outcome = 'VmCrashed';
      await assertCrashedCleanly(ctx, sc, handle, watch);
      const retry = cell.retry ?? 'live';
      if (retry === 'live') await restartVmAndCompare(ctx, sc, leaf.path);
      else
        expect(
          await sameContent({ path: sc.before, format: 'raw' }, { path: leaf.path, format: 'qcow2' }),
        ).toBe(true);
      ctx.log(`  VmCrashed as expected; ${retry} retry`);
      const again = await startMerge(ctx, { ...input, bandwidthBytesPerSec: undefined });
      const second = await outcomeWithin(ctx, again, 180_000);
      expect(second.failure, stack.allLogs()).toBeUndefined();
      expect((await progressOf(again))?.mode).toBe(retry);
      await assertCompleted(ctx, sc, again, watch.stop());
      watch = undefined;
      if (retry === 'cold') await restartVmAndCompare(ctx, sc, base.path);
    } else {
      if (cell.offsetMs === undefined) expect(expectsVmCrashed(cell)).toBe(false);
      await assertCompleted(ctx, sc, handle, watch.stop());
      watch = undefined;
      if (cell.stage === 'deletion-partial' && cell.offsetMs === undefined)
        await assertDeletionResumed(handle, cell.fault, mid, leaf);
      if (cell.fault === 'vm-crash') await restartVmAndCompare(ctx, sc, base.path);
    }
    const seconds = (Date.now() - t0) / 1000;
    ctx.log(`  ${outcome} in ${seconds.toFixed(1)} s`);
    return { name, outcome, seconds };
  } finally {
    watch?.stop();
    await cleanUp(ctx, sc);
    // The next cell needs every part back (a failed cell may have left one down).
    for (const part of ['temporal', 'engine', 'host', 'storage'] as const)
      if (stack.pid(part) === undefined) await stack.startPart(part).catch(() => undefined);
    if (ctx.simHost) await startSimHost(ctx.simHost).catch(() => undefined);
    if (!(await libvirtdAnswers())) {
      await exec('libvirtd', ['-d']).catch(() => undefined);
      await until('libvirtd to answer', libvirtdAnswers, 60_000, 100).catch(() => undefined);
    }
  }
}
