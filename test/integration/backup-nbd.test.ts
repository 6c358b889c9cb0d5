// backupVm with `repository: null` as a third-party backup application uses it (docs/backup.md, "A backup
// application over NBD"): the docs' shell block itself is extracted and run against a running 2-disk VM, so
// the doc cannot drift. A full export first (no dirty-bitmap context), guest writes, then an incremental:
// `nbdinfo --map=qemu:dirty-bitmap:…` lists exactly the written granules, `nbdcopy` of each export reads
// what the guest saw before the backup, and `backupDone` ends the export and merges the snapshot back.
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import type { WorkflowHandle } from '@temporalio/client';
import { describe, expect, it } from 'vitest';
import { temporalCliPath } from '../../src/devstack/temporal-server';
import { parseDomainDiskChains } from '../../src/inspect/domain-xml';
import type { BackupProgress } from '../../src/schemas/progress';
import type { BackupVmResult } from '../../src/schemas/results';
import { guestViews, startBackup } from '../helpers/backups';
import { writeThroughGuest } from '../helpers/data';
import { createStackVm, useStack } from '../helpers/stack';
import type { Stack } from '../helpers/stack';
import { NAMESPACE } from '../helpers/temporal';
import { createTempDir, registerCleanup } from '../helpers/vm-fixture';
import type { TestVm } from '../helpers/vm-fixture';
import { waitForProgress } from '../helpers/workflows';

const exec = promisify(execFile);
const KiB = 1024;
const MiB = 1024 * KiB;
const G = 64 * KiB; // the bitmaps' granularity
const DOC = path.resolve(__dirname, '../../docs/backup.md');
const MARKER = '<!-- backup-nbd-example';

interface Range {
  offset: number;
  length: number;
}

/** The fenced `sh` block after the example's marker in docs/backup.md. */
async function docExample(): Promise<string> {
  const text = await fs.readFile(DOC, 'utf8');
  const at = text.indexOf(MARKER);
  if (at < 0) throw new Error(`${DOC}: no ${MARKER} marker`);
  const m = /```sh\n([\s\S]*?)\n```/.exec(text.slice(at));
  if (!m?.[1]) throw new Error(`${DOC}: no sh block after the marker`);
  return m[1];
}

/** Runs the docs' block for `workflowId`, its copies in a fresh directory; its stderr on failure. */
async function runDocExample(s: Stack, workflowId: string): Promise<string> {
  const out = (await createTempDir('lm-nbd-app-')).path;
  const script = await docExample();
  const env = {
    ...process.env,
    PATH: `${path.dirname(temporalCliPath())}:${process.env.PATH ?? ''}`,
    TEMPORAL_ADDRESS: s.address,
    TEMPORAL_NAMESPACE: NAMESPACE,
    WORKFLOW_ID: workflowId,
    OUT: out,
  };
  try {
    await exec('sh', ['-c', script], { env, timeout: 60_000 });
  } catch (err) {
    const e = err as { stderr?: string; stdout?: string };
    throw new Error(`the docs' example failed: ${e.stderr ?? ''}${e.stdout ?? ''}`, { cause: err });
  }
  return out;
}

/** The dirty ranges of an `nbdinfo --map=qemu:dirty-bitmap:…` output (type bit 1), merged. */
function dirtyRanges(map: string): Range[] {
  const out: Range[] = [];
  for (const line of map.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 3 || (Number(f[2]) & 1) === 0) continue;
    const [offset, length] = [Number(f[0]), Number(f[1])];
    const last = out[out.length - 1];
    if (last && last.offset + last.length === offset) last.length += length;
    else out.push({ offset, length });
  }
  return out;
}

/** Writes rounded out to the bitmap's granules, merged (what a 64 KiB bitmap records). */
function granules(writes: Range[]): Range[] {
  const rs = writes
    .map((w) => {
      const start = Math.floor(w.offset / G) * G;
      return { offset: start, length: Math.ceil((w.offset + w.length) / G) * G - start };
    })
    .sort((a, b) => a.offset - b.offset);
  const out: Range[] = [];
  for (const r of rs) {
    const last = out[out.length - 1];
    if (last && last.offset + last.length >= r.offset)
      last.length = Math.max(last.length, r.offset + r.length - last.offset);
    else out.push({ ...r });
  }
  return out;
}

async function leaves(vm: TestVm): Promise<Array<{ target: string; path: string; length: number }>> {
  return parseDomainDiskChains(await vm.domain.xml())
    .filter((d) => d.device === 'disk')
    .map((d) => ({ target: d.target, path: d.chain[0]!.path!, length: d.chain.length }));
}

/** The meta contexts an export offers (nbdinfo --json). */
async function contexts(uri: string): Promise<string[]> {
  const { stdout } = await exec('nbdinfo', ['--json', uri]);
  const info = JSON.parse(stdout) as { exports: Array<{ contexts?: string[] }> };
  return info.exports.flatMap((e) => e.contexts ?? []);
}

/** A backup in NBD mode that, whatever happens, is not left exporting: cancelled (compensated) at test end. */
async function startNbdBackup(s: Stack, vmId: string): Promise<WorkflowHandle> {
  const h = await startBackup(s, { vmId, backupId: randomUUID(), repository: null });
  registerCleanup(async () => {
    const { status } = await h.describe();
    if (status.name !== 'RUNNING') return;
    await h.cancel();
    await h.result().catch(() => undefined);
  });
  return h;
}

async function exportsWhenReady(h: WorkflowHandle): Promise<NonNullable<BackupProgress['exports']>> {
  const p = (await waitForProgress(h, (x) =>
    ['ready', 'failed', 'cancelled', 'done'].includes(x.stage),
  )) as BackupProgress;
  // A backup that ended instead: its failure is the test's.
  if (p.stage !== 'ready') await h.result();
  expect(p.stage).toBe('ready');
  expect(p.exports, 'exports while ready').toBeDefined();
  return p.exports;
}

describe('backupVm over NBD, driven by the shell example of docs/backup.md', () => {
  it('a full export, then an incremental whose dirty map is exactly the guest writes; nbdcopy reads the frozen view', async () => {
    const s = await useStack();
    const { vm } = await createStackVm(s, { disks: 2, format: 'qcow2' });
    const views = (await createTempDir('lm-nbd-views-')).path;
    await writeThroughGuest(vm.domain, 0, { byte: 0x11, offset: 0, length: 2 * MiB });
    await writeThroughGuest(vm.domain, 1, { byte: 0x12, offset: 4 * MiB, length: 512 * KiB });
    const before = await leaves(vm);

    // 1. Full: no parent bitmap on the disks, so no dirty-bitmap context on either export.
    const v1 = await guestViews(before, views, 'b1');
    const h1 = await startNbdBackup(s, vm.uuid);
    const e1 = await exportsWhenReady(h1);
    expect(e1.map((e) => [e.target, e.bitmap])).toEqual([
      ['vda', undefined],
      ['vdb', undefined],
    ]);
    for (const e of e1) expect(await contexts(e.uri)).toEqual(['base:allocation']);
    const out1 = await runDocExample(s, h1.workflowId);
    expect((await fs.readFile(path.join(out1, 'exports'), 'utf8')).trim().split('\n')).toEqual(
      e1.map((e) => `${e.target} ${e.uri} -`),
    );
    for (const e of e1)
      expect(await compareWithRaw(path.join(out1, `${e.target}.raw`), v1[e.target]!)).toBe('');
    const r1 = (await h1.result()) as BackupVmResult;
    expect(r1.disks.map((d) => [d.target, d.mode])).toEqual([
      ['vda', 'full'],
      ['vdb', 'full'],
    ]);
    expect((await leaves(vm)).map((l) => [l.path, l.length])).toEqual(before.map((l) => [l.path, l.length]));

    // 2. Guest writes: two ranges on vda (one across a granule boundary), one inside a granule on vdb.
    const writes: Record<string, Array<Range & { byte: number }>> = {
      vda: [
        { byte: 0x21, offset: 512 * KiB, length: 64 * KiB },
        { byte: 0x22, offset: 20 * MiB + 32 * KiB, length: 100 * KiB },
      ],
      vdb: [{ byte: 0x23, offset: 8 * MiB + 4 * KiB, length: 8 * KiB }],
    };
    for (const [i, target] of ['vda', 'vdb'].entries())
      for (const w of writes[target]!) await writeThroughGuest(vm.domain, i, w);
    const v2 = await guestViews(before, views, 'b2');

    // 3. Incremental relative to the first backup's bitmap.
    const h2 = await startNbdBackup(s, vm.uuid);
    const e2 = await exportsWhenReady(h2);
    const parentBitmap = `livemerge-${r1.backupId}`;
    expect(e2.map((e) => [e.target, e.bitmap])).toEqual([
      ['vda', parentBitmap],
      ['vdb', parentBitmap],
    ]);
    for (const e of e2)
      expect((await contexts(e.uri)).sort()).toEqual([
        'base:allocation',
        `qemu:dirty-bitmap:${parentBitmap}`,
      ]);
    const out2 = await runDocExample(s, h2.workflowId);
    expect((await fs.readFile(path.join(out2, 'exports'), 'utf8')).trim().split('\n')).toEqual(
      e2.map((e) => `${e.target} ${e.uri} ${parentBitmap}`),
    );
    for (const e of e2) {
      const map = await fs.readFile(path.join(out2, `${e.target}.dirty`), 'utf8');
      expect(dirtyRanges(map), `${e.target} dirty map:\n${map}`).toEqual(granules(writes[e.target]!));
      expect(await compareWithRaw(path.join(out2, `${e.target}.raw`), v2[e.target]!), e.target).toBe('');
    }
    // The copy of the incremental is the new view, not the old one.
    expect(await compareWithRaw(path.join(out2, 'vda.raw'), v1.vda!)).not.toBe('');

    // 4. The example's backupDone ended it: the workflow completes, the chain is back to its length.
    const r2 = (await h2.result()) as BackupVmResult;
    expect(r2.disks.map((d) => [d.target, d.mode, d.changedBytes])).toEqual([
      ['vda', 'incremental', G + 3 * G], // 512 KiB + 64 KiB; 20 MiB + 32 KiB + 100 KiB spans 3 granules
      ['vdb', 'incremental', G],
    ]);
    expect(r2.exports?.map((e) => e.uri)).toEqual(e2.map((e) => e.uri));
    expect((await leaves(vm)).map((l) => [l.path, l.length])).toEqual(before.map((l) => [l.path, l.length]));
    // The exports are gone with it.
    for (const e of e2) await expect(exec('nbdinfo', ['--size', e.uri])).rejects.toThrow();
  });
});

/** qemu-img compare of two raw files: '' when identical, else its output. */
async function compareWithRaw(copy: string, view: string): Promise<string> {
  try {
    await exec('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', copy, view]);
    return '';
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    return `${e.stdout ?? ''}${e.stderr ?? ''}`.trim() || String(err);
  }
}
