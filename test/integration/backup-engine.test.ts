// The storage-side backup engine (src/backup) on real image files, without a VM: the snapshot →
// backup flow of DESIGN.md "Backups" played with qemu-img and qemu-io. A checkpoint bitmap starts
// recording on the active leaf, a snapshot freezes it, writes land in the new leaf; each backup's
// file (with its backing) must read exactly what the frozen chain reads, an incremental must hold
// only the changed clusters, and every fallback to a full backup must say why. The NBD export is
// read back the way a backup application would (nbdinfo, nbdcopy). No qemu-storage-daemon may be
// left behind by any test.
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { discardScratch, planDiskBackup } from '../../src/backup/changed-blocks';
import { copyDiskBackup, discardBackupFiles } from '../../src/backup/copy';
import { readNbdDirtyMap, runNbdTool } from '../../src/backup/dirty-map';
import { dataExtents, mergeExtents, totalLength } from '../../src/backup/extents';
import { liveDaemonPid, startNbdExports, stopNbdExports } from '../../src/backup/nbd-export';
import { QmpError } from '../../src/backup/qmp';
import { startStorageDaemon, StorageDaemonError } from '../../src/backup/storage-daemon';
import type { Extent, FrozenDisk } from '../../src/backup/types';
import { QemuImgError } from '../../src/qemu/qemu-img';
import { pollUntil } from '../helpers/poll';
import type { Format } from '../../src/schemas/volume';
import {
  crashWhileOpen,
  holdOpen,
  makeTmpDir,
  readPatterns,
  runOk,
  runTool,
  writePatterns,
  type Pattern,
} from '../helpers/qemu';

const K = 1024;
const M = 1024 * K;
const CLUSTER = 64 * K;
const SIZE = 4 * M; // 64 clusters

const tmpDirs: string[] = [];
const pidFiles: string[] = [];

/** qemu-storage-daemon processes (not zombies) whose command line names a path under `root`. */
async function daemonsUnder(root: string): Promise<number[]> {
  const found: number[] = [];
  for (const pid of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const cmd = await fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    if (state === 'Z' || state === '') continue;
    if (cmd.startsWith('qemu-storage-daemon\0') && cmd.includes(root)) found.push(Number(pid));
  }
  return found;
}

afterEach(async () => {
  for (const p of pidFiles.splice(0)) await stopNbdExports(p);
  const dirs = tmpDirs.splice(0);
  const left = (await Promise.all(dirs.map(daemonsUnder))).flat();
  for (const pid of left) process.kill(pid, 'SIGKILL');
  for (const d of dirs) await fs.rm(d, { recursive: true, force: true });
  expect(left, 'qemu-storage-daemon processes left behind').toEqual([]);
});

async function tmpRoot(): Promise<string> {
  const d = await makeTmpDir('livemerge-backup-');
  tmpDirs.push(d);
  return d;
}

async function qcow2(file: string, backing?: { file: string; format: Format }): Promise<void> {
  const b = backing ? ['-b', path.basename(backing.file), '-F', backing.format] : [];
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', ...b, file, String(SIZE)]);
}

async function addBitmap(file: string, name: string): Promise<void> {
  await runOk('qemu-img', ['bitmap', '--add', '--enable', '-g', String(CLUSTER), '-f', 'qcow2', file, name]);
}

/** `qemu-img compare` of a backup file (with its backing) against the frozen leaf (with its chain). */
async function identical(backup: string, frozenLeaf: string, frozenFormat: Format): Promise<boolean> {
  const r = await runTool('qemu-img', ['compare', '-f', 'qcow2', '-F', frozenFormat, backup, frozenLeaf]);
  if (r.code === 0) return true;
  if (r.code === 1) return false;
  throw new Error(`qemu-img compare: ${r.stderr}`);
}

function frozen(
  chain: Array<{ path: string; format: Format }>,
  imageId = 'img-1',
  target = 'vda',
): FrozenDisk {
  return { target, imageId, chain, capacity: SIZE };
}

/** The clusters touched by `writes`, as merged extents. */
function clustersOf(writes: readonly Pattern[]): Extent[] {
  return mergeExtents(
    writes.map((w) => {
      const start = Math.floor(w.offset / CLUSTER) * CLUSTER;
      const end = Math.ceil((w.offset + w.length) / CLUSTER) * CLUSTER;
      return { offset: start, length: end - start };
    }),
  );
}

/** Every byte of `inner` lies in some extent of `outer`. */
function within(inner: readonly Extent[], outer: readonly Extent[]): boolean {
  return inner.every((e) =>
    outer.some((o) => o.offset <= e.offset && e.offset + e.length <= o.offset + o.length),
  );
}

// The flow, one letter a write:
//   base: A (0..256K), B (1M..1M+128K), a zero write at 3M; checkpoint P starts; E (1536K) lands in base;
//   snapshot 1 (frozen [base]) → full backup b1, whose bitmap is P.
//   s1:   C (2M), D (sub-cluster, 512K+100), A' (64K) ; checkpoint Q; snapshot 2 (frozen [base, s1]) →
//   incremental relative to P: the union of P over s1 and base = E ∪ C ∪ D ∪ A'.
const BEFORE_P: Pattern[] = [
  { byte: 0x41, offset: 0, length: 256 * K },
  { byte: 0x42, offset: 1 * M, length: 128 * K },
];
const IN_BASE_AFTER_P: Pattern[] = [{ byte: 0x45, offset: 1536 * K, length: 64 * K }];
const IN_S1: Pattern[] = [
  { byte: 0x43, offset: 2 * M, length: 64 * K },
  { byte: 0x44, offset: 512 * K + 100, length: 1000 },
  { byte: 0x61, offset: 64 * K, length: 64 * K },
];

interface Flow {
  root: string;
  vols: string;
  repo: string;
  scratchDir: string;
  base: string;
  s1: string;
  s2: string;
}

async function buildFlow(): Promise<Flow> {
  const root = await tmpRoot();
  const vols = path.join(root, 'vols');
  const repo = path.join(root, 'repo', 'vm-1', 'img-1');
  const scratchDir = path.join(root, 'scratch');
  for (const d of [vols, repo, scratchDir]) await fs.mkdir(d, { recursive: true });
  const f: Flow = {
    root,
    vols,
    repo,
    scratchDir,
    base: path.join(vols, 'base'),
    s1: path.join(vols, 's1'),
    s2: path.join(vols, 's2'),
  };
  await qcow2(f.base);
  await writePatterns(f.base, 'qcow2', BEFORE_P);
  await runOk('qemu-io', ['-f', 'qcow2', '-c', `write -z ${3 * M} ${CLUSTER}`, f.base]);
  await addBitmap(f.base, 'livemerge-P');
  await writePatterns(f.base, 'qcow2', IN_BASE_AFTER_P);
  // Snapshot 1: the new leaf carries the recording bitmap on (as libvirt re-creates it).
  await qcow2(f.s1, { file: f.base, format: 'qcow2' });
  await addBitmap(f.s1, 'livemerge-P');
  return f;
}

/** After the full backup: the guest writes into s1, checkpoint Q, snapshot 2. */
async function advanceFlow(f: Flow): Promise<void> {
  await writePatterns(f.s1, 'qcow2', IN_S1);
  await addBitmap(f.s1, 'livemerge-Q');
  await qcow2(f.s2, { file: f.s1, format: 'qcow2' });
  await addBitmap(f.s2, 'livemerge-P');
  await addBitmap(f.s2, 'livemerge-Q');
}

describe('full then incremental copy', () => {
  it('copies the frozen view, then exactly the union of the bitmap over the frozen images', async () => {
    const f = await buildFlow();
    const disk1 = frozen([{ path: f.base, format: 'qcow2' }]);
    const full = await planDiskBackup(disk1, { scratchDir: f.scratchDir });
    expect(full).toMatchObject({ mode: 'full', reason: 'no parent backup' });
    expect(full.scratch).toBeUndefined();
    // The allocated data of the frozen view: A, B, E (the zero write and the holes are not data).
    expect(full.extents).toEqual(clustersOf([...BEFORE_P, ...IN_BASE_AFTER_P]));
    expect(full.changedBytes).toBe(totalLength(full.extents));

    const fullFile = path.join(f.repo, 'b1.qcow2');
    const progress: Array<[number, number]> = [];
    const c1 = await copyDiskBackup(disk1, full, {
      file: fullFile,
      onProgress: (a, b) => progress.push([a, b]),
    });
    expect(c1).toMatchObject({ status: 'copied', file: fullFile });
    expect(await identical(fullFile, f.base, 'qcow2')).toBe(true);
    // Zero and unallocated ranges were not written as data into the file.
    const fullData = await dataExtents(fullFile, 'qcow2', { ownOnly: true });
    expect(fullData).toEqual(full.extents);
    expect(c1.copiedBytes).toBe(full.changedBytes);
    expect(progress.length).toBeGreaterThan(0);
    const last = progress[progress.length - 1] ?? [0, 0];
    expect(last[0]).toBe(last[1]);
    await fs.access(`${fullFile}.part`).then(
      () => expect.fail('.part left'),
      () => undefined,
    );

    await advanceFlow(f);
    const disk2 = frozen([
      { path: f.base, format: 'qcow2' },
      { path: f.s1, format: 'qcow2' },
    ]);
    const inc = await planDiskBackup(disk2, { scratchDir: f.scratchDir, bitmap: 'livemerge-P' });
    expect(inc).toMatchObject({ mode: 'incremental', bitmap: 'livemerge-P' });
    expect(inc.reason).toBeUndefined();
    // The union over s1 AND base (E was written in base after P started).
    expect(inc.extents).toEqual(clustersOf([...IN_BASE_AFTER_P, ...IN_S1]));
    expect(inc.changedBytes).toBe(4 * CLUSTER);
    expect(inc.scratch).toBeDefined();

    const incFile = path.join(f.repo, 'b2.qcow2');
    const c2 = await copyDiskBackup(disk2, inc, { file: incFile, parentFile: 'b1.qcow2' });
    expect(c2.status).toBe('copied');
    const info = JSON.parse(await runOk('qemu-img', ['info', '--output=json', incFile])) as Record<
      string,
      unknown
    >;
    expect(info['backing-filename']).toBe('b1.qcow2');
    expect(await identical(incFile, f.s1, 'qcow2')).toBe(true);
    await readPatterns(incFile, 'qcow2', [...IN_S1, ...IN_BASE_AFTER_P]);
    expect(c2.copiedBytes).toBeLessThanOrEqual(inc.changedBytes + CLUSTER * inc.extents.length);
    // Nothing outside the changed extents is allocated in the incremental file itself.
    const incData = await dataExtents(incFile, 'qcow2', { ownOnly: true });
    expect(within(incData, inc.extents)).toBe(true);
    expect(totalLength(incData)).toBe(c2.copiedBytes);

    // Running it again answers from the finished file.
    const again = await copyDiskBackup(disk2, inc, { file: incFile, parentFile: 'b1.qcow2' });
    expect(again).toEqual({ ...c2, status: 'already-copied' });

    // Planning again makes the scratch afresh (same answer); discarding it is idempotent.
    const inc2 = await planDiskBackup(disk2, { scratchDir: f.scratchDir, bitmap: 'livemerge-P' });
    expect(inc2).toEqual(inc);
    await discardScratch(inc2);
    await discardScratch(inc2);
    expect(await fs.readdir(f.scratchDir)).toEqual([]);

    await discardBackupFiles([incFile, fullFile]);
    await discardBackupFiles([incFile, fullFile]);
    expect(await fs.readdir(f.repo)).toEqual([]);
  });

  it('redoes a leftover .part and copies a raw frozen base as a full backup', async () => {
    const root = await tmpRoot();
    const raw = path.join(root, 'base.raw');
    await runOk('qemu-img', ['create', '-q', '-f', 'raw', raw, String(SIZE)]);
    await writePatterns(raw, 'raw', [{ byte: 0x52, offset: 1 * M, length: 192 * K }]);
    const disk = frozen([{ path: raw, format: 'raw' }]);
    const plan = await planDiskBackup(disk, { scratchDir: root, bitmap: 'livemerge-P' });
    expect(plan.mode).toBe('full');
    expect(plan.reason).toMatch(/a raw image cannot hold a bitmap/);
    const file = path.join(root, 'repo', 'b1.qcow2');
    await fs.mkdir(path.dirname(file));
    await fs.writeFile(`${file}.part`, 'garbage from a copy that died');
    const c = await copyDiskBackup(disk, plan, { file });
    expect(c.status).toBe('copied');
    expect(await identical(file, raw, 'raw')).toBe(true);
    // The data of the raw file, whole clusters (qemu-img create allocates a raw file's first block too).
    expect(plan.extents).toContainEqual({ offset: 1 * M, length: 192 * K });
    expect(c.copiedBytes).toBe(totalLength(clustersOf(plan.extents.map((e) => ({ ...e, byte: 0 })))));
    expect((await fs.readdir(path.dirname(file))).sort()).toEqual(['b1.qcow2']);
  });
});

describe('full-backup fallbacks, per disk, with the reason', () => {
  async function chainOf(
    layers: Array<{ name: string; bitmaps: string[]; format?: Format }>,
  ): Promise<{ root: string; disk: FrozenDisk }> {
    const root = await tmpRoot();
    const chain: Array<{ path: string; format: Format }> = [];
    for (const [i, l] of layers.entries()) {
      const p = path.join(root, l.name);
      const format = l.format ?? 'qcow2';
      if (format === 'raw') await runOk('qemu-img', ['create', '-q', '-f', 'raw', p, String(SIZE)]);
      else
        await qcow2(
          p,
          chain[i - 1]
            ? { file: chain[i - 1]?.path ?? '', format: chain[i - 1]?.format ?? 'qcow2' }
            : undefined,
        );
      for (const b of l.bitmaps) await addBitmap(p, b);
      await writePatterns(p, format, [{ byte: 0x30 + i, offset: i * CLUSTER * 3, length: CLUSTER }]);
      chain.push({ path: p, format });
    }
    return { root, disk: frozen(chain) };
  }

  it('no bitmap asked: full, with the given reason', async () => {
    const { root, disk } = await chainOf([{ name: 'base', bitmaps: ['livemerge-P'] }]);
    expect((await planDiskBackup(disk, { scratchDir: root })).reason).toBe('no parent backup');
    const p = await planDiskBackup(disk, { scratchDir: root, reasonIfFull: 'a full backup was asked for' });
    expect(p).toMatchObject({ mode: 'full', reason: 'a full backup was asked for' });
  });

  it('the frozen leaf lacks the bitmap: missing', async () => {
    const { root, disk } = await chainOf([
      { name: 'base', bitmaps: ['livemerge-P'] },
      { name: 's1', bitmaps: [] },
    ]);
    const p = await planDiskBackup(disk, { scratchDir: root, bitmap: 'livemerge-P' });
    expect(p.mode).toBe('full');
    expect(p.reason).toMatch(/livemerge-P is missing on the frozen leaf .*s1/);
  });

  it('an image without the bitmap above one with it: a gap', async () => {
    const { root, disk } = await chainOf([
      { name: 'base', bitmaps: ['livemerge-P'] },
      { name: 's1', bitmaps: [] },
      { name: 's2', bitmaps: ['livemerge-P'] },
    ]);
    const p = await planDiskBackup(disk, { scratchDir: root, bitmap: 'livemerge-P' });
    expect(p.mode).toBe('full');
    expect(p.reason).toMatch(/^gap: .*s1 lacks bitmap livemerge-P which .*base below it carries/);
    expect(p.scratch).toBeUndefined();
    expect(await fs.readdir(root)).not.toContain('img-1.scratch.qcow2');
  });

  it('a bitmap left in-use by a crashed QEMU: inconsistent', async () => {
    const { root, disk } = await chainOf([
      { name: 'base', bitmaps: ['livemerge-P'] },
      { name: 's1', bitmaps: ['livemerge-P'] },
    ]);
    await crashWhileOpen(disk.chain[0]?.path ?? '');
    const p = await planDiskBackup(disk, { scratchDir: root, bitmap: 'livemerge-P' });
    expect(p.mode).toBe('full');
    expect(p.reason).toMatch(/base is inconsistent \(in use: QEMU did not close the image\)/);
  });

  it('an image held open for writing is not frozen: the plan fails on its lock (no force-share)', async () => {
    const { root, disk } = await chainOf([
      { name: 'base', bitmaps: ['livemerge-P'] },
      { name: 's1', bitmaps: ['livemerge-P'] },
    ]);
    const held = await holdOpen(disk.chain[1]?.path ?? '', 'qcow2');
    try {
      const e = await planDiskBackup(disk, { scratchDir: root, bitmap: 'livemerge-P' }).catch(
        (x: unknown) => x,
      );
      expect(e).toBeInstanceOf(QemuImgError);
      expect((e as QemuImgError).stderr).toMatch(/lock/);
    } finally {
      await held.close();
    }
    expect((await planDiskBackup(disk, { scratchDir: root, bitmap: 'livemerge-P' })).mode).toBe(
      'incremental',
    );
  });

  it('a raw base below the run does not break it: incremental from the qcow2 leaf', async () => {
    const { root, disk } = await chainOf([
      { name: 'base', bitmaps: [], format: 'raw' },
      { name: 's1', bitmaps: ['livemerge-P'] },
    ]);
    const p = await planDiskBackup(disk, { scratchDir: root, bitmap: 'livemerge-P' });
    expect(p).toMatchObject({ mode: 'incremental', extents: [{ offset: 3 * CLUSTER, length: CLUSTER }] });
    await discardScratch(p);
  });
});

describe('NBD export for a backup application', () => {
  it('serves the frozen disks read-only with base:allocation and the dirty bitmap; idempotent start and stop', async () => {
    const f = await buildFlow();
    await advanceFlow(f);
    const disk = frozen([
      { path: f.base, format: 'qcow2' },
      { path: f.s1, format: 'qcow2' },
    ]);
    const inc = await planDiskBackup(disk, { scratchDir: f.scratchDir, bitmap: 'livemerge-P' });
    const disk2 = frozen([{ path: f.base, format: 'qcow2' }], 'img-2', 'vdb');
    const full = await planDiskBackup(disk2, { scratchDir: f.scratchDir });
    const socketPath = path.join(f.root, 'nbd.sock');
    const pidFile = path.join(f.root, 'nbd.pid');
    pidFiles.push(pidFile);
    const opts = {
      disks: [
        { name: 'vda', plan: inc, disk },
        { name: 'vdb', plan: full, disk: disk2 },
      ],
      socketPath,
      pidFile,
    };
    const started = await startNbdExports(opts);
    expect(started.exports).toEqual([
      { name: 'vda', uri: `nbd+unix:///vda?socket=${socketPath}`, bitmap: 'livemerge-P' },
      { name: 'vdb', uri: `nbd+unix:///vdb?socket=${socketPath}` },
    ]);
    // Detached: not a child of this process.
    const stat = await fs.readFile(`/proc/${started.pid}/stat`, 'utf8');
    expect(Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])).not.toBe(process.pid);
    expect(await startNbdExports(opts)).toEqual(started);

    const [vda, vdb] = started.exports;
    const map = await readNbdDirtyMap(vda?.uri ?? '', 'livemerge-P');
    expect(mergeExtents(map.filter((e) => e.dirty))).toEqual(inc.extents);
    expect(totalLength(map)).toBe(SIZE);
    const contexts = await runNbdTool('nbdinfo', ['--list', '--json', `nbd+unix:///?socket=${socketPath}`]);
    const listed = JSON.parse(contexts) as { exports: Array<{ 'export-name': string; contexts?: string[] }> };
    const ctx = (n: string): string[] => listed.exports.find((e) => e['export-name'] === n)?.contexts ?? [];
    expect(ctx('vda')).toEqual(expect.arrayContaining(['base:allocation', 'qemu:dirty-bitmap:livemerge-P']));
    expect(ctx('vdb')).toContain('base:allocation');
    expect(ctx('vdb').some((c) => c.startsWith('qemu:dirty-bitmap:'))).toBe(false);

    for (const [e, leaf] of [
      [vda, f.s1],
      [vdb, f.base],
    ] as const) {
      const out = path.join(f.root, `${e?.name}.raw`);
      await runNbdTool('nbdcopy', [e?.uri ?? '', out]);
      const r = await runTool('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', out, leaf]);
      expect(r.code, r.stderr).toBe(0);
    }
    // Read-only: a write is refused.
    const w = await runTool('nbdcopy', [path.join(f.root, 'vda.raw'), vda?.uri ?? '']);
    expect(w.code).not.toBe(0);

    await stopNbdExports(pidFile);
    expect(await liveDaemonPid(pidFile)).toBeUndefined();
    expect(await daemonsUnder(f.root)).toEqual([]);
    await fs.access(pidFile).then(
      () => expect.fail('pid file left'),
      () => undefined,
    );
    await stopNbdExports(pidFile);
    await discardScratch(inc);
  });
});

describe('abort and daemon errors', () => {
  it('an aborted copy leaves no daemon and no .part', async () => {
    const root = await tmpRoot();
    const big = path.join(root, 'big');
    await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', big, String(64 * M)]);
    await runOk('qemu-io', ['-f', 'qcow2', '-c', `write -P 0x77 0 ${32 * M}`, big]);
    const disk = { ...frozen([{ path: big, format: 'qcow2' }]), capacity: 64 * M };
    const plan = await planDiskBackup(disk, { scratchDir: root });
    const file = path.join(root, 'repo', 'b1.qcow2');
    const ac = new AbortController();
    let seen: number[] = [];
    // At 1 MiB/s the job is still running when the first progress report comes: abort there.
    const p = copyDiskBackup(disk, plan, {
      file,
      bandwidthBytesPerSec: 1 * M,
      signal: ac.signal,
      onProgress: (copied, total) => {
        seen = [copied, total];
        ac.abort(new Error('operator cancelled'));
      },
    });
    await expect(p).rejects.toThrow('operator cancelled');
    expect(seen[1]).toBe(64 * M);
    expect(await daemonsUnder(root)).toEqual([]);
    expect(await fs.readdir(path.dirname(file))).toEqual([]);
  });

  it('a daemon still running when Node exits is killed by the exit hook', async () => {
    const root = await tmpRoot();
    const img = path.join(root, 'img');
    await qcow2(img);
    // The script runs the 'exit' handlers without exiting (process.emit), so the daemon's parent is alive
    // and its parent-death signal cannot be what ends it: only the hook can.
    const script = [
      `const { startStorageDaemon } = require(${JSON.stringify(path.resolve('src/backup/storage-daemon.ts'))});`,
      `startStorageDaemon({ runDir: ${JSON.stringify(root)}, args: ['--blockdev', 'driver=file,node-name=f,filename=${img}'] })`,
      `  .then(async (d) => {`,
      `    process.emit('exit', 0);`,
      `    const alive = new Promise((r) => setTimeout(() => { d.kill(); r('still running after 10 s'); }, 10000).unref());`,
      `    console.log(JSON.stringify(await Promise.race([d.exited, alive])));`,
      `  });`,
    ].join('\n');
    const out = await runOk(path.resolve('node_modules/.bin/tsx'), ['-e', script]);
    expect(JSON.parse(out.trim())).toEqual({ code: null, signal: 'SIGKILL' });
    expect(await daemonsUnder(root)).toEqual([]);
  });

  it('a daemon still running when Node is SIGKILLed dies with it (its parent-death signal)', async () => {
    const root = await tmpRoot();
    const img = path.join(root, 'img');
    await qcow2(img);
    const script = [
      `const { startStorageDaemon } = require(${JSON.stringify(path.resolve('src/backup/storage-daemon.ts'))});`,
      `startStorageDaemon({ runDir: ${JSON.stringify(root)}, args: ['--blockdev', 'driver=file,node-name=f,filename=${img}'] })`,
      `  .then((d) => { console.log(d.pid); process.kill(process.pid, 'SIGKILL'); });`,
    ].join('\n');
    // No exit handler runs: only the kernel can end the daemon.
    const r = await runTool(path.resolve('node_modules/.bin/tsx'), ['-e', script]);
    const pid = Number(r.stdout.trim());
    expect(pid).toBeGreaterThan(0);
    await pollUntil(
      async () => (await daemonsUnder(root)).length === 0,
      10_000,
      'the daemon of a SIGKILLed Node process to be gone',
    );
  });

  it('a daemon that cannot start says why; a failing QMP command carries class and desc', async () => {
    const root = await tmpRoot();
    const missing = path.join(root, 'no-such-image');
    const err = await startStorageDaemon({
      runDir: root,
      args: ['--blockdev', `driver=file,node-name=f,filename=${missing}`],
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StorageDaemonError);
    expect((err as StorageDaemonError).stderr).toMatch(/No such file or directory/);

    const img = path.join(root, 'img');
    await qcow2(img);
    const d = await startStorageDaemon({
      runDir: root,
      args: [
        '--blockdev',
        `driver=file,node-name=f,filename=${img}`,
        '--blockdev',
        'driver=qcow2,node-name=n,file=f',
      ],
    });
    try {
      const q = await d.qmp.execute<Array<{ 'node-name': string }>>('query-named-block-nodes');
      expect(q.map((n) => n['node-name'])).toEqual(expect.arrayContaining(['f', 'n']));
      const e = await d.qmp
        .execute('block-dirty-bitmap-merge', { node: 'n', target: 'nope', bitmaps: ['nope2'] })
        .catch((x: unknown) => x);
      expect(e).toBeInstanceOf(QmpError);
      expect((e as QmpError).errorClass).toBe('GenericError');
      expect((e as QmpError).desc).toMatch(/nope/);
    } finally {
      await d.stop();
    }
    expect(await daemonsUnder(root)).toEqual([]);
    // Both sides agree it is gone.
    expect(d.qmp.closed).toBe(true);
  });
});
