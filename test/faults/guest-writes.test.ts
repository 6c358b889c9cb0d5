// A real guest writes while livemerge merges its disk and while its host agent is SIGKILLed
// (test/helpers/guest-writer.ts: a Linux guest that writes 4 KiB self-describing records with O_DIRECT +
// fsync and acknowledges each on its serial console). The host also writes a pattern through the guest's
// disk device in every phase. After the merge every acknowledged record and every pattern must be in the
// base image alone, byte for byte (invariant 1), and the usual file/metadata checks hold.
// The recipe's mutation: the same run with the job aborted under livemerge instead of pivoted — the check
// must then report the writes made after the abort as missing from base (and livemerge must fail the
// merge with MergeJobFailed, deleting nothing).
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ENGINE_TASK_QUEUE } from '../../src/common/task-queues';
import type { Domain } from '../../src/libvirt';
import type { Progress } from '../../src/schemas/progress';
import { StorageDomain } from '../../src/storage/storage-domain';
import type { StoredVolume } from '../../src/storage/storage-domain';
import { exists } from '../helpers/data';
import { deletedWhileIllegal, ImageDirWatch } from '../helpers/file-watch';
import type { GuestWriter } from '../helpers/guest-writer';
import { KiB, MiB, libvirtMirror, startGuestWriter } from '../helpers/guest-writer';
import { checkImage } from '../helpers/invariants';
import { ProcessStack, until } from '../helpers/process-stack';
import { failureTypeOf } from '../helpers/workflows';
import type { FaultContext } from './harness';
import { faultContext, reconcile } from './harness';

/** Acknowledged guest writes to wait for in every phase. */
const ACKS_PER_PHASE = 40;

describe('a writing guest through a live merge with host-agent kills', () => {
  let ctx: FaultContext;
  beforeAll(async () => {
    ctx = faultContext(await ProcessStack.start());
  });
  afterAll(async () => {
    await ctx?.libvirt.close();
    await ctx?.stack.stop();
  });

  async function withDom<T>(uuid: string, fn: (dom: Domain) => Promise<T>): Promise<T> {
    const dom = await (await ctx.libvirt()).lookupByUuid(uuid);
    try {
      return await fn(dom);
    } finally {
      dom.free();
    }
  }

  /** Runs `fn`; on failure prints every part's log tail first. */
  async function reporting(fn: () => Promise<void>): Promise<void> {
    try {
      await fn();
    } catch (err) {
      console.error(ctx.stack.allLogs());
      throw err;
    }
  }

  async function scenario(end: 'pivot' | 'abort-instead-of-pivot') {
    const { stack } = ctx;
    stack.releaseAll();
    const sd = await StorageDomain.create(stack.storageRoot, randomUUID());
    const baseVol = await sd.createImage({ format: 'qcow2', capacity: 1024 * MiB });
    const tmp = path.join(stack.dir, 'cells', randomUUID());
    await fs.mkdir(tmp, { recursive: true });
    const g: GuestWriter = await startGuestWriter({
      diskPath: baseVol.path,
      format: 'qcow2',
      runId: end === 'pivot' ? 'faults-pivot' : 'faults-abort',
      serialLogPath: path.join(tmp, 'serial.log'),
      maxRecords: 60_000,
    });
    ctx.log(`guest ${g.name} booted in ${g.bootMs} ms`);
    const phase = async (label: string, pattern: number, offset: number): Promise<void> => {
      await g.inject(pattern, offset, 64 * KiB, label);
      await g.waitForAcks(g.acks().length + ACKS_PER_PHASE, 60_000);
    };
    const snapshot = () =>
      stack.client.workflow.execute('createSnapshot', {
        taskQueue: ENGINE_TASK_QUEUE,
        workflowId: `create-snapshot:${g.uuid}:${randomUUID()}`,
        args: [{ vmId: g.uuid }],
      });
    const job = () => withDom(g.uuid, (dom) => dom.blockJobInfo('vda'));

    await phase('base', 0x41, 512 * MiB);
    await snapshot();
    await phase('s1', 0x42, 514 * MiB);
    await snapshot();
    await phase('s2', 0x43, 516 * MiB);
    await g.inject(0x5a, 600 * MiB, 8 * MiB, 's2-bulk'); // the throttled commit copies for seconds
    const chain = await sd.readChain(baseVol.imageId);
    expect(chain).toHaveLength(3);
    const [base, mid, leaf] = chain as [StoredVolume, StoredVolume, StoredVolume];
    // Negative control: base alone lacks what was written after the first snapshot.
    expect((await g.verifyRecordsIn(base.path, 'qcow2', { forceShare: true })).ok).toBe(false);

    const watch = new ImageDirWatch(sd.imageDir(base.imageId));
    stack.hold('pivot');
    const handle = await stack.client.workflow.start('mergeDisk', {
      taskQueue: ENGINE_TASK_QUEUE,
      workflowId: `merge-disk:${g.uuid}:${base.imageId}`,
      args: [
        {
          vmId: g.uuid,
          storageDomainId: sd.id,
          imageId: base.imageId,
          baseVolumeId: base.volumeId,
          topVolumeId: leaf.volumeId,
          bandwidthBytesPerSec: 1 * MiB,
        },
      ],
    });
    // During the copy: the guest and the host write, then the agent dies and they write on.
    await until(
      'the copy',
      async () => {
        const p = await handle.query<Progress>('progress').catch(() => undefined);
        const info = p?.stage === 'copying' ? await job() : null;
        return info && info.cur > 0;
      },
      60_000,
    );
    await phase('copy', 0x61, 530 * MiB);
    const copying = await job();
    expect(copying && copying.cur < copying.end).toBe(true);
    await stack.kill('host');
    await phase('copy-agent-down', 0x62, 532 * MiB);
    await stack.startPart('host');
    // As in the recipe, the job is unthrottled for READY (the guest keeps dirtying blocks meanwhile).
    await withDom(g.uuid, (dom) => dom.blockJobSetSpeed('vda', 0));
    // READY, the pivot held: they write; the agent dies again with the pivot in its hands.
    await stack.waitHeld('pivot', handle.workflowId, 120_000);
    // READY as libvirt holds it (cur == end is not: the writing guest keeps adding to `end`).
    const ready = await job();
    expect(ready && ready.end > 0).toBe(true);
    expect(await libvirtMirror(g.uuid, 'vda')).toEqual({ ready: 'yes' });
    await phase('ready', 0x71, 540 * MiB);
    await stack.kill('host');
    await phase('ready-agent-down', 0x72, 542 * MiB);
    const acksAtEnd = g.acks().length;
    if (end === 'abort-instead-of-pivot') {
      // The mutation: the job is aborted under livemerge (as a broken pivot would), so base stops
      // receiving the guest's writes.
      await withDom(g.uuid, (dom) => dom.blockJobAbort('vda', {}));
    }
    stack.release('pivot');
    await stack.startPart('host');
    const failure = await failureTypeOf(handle.result());
    await phase(`after-${end}`, 0x81, 550 * MiB);
    await g.destroy();
    return { sd, g, base, mid, leaf, handle, watch, failure, acksAtEnd, chain };
  }

  it(
    'every acknowledged guest write and host pattern of every phase is in base after the merge',
    { timeout: 600_000 },
    () =>
      reporting(async () => {
        const r = await scenario('pivot');
        expect(r.failure, ctx.stack.allLogs()).toBeUndefined();
        const records = await r.g.verifyRecordsIn(r.base.path, 'qcow2');
        expect(records).toEqual({ ok: true, acked: r.g.acks().length });
        expect(await r.g.verifyInjectedIn(r.base.path, 'qcow2')).toEqual({
          ok: true,
          checked: 9,
          missing: [],
        });
        ctx.log(`${records.acked} acknowledged records and 9 host patterns found in base`);
        const report = r.watch.stop();
        expect(report.missed).toEqual([]);
        expect(report.reappeared).toEqual([]);
        expect([...report.unlinks.entries()].sort()).toEqual(
          [r.mid.volumeId, r.leaf.volumeId].map((id) => [id, 1]).sort(),
        );
        expect(report.events.filter((e) => !deletedWhileIllegal(e))).toEqual([]);
        const rec = await reconcile(ctx, r.sd.id);
        expect(rec.deleted).toEqual([]);
        await withDom(r.g.uuid, async (dom) =>
          expect(await checkImage(r.sd, r.base.imageId, dom)).toEqual({ orphans: [], disagreements: [] }),
        );
      }),
  );

  it(
    'mutation: the job aborted instead of pivoted loses the later writes from base, and the check says so',
    { timeout: 600_000 },
    () =>
      reporting(async () => {
        const r = await scenario('abort-instead-of-pivot');
        // livemerge notices: no job to pivot and the disk not on base → MergeJobFailed, nothing deleted.
        expect(r.failure).toBe('MergeJobFailed');
        expect(r.watch.stop().events).toEqual([]);
        for (const v of r.chain) {
          expect(await exists(v.path)).toBe(true);
          expect((await r.sd.readVolume(v.imageId, v.volumeId)).legality).toBe('LEGAL');
        }
        // The check catches the loss: base misses what the guest acknowledged after the abort...
        const records = await r.g.verifyRecordsIn(r.base.path, 'qcow2');
        expect(records.ok).toBe(false);
        expect(records.firstBadSeq).toBeGreaterThanOrEqual(r.acksAtEnd);
        expect((await r.g.verifyInjectedIn(r.base.path, 'qcow2')).missing.map((m) => m.label)).toEqual([
          'after-abort-instead-of-pivot',
        ]);
        // ... which the guest still has in its chain.
        expect(await r.g.verifyRecordsIn(r.leaf.path, 'qcow2', { chain: true })).toEqual({
          ok: true,
          acked: r.g.acks().length,
        });
      }),
  );
});
