// A real guest writes while its disk's chain is snapshotted and merged (test/helpers/guest-writer.ts):
// every write it saw acknowledged, and every pattern the host wrote through its disk in any phase,
// must be in the base image alone after an active commit with pivot (design invariant 1). The
// mutation (abort instead of pivot) proves that the check catches a loss.
import { execFile } from 'node:child_process';
import { copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import type { GuestWriter, ImageFormat } from '../helpers/guest-writer';
import {
  KiB,
  MiB,
  diskSource,
  queryBlockJobs,
  startGuestWriter,
  virsh,
  waitForBlockJobStatus,
  waitForMirrorReady,
} from '../helpers/guest-writer';
import { createTempDir } from '../helpers/vm-fixture';

const execFileAsync = promisify(execFile);

/** Acknowledged guest writes to wait for in every phase. */
const ACKS_PER_PHASE = 100;

async function qemuImg(...args: string[]): Promise<string> {
  return (await execFileAsync('qemu-img', args)).stdout;
}

async function newDisk(dir: string, file: string, format: ImageFormat = 'qcow2'): Promise<string> {
  const p = join(dir, file);
  await qemuImg('create', '-q', '-f', format, p, '1G');
  return p;
}

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

/** Largest pause between two consecutive acknowledgements (guest clock) of records fromSeq..toSeq. */
function maxAckGap(g: GuestWriter, fromSeq: number, toSeq: number): number {
  const log = g.ackLog().filter((a) => a.seq >= fromSeq && a.seq <= toSeq);
  let gap = 0;
  for (let i = 1; i < log.length; i++) gap = Math.max(gap, log[i]!.uptime - log[i - 1]!.uptime);
  return gap;
}

interface MergeRun {
  g: GuestWriter;
  base: string;
  overlays: string[];
  /** Acks seen right before the snapshot s1 was taken, and right after. */
  s1Boundary: { before: number; after: number };
  /** Acks seen right before the pivot (or abort), and right after. */
  beforeEnd: number;
  afterEnd: number;
  timings: Record<string, number>;
}

/**
 * The recipe's scenario: the guest writes on base; three live external snapshots (s1, s2, s3); an
 * active commit of s3 into base, throttled (running phase), then unthrottled until READY; then pivot
 * (or, for the mutation, abort); more writes; destroy. In every phase the guest acknowledges
 * ACKS_PER_PHASE writes and the host writes a 64 KiB pattern through the guest's disk.
 */
async function liveMerge(end: 'pivot' | 'abort'): Promise<MergeRun> {
  const timings: Record<string, number> = {};
  let t = Date.now();
  const lap = (what: string): void => {
    timings[what] = Date.now() - t;
    t = Date.now();
  };
  const tmp = await createTempDir('lm-gw-');
  const base = await newDisk(tmp.path, 'base.qcow2');
  const g = await startGuestWriter({ diskPath: base, format: 'qcow2', runId: `merge-${end}` });
  lap('boot');
  const phase = async (label: string, pattern: number, offset: number): Promise<void> => {
    await g.inject(pattern, offset, 64 * KiB, label);
    await g.waitForAcks(g.acks().length + ACKS_PER_PHASE, 60_000);
  };

  await phase('base', 0x41, 512 * MiB);
  const overlays: string[] = [];
  let s1Boundary = { before: 0, after: 0 };
  for (const [i, s] of ['s1', 's2', 's3'].entries()) {
    const overlay = join(tmp.path, `${s}.qcow2`);
    const before = g.acks().length;
    await virsh(
      'snapshot-create-as',
      g.name,
      s,
      '--diskspec',
      `vda,file=${overlay}`,
      '--disk-only',
      '--atomic',
      '--no-metadata',
    );
    if (s === 's1') s1Boundary = { before, after: g.acks().length };
    expect(await diskSource(g.name)).toBe(overlay);
    overlays.push(overlay);
    await phase(s, 0x42 + i, (514 + 2 * i) * MiB);
  }
  // Bulk data in s3, so that the throttled commit stays in its running phase for a few seconds.
  await g.inject(0x5a, 600 * MiB, 4 * MiB, 's3-bulk');
  lap('snapshots');

  // Negative control: while the chain exists, base alone has the records from before s1 only, and
  // none of the later patterns (base is QEMU's read-only backing file now: -U reads are consistent).
  const early = await g.verifyRecordsIn(base, 'qcow2', { forceShare: true });
  expect(early.ok).toBe(false);
  expect(early.firstBadSeq).toBeGreaterThanOrEqual(s1Boundary.before);
  expect(early.firstBadSeq).toBeLessThanOrEqual(s1Boundary.after);
  const earlyPatterns = await g.verifyInjectedIn(base, 'qcow2', { forceShare: true });
  expect(earlyPatterns.missing.map((m) => m.label)).toEqual(['s1', 's2', 's3', 's3-bulk']);

  await virsh('blockcommit', g.name, 'vda', '--active', '--bandwidth', '1'); // 1 MiB/s
  await waitForBlockJobStatus(g.name, 'running', 10_000);
  await phase('commit-running', 0x61, 530 * MiB);
  expect((await queryBlockJobs(g.name))[0]?.status).toBe('running'); // still throttled: the phase was real
  await virsh('blockjob', g.name, 'vda', '--bandwidth', '0');
  await waitForBlockJobStatus(g.name, 'ready', 120_000);
  lap('commit');
  await phase('ready', 0x71, 540 * MiB);

  // libvirt refuses the pivot until it has processed QEMU's READY event, which can trail QEMU's status
  // under load; the abort waits for it too, so that both ends start from the same state.
  await waitForMirrorReady(g.name, 'vda', 30_000);
  const beforeEnd = g.acks().length;
  if (end === 'pivot') {
    await virsh('blockjob', g.name, 'vda', '--pivot');
    expect(await diskSource(g.name)).toBe(base);
  } else {
    await virsh('blockjob', g.name, 'vda', '--abort');
    expect(await diskSource(g.name)).toBe(overlays[2]);
  }
  const afterEnd = g.acks().length;
  expect(await queryBlockJobs(g.name)).toEqual([]);
  await phase(`after-${end}`, 0x81, 550 * MiB);
  lap(end);
  await g.destroy();
  return { g, base, overlays, s1Boundary, beforeEnd, afterEnd, timings };
}

describe('writing guest', () => {
  it.each(['qcow2', 'raw'] as const)(
    'boots on %s, acknowledges writes that are then in its image, and the check pinpoints bad records',
    async (format) => {
      const tmp = await createTempDir('lm-gw-');
      const disk = await newDisk(tmp.path, `disk.${format}`, format);
      const t0 = Date.now();
      const g = await startGuestWriter({ diskPath: disk, format });
      expect(g.name).toMatch(/^lm-test-gw-[0-9a-f]{8}$/);
      expect(g.uuid).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
      expect(g.runId).toHaveLength(12);
      expect(await g.waitForAcks(50, 60_000)).toBeGreaterThanOrEqual(50);
      const ackMs = Date.now() - t0 - g.bootMs;
      await g.destroy();

      const acks = g.acks();
      expect(acks.length).toBeGreaterThanOrEqual(50);
      expect(acks).toEqual(range(acks.length)); // sequential, none skipped
      expect(await g.verifyRecordsIn(disk, format)).toEqual({ ok: true, acked: acks.length });
      console.info(
        `guest-writer (${format}): boot ${g.bootMs} ms, ${acks.length} acks in ${ackMs} ms after boot`,
      );
      // A guest that no longer runs fails waitForAcks at once instead of at the deadline.
      await expect(g.waitForAcks(acks.length + 1, 60_000)).rejects.toThrow(/not running/);

      // The check sees a damaged record (here 512 bytes of record 10, overwritten offline)...
      const damaged = join(tmp.path, `damaged.${format}`);
      await copyFile(disk, damaged);
      await execFileAsync('qemu-io', [
        '-f',
        format,
        '-c',
        `write -P 0x00 ${10 * 4 * KiB + 1024} 512`,
        damaged,
      ]);
      expect(await g.verifyRecordsIn(damaged, format)).toEqual({
        ok: false,
        acked: acks.length,
        firstBadSeq: 10,
        badRecords: 1,
      });
      // ... and an image without any of them.
      const blank = await newDisk(tmp.path, `blank.${format}`, format);
      expect(await g.verifyRecordsIn(blank, format)).toEqual({
        ok: false,
        acked: acks.length,
        firstBadSeq: 0,
        badRecords: acks.length,
      });
    },
  );

  it(
    'keeps every acknowledged write across 3 live snapshots and an active commit with pivot',
    { timeout: 300_000 },
    async () => {
      const r = await liveMerge('pivot');
      const { g, base } = r;

      // base stands alone: no backing file, consistent, and has everything.
      const info = JSON.parse(await qemuImg('info', '--output=json', base)) as {
        'backing-filename'?: string;
      };
      expect(info['backing-filename']).toBeUndefined();
      await qemuImg('check', '-q', base);
      const records = await g.verifyRecordsIn(base, 'qcow2');
      expect(records).toEqual({ ok: true, acked: g.acks().length });
      expect(records.acked).toBeGreaterThanOrEqual(8 * 100);
      const patterns = await g.verifyInjectedIn(base, 'qcow2');
      expect(patterns).toEqual({ ok: true, checked: 8, missing: [] });

      const gap = maxAckGap(g, r.beforeEnd - 1, r.afterEnd + 1);
      console.info(
        `guest-writer merge: ${records.acked} acked records and ${patterns.checked} host patterns in base; ` +
          `max guest pause around the pivot ${gap.toFixed(2)} s; phases (ms) ${JSON.stringify(r.timings)}`,
      );
    },
  );

  it(
    'mutation: aborting instead of pivoting loses the later writes, and the check reports it',
    { timeout: 300_000 },
    async () => {
      const r = await liveMerge('abort');
      const { g, base, overlays } = r;

      const records = await g.verifyRecordsIn(base, 'qcow2');
      expect(records.ok).toBe(false);
      // Everything up to the abort was mirrored into base (READY); what the guest wrote after it is in s3 only.
      expect(records.firstBadSeq).toBeGreaterThanOrEqual(r.beforeEnd);
      expect(records.badRecords).toBeGreaterThanOrEqual(100);
      const patterns = await g.verifyInjectedIn(base, 'qcow2');
      expect(patterns.ok).toBe(false);
      expect(patterns.missing.map((m) => m.label)).toEqual(['after-abort']);

      // The data is not lost for the guest: its leaf (s3 over s2, s1, base) still has all of it.
      const leaf = overlays[2]!;
      expect(await g.verifyRecordsIn(leaf, 'qcow2', { chain: true })).toEqual({
        ok: true,
        acked: records.acked,
      });
      expect(await g.verifyInjectedIn(leaf, 'qcow2', { chain: true })).toMatchObject({
        ok: true,
        checked: 8,
      });
    },
  );
});
