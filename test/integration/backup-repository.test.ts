// The backup repository, restore and prune on real qcow2 files (no Temporal, no libvirt): backups are built
// by hand from a "guest disk" written at t1, t2, t3 — a full backup is `qemu-img convert` of the guest at t1,
// each incremental a qcow2 backed (relative name) by the previous backup holding only what the guest wrote
// since. Restores must read byte for byte what the guest read at that time, with no backing file; prunes
// must keep every remaining point restoring byte for byte and delete exactly the oldest's files, also when
// re-run after a crash at each step.
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  BackupCatalogCorrupt,
  BackupChainBroken,
  BackupNotFound,
  BackupRequestInvalid,
} from '../../src/backup/errors';
import { pruneBackups, type PruneStep } from '../../src/backup/prune';
import {
  diskFile,
  fromCatalogFile,
  lastBackup,
  readCatalog,
  recordBackup,
  removeBackupRecord,
  toCatalogFile,
  vmDir,
} from '../../src/backup/repository';
import { restoreBackup, restoreBackupDisk } from '../../src/backup/restore';
import type { BackupCatalog, BackupDisk, BackupRecord } from '../../src/backup/types';
import { coldPull, coldPullState } from '../../src/merge/cold';
import { LockTimeout } from '../../src/storage/errors';
import {
  dumpRaw,
  imageInfo,
  makeTmpDir,
  readPatterns,
  runOk,
  sameGuestView,
  writePatterns,
  type Pattern,
} from '../helpers/qemu';

const K = 1024;
const SIZE = 1024 * K;

// Three disks: A in every backup, B only in the first (then removed from the VM), C added at t3.
//   A t1: AAAA------------   t2: --BBBB-----e----   t3: DD---CCCC-------    (64 KiB per letter)
const DISKS = ['A', 'B', 'C'] as const;
type Disk = (typeof DISKS)[number];
const WRITES: Record<Disk, Pattern[][]> = {
  A: [
    [{ byte: 0x41, offset: 0, length: 256 * K }],
    [
      { byte: 0x42, offset: 128 * K, length: 256 * K },
      { byte: 0x65, offset: 704 * K + 512, length: 1 * K },
    ],
    [
      { byte: 0x43, offset: 320 * K, length: 256 * K },
      { byte: 0x44, offset: 0, length: 128 * K },
    ],
  ],
  B: [[{ byte: 0x61, offset: 64 * K, length: 128 * K }], [], []],
  C: [[], [], [{ byte: 0x71, offset: 512 * K, length: 192 * K }]],
};
/** Which disks each backup (t1, t2, t3) has. */
const IN_BACKUP: Disk[][] = [['A', 'B'], ['A'], ['A', 'C']];

/** The guest's view of `disk` after the writes of t1..t(at+1), as constant-byte segments covering it. */
function guestView(disk: Disk, at: number): Pattern[] {
  const bytes = new Uint8Array(SIZE);
  for (const ws of WRITES[disk].slice(0, at + 1))
    for (const w of ws) bytes.fill(w.byte, w.offset, w.offset + w.length);
  const segs: Pattern[] = [];
  for (let i = 0; i < SIZE;) {
    let j = i;
    while (j < SIZE && bytes[j] === bytes[i]) j++;
    segs.push({ byte: bytes[i] ?? 0, offset: i, length: j - i });
    i = j;
  }
  return segs;
}

const tmpDirs: string[] = [];
afterEach(async () => {
  for (const d of tmpDirs.splice(0)) await fs.rm(d, { recursive: true, force: true });
});

async function tmp(prefix: string): Promise<string> {
  const d = await makeTmpDir(prefix);
  tmpDirs.push(d);
  return d;
}

interface Repo {
  root: string;
  repo: string;
  vmId: string;
  image: Record<Disk, string>;
  ids: string[];
  records: BackupRecord[];
  /** Raw dump of the guest's disk at backup i. */
  view: (disk: Disk, i: number) => string;
}

/** The guest disks, three backups in the repository (files only: recording is the tests' business). */
async function buildBackups(): Promise<Repo> {
  const root = await tmp('livemerge-backup-');
  const repo = path.join(root, 'repo');
  const guest = path.join(root, 'guest');
  const views = path.join(root, 'views');
  await Promise.all([fs.mkdir(repo), fs.mkdir(guest), fs.mkdir(views)]);
  const vmId = randomUUID();
  const image = { A: randomUUID(), B: randomUUID(), C: randomUUID() };
  const ids = [randomUUID(), randomUUID(), randomUUID()];
  const view = (disk: Disk, i: number): string => path.join(views, `${disk}-t${i + 1}.raw`);
  const records: BackupRecord[] = [];
  for (const d of DISKS) {
    await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', path.join(guest, `${d}.qcow2`), String(SIZE)]);
    await fs.mkdir(path.join(repo, vmId, image[d]), { recursive: true });
  }
  for (const [i, backupId] of ids.entries()) {
    const parent = ids[i - 1] ?? null;
    const disks: BackupDisk[] = [];
    for (const d of DISKS) {
      const g = path.join(guest, `${d}.qcow2`);
      const writes = WRITES[d][i] ?? [];
      if (writes.length > 0) await writePatterns(g, 'qcow2', writes);
      await dumpRaw(g, 'qcow2', view(d, i));
      if (!IN_BACKUP[i]?.includes(d)) continue;
      const file = diskFile(repo, vmId, image[d], backupId);
      const incremental = parent !== null && IN_BACKUP[i - 1]?.includes(d) === true;
      if (incremental) {
        // Only what the guest wrote since the parent, over the parent's file (relative backing name).
        await runOk('qemu-img', [
          'create',
          '-q',
          '-f',
          'qcow2',
          '-b',
          `${parent}.qcow2`,
          '-F',
          'qcow2',
          file,
        ]);
        if (writes.length > 0) await writePatterns(file, 'qcow2', writes);
      } else {
        await runOk('qemu-img', ['convert', '-q', '-f', 'qcow2', '-O', 'qcow2', g, file]);
      }
      const changed = (incremental ? writes : guestView(d, i).filter((s) => s.byte !== 0)).reduce(
        (n, w) => n + w.length,
        0,
      );
      disks.push({
        target: `vd${d.toLowerCase()}`,
        imageId: image[d],
        mode: incremental ? 'incremental' : 'full',
        changedBytes: changed,
        copiedBytes: changed,
        extents: incremental ? writes.length : 1,
        file,
        capacity: SIZE,
      });
    }
    records.push({
      backupId,
      createdAt: new Date(Date.UTC(2026, 0, i + 1)).toISOString(),
      parentBackupId: parent,
      disks,
    });
  }
  // The views are what the tests compare against: make sure they hold what they should.
  for (const d of DISKS) for (const i of [0, 1, 2]) await readPatterns(view(d, i), 'raw', guestView(d, i));
  return { root, repo, vmId, image, ids, records, view };
}

async function recordAll(r: Repo): Promise<void> {
  for (const rec of r.records) expect(await recordBackup(r.repo, r.vmId, rec)).toBe('recorded');
}

/** Every file under the VM's directory, relative to it. */
async function listVm(r: Repo): Promise<string[]> {
  const out: string[] = [];
  const dir = path.join(r.repo, r.vmId);
  for (const e of await fs.readdir(dir, { withFileTypes: true, recursive: true }))
    if (e.isFile()) out.push(path.relative(dir, path.join(e.parentPath, e.name)));
  return out.sort();
}

/** Restores backup i into a fresh directory and checks every disk against the guest's view at t(i+1). */
async function assertRestores(r: Repo, i: number): Promise<void> {
  const backupId = r.ids[i] as string;
  const target = await tmp('livemerge-restore-');
  const res = await restoreBackup({ repository: r.repo, vmId: r.vmId, backupId, targetDir: target });
  const want = IN_BACKUP[i] ?? [];
  expect(res.disks.map((d) => d.imageId).sort()).toEqual(want.map((d) => r.image[d]).sort());
  for (const d of want) {
    const out = res.disks.find((x) => x.imageId === r.image[d]);
    expect(out).toMatchObject({ target: `vd${d.toLowerCase()}`, status: 'restored' });
    const file = path.join(target, `${r.image[d]}.qcow2`);
    expect(out?.path).toBe(file);
    const info = await imageInfo(file);
    expect(info.format).toBe('qcow2');
    expect(info['backing-filename'], `restored ${d} of backup ${i + 1} is self-contained`).toBeUndefined();
    expect(info['virtual-size']).toBe(SIZE);
    expect(await sameGuestView(file, 'qcow2', r.view(d, i), 'raw'), `${d} at t${i + 1}`).toBe(true);
    await readPatterns(file, 'qcow2', guestView(d, i));
  }
  expect((await fs.readdir(target)).sort()).toEqual(want.map((d) => `${r.image[d]}.qcow2`).sort());
}

const fileOf = (r: Repo, d: Disk, i: number): string => `${r.image[d]}/${r.ids[i]}.qcow2`;

describe('repository paths and catalog', () => {
  it('lays out backup files and converts catalog paths both ways, refusing ids and paths that leave it', async () => {
    const repo = await tmp('livemerge-backup-');
    const [vm, img, b] = [randomUUID(), randomUUID(), randomUUID()];
    expect(vmDir(repo, vm)).toBe(path.join(repo, vm));
    expect(diskFile(repo, vm, img, b)).toBe(path.join(repo, vm, img, `${b}.qcow2`));
    expect(toCatalogFile(repo, vm, diskFile(repo, vm, img, b))).toBe(`${img}/${b}.qcow2`);
    expect(fromCatalogFile(repo, vm, `${img}/${b}.qcow2`)).toBe(diskFile(repo, vm, img, b));
    for (const bad of [
      () => diskFile(repo, '../x', img, b),
      () => diskFile(repo, vm, img.toUpperCase(), b),
      () => diskFile('relative/repo', vm, img, b),
      () => fromCatalogFile(repo, vm, '../other/x.qcow2'),
      () => fromCatalogFile(repo, vm, '/etc/passwd'),
      () => toCatalogFile(repo, vm, path.join(repo, 'elsewhere.qcow2')),
    ])
      expect(bad).toThrow(BackupRequestInvalid);
  });

  it('reads a missing catalog as empty and refuses one it cannot parse', async () => {
    const r = await buildBackups();
    const empty = await readCatalog(r.repo, r.vmId);
    expect(empty).toEqual({ version: 1, vmId: r.vmId, backups: [] });
    expect(lastBackup(empty)).toBeUndefined();
    const file = path.join(r.repo, r.vmId, 'backups.json');
    for (const text of ['{"version":1,', '{"version":2,"vmId":"x","backups":[]}', '[]']) {
      await fs.writeFile(file, text);
      await expect(readCatalog(r.repo, r.vmId)).rejects.toBeInstanceOf(BackupCatalogCorrupt);
    }
    // Valid JSON, valid shape, but another VM's catalog or a file outside the layout: also corrupt.
    const other: BackupCatalog = { version: 1, vmId: randomUUID(), backups: [] };
    await fs.writeFile(file, JSON.stringify(other));
    await expect(readCatalog(r.repo, r.vmId)).rejects.toThrow(/belongs to VM/);
    const rec = r.records[0] as BackupRecord;
    const escaping = { ...rec, disks: rec.disks.map((d) => ({ ...d, file: '../../etc/passwd' })) };
    await fs.writeFile(file, JSON.stringify({ version: 1, vmId: r.vmId, backups: [escaping] }));
    await expect(readCatalog(r.repo, r.vmId)).rejects.toBeInstanceOf(BackupCatalogCorrupt);
  });

  it('records atomically under the lock, relative on disk and absolute when read; a duplicate is already-recorded', async () => {
    const r = await buildBackups();
    const dir = path.join(r.repo, r.vmId);
    const catalogFile = path.join(dir, 'backups.json');
    const first = r.records[0] as BackupRecord;
    // The same record from five concurrent callers (a retried activity racing itself): one write wins.
    let reads = 0;
    let writing = true;
    const reader = (async () => {
      // Any read during the writes sees no catalog or a whole one (rename is atomic): never a torn file.
      while (writing) {
        const c = await readCatalog(r.repo, r.vmId);
        expect(c.backups.length).toBeLessThanOrEqual(1);
        reads++;
      }
    })();
    const outcomes = await Promise.all(Array.from({ length: 5 }, () => recordBackup(r.repo, r.vmId, first)));
    writing = false;
    await reader;
    expect(reads).toBeGreaterThan(0);
    expect(outcomes.filter((o) => o === 'recorded')).toHaveLength(1);
    expect(outcomes.filter((o) => o === 'already-recorded')).toHaveLength(4);
    const stored = JSON.parse(await fs.readFile(catalogFile, 'utf8')) as BackupCatalog;
    expect(stored.backups.map((b) => b.disks.map((d) => d.file))).toEqual([
      [fileOf(r, 'A', 0), fileOf(r, 'B', 0)],
    ]);
    const before = await fs.readFile(catalogFile, 'utf8');
    expect(await recordBackup(r.repo, r.vmId, first)).toBe('already-recorded');
    expect(await fs.readFile(catalogFile, 'utf8')).toBe(before);
    // Relative files, as backups.json stores them, name the same places.
    const second = r.records[1] as BackupRecord;
    const relative = {
      ...second,
      disks: second.disks.map((d) => ({ ...d, file: toCatalogFile(r.repo, r.vmId, d.file) })),
    };
    expect(await recordBackup(r.repo, r.vmId, relative)).toBe('recorded');
    expect(await recordBackup(r.repo, r.vmId, r.records[2] as BackupRecord)).toBe('recorded');
    const c = await readCatalog(r.repo, r.vmId);
    expect(c.backups).toEqual(r.records);
    expect(lastBackup(c)?.backupId).toBe(r.ids[2]);
    // No temp file or lock left behind.
    expect((await fs.readdir(dir)).filter((n) => n.startsWith('.'))).toEqual([]);
    expect(await removeBackupRecord(r.repo, r.vmId, randomUUID())).toBe('not-recorded');
  });

  it('waits for the catalog lock another process holds (LockTimeout, nothing written), then records', async () => {
    const r = await buildBackups();
    const dir = path.join(r.repo, r.vmId);
    // An owner record as src/storage/lock.ts writes it, of a process this one cannot prove dead.
    const owner = {
      token: 'other',
      host: os.hostname(),
      bootId: null,
      pidNs: null,
      pid: process.pid,
      pidStart: null,
    };
    await fs.writeFile(
      path.join(dir, '.backups.lock'),
      JSON.stringify({ ...owner, acquiredAt: '', purpose: 'test' }),
    );
    const first = r.records[0] as BackupRecord;
    await expect(recordBackup(r.repo, r.vmId, first, { timeoutMs: 200 })).rejects.toBeInstanceOf(LockTimeout);
    await expect(
      pruneBackups({ repository: r.repo, vmId: r.vmId, keep: 1 }, { lock: { timeoutMs: 200 } }),
    ).rejects.toBeInstanceOf(LockTimeout);
    expect(await fs.readdir(dir)).not.toContain('backups.json');
    await fs.rm(path.join(dir, '.backups.lock'));
    expect(await recordBackup(r.repo, r.vmId, first)).toBe('recorded');
  });

  it('refuses bad records before writing anything', async () => {
    const r = await buildBackups();
    const catalogFile = path.join(r.repo, r.vmId, 'backups.json');
    const [b1, b2, b3] = r.records as [BackupRecord, BackupRecord, BackupRecord];
    const withDisk = (rec: BackupRecord, patch: Partial<BackupDisk>): BackupRecord => ({
      ...rec,
      disks: rec.disks.map((d, i) => (i === 0 ? { ...d, ...patch } : d)),
    });
    const refused = async (
      vmId: string,
      rec: BackupRecord,
      reason: BackupRequestInvalid['reason'],
      repo = r.repo,
    ): Promise<void> => {
      const e: unknown = await recordBackup(repo, vmId, rec).catch((x: unknown) => x);
      expect(e, JSON.stringify(rec).slice(0, 80)).toBeInstanceOf(BackupRequestInvalid);
      expect(e).toMatchObject({ code: 'BACKUP_REQUEST_INVALID', reason, retryable: false });
    };
    await refused('not-a-uuid', b1, 'invalid-id');
    await refused(r.vmId, b1, 'invalid-path', 'relative/repo');
    await refused(r.vmId, { ...b1, backupId: 'B1' }, 'invalid-record');
    await refused(r.vmId, withDisk(b1, { file: '../../../etc/passwd' }), 'invalid-path');
    await refused(r.vmId, withDisk(b1, { file: (b2.disks[0] as BackupDisk).file }), 'invalid-path');
    await refused(r.vmId, withDisk(b1, { capacity: SIZE * 2 }), 'invalid-record');
    await refused(r.vmId, { ...b1, disks: [] }, 'invalid-record');
    await refused(r.vmId, { ...b2, parentBackupId: null }, 'invalid-record'); // incremental without parent
    await refused(r.vmId, b2, 'invalid-record'); // its parent is not recorded yet
    await refused(r.vmId, { ...b1, backupId: randomUUID() }, 'invalid-path'); // files named after another id
    await expect(fs.stat(catalogFile)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await recordBackup(r.repo, r.vmId, b1)).toBe('recorded');
    const before = await fs.readFile(catalogFile, 'utf8');
    await refused(r.vmId, b3, 'invalid-record'); // parent b2 is not the newest (it is not there)
    // A full disk whose file in fact backs onto something, a missing file.
    await refused(r.vmId, withDisk(b2, { mode: 'full' }), 'invalid-record');
    const missing = randomUUID();
    await refused(
      r.vmId,
      {
        ...b2,
        backupId: missing,
        disks: [{ ...(b2.disks[0] as BackupDisk), file: diskFile(r.repo, r.vmId, r.image.A, missing) }],
      },
      'invalid-record',
    );
    // A symlink planted as a backup file.
    const planted = randomUUID();
    await fs.symlink(b1.disks[0]?.file ?? '', diskFile(r.repo, r.vmId, r.image.A, planted));
    await refused(
      r.vmId,
      {
        ...b2,
        backupId: planted,
        parentBackupId: b1.backupId,
        disks: [{ ...(b1.disks[0] as BackupDisk), file: diskFile(r.repo, r.vmId, r.image.A, planted) }],
      },
      'invalid-path',
    );
    expect(await fs.readFile(catalogFile, 'utf8')).toBe(before);
  });
});

describe('restore', () => {
  it('restores every point to self-contained files that read what the guest read then; a re-run is already-restored', async () => {
    const r = await buildBackups();
    await recordAll(r);
    for (const i of [0, 1, 2]) await assertRestores(r, i);
    const target = await tmp('livemerge-restore-');
    const req = {
      repository: r.repo,
      vmId: r.vmId,
      backupId: r.ids[1] as string,
      imageId: r.image.A,
      targetDir: target,
    };
    expect(await restoreBackupDisk(req)).toMatchObject({ status: 'restored', target: 'vda' });
    const out = path.join(target, `${r.image.A}.qcow2`);
    const ino = (await fs.stat(out)).ino;
    expect(await restoreBackupDisk(req)).toMatchObject({ status: 'already-restored', path: out });
    expect((await fs.stat(out)).ino).toBe(ino);
    // Negative control: the comparison does tell two points apart.
    expect(await sameGuestView(out, 'qcow2', r.view('A', 2), 'raw')).toBe(false);
    await expect(readPatterns(out, 'qcow2', guestView('A', 2))).rejects.toThrow(/pattern check/);
    // A .part left by an interrupted restore is replaced, not trusted.
    const req3 = { ...req, backupId: r.ids[2] as string, targetDir: await tmp('livemerge-restore-') };
    await fs.writeFile(path.join(req3.targetDir, `${r.image.A}.qcow2.part`), 'torn');
    expect(await restoreBackupDisk(req3)).toMatchObject({ status: 'restored' });
    expect(await fs.readdir(req3.targetDir)).toEqual([`${r.image.A}.qcow2`]);
    expect(
      await sameGuestView(path.join(req3.targetDir, `${r.image.A}.qcow2`), 'qcow2', r.view('A', 2), 'raw'),
    ).toBe(true);
  });

  it('refuses an unknown backup or disk, a missing or relative target directory', async () => {
    const r = await buildBackups();
    await recordAll(r);
    const targetDir = await tmp('livemerge-restore-');
    const base = { repository: r.repo, vmId: r.vmId, backupId: r.ids[0] as string, targetDir };
    await expect(restoreBackup({ ...base, backupId: randomUUID() })).rejects.toBeInstanceOf(BackupNotFound);
    await expect(restoreBackupDisk({ ...base, imageId: r.image.C })).rejects.toBeInstanceOf(BackupNotFound);
    await expect(restoreBackup({ ...base, targetDir: path.join(targetDir, 'nope') })).rejects.toMatchObject({
      code: 'BACKUP_REQUEST_INVALID',
      reason: 'target-dir-missing',
    });
    await expect(restoreBackup({ ...base, targetDir: 'relative' })).rejects.toBeInstanceOf(
      BackupRequestInvalid,
    );
    await expect(restoreBackup({ ...base, backupId: '../x' })).rejects.toBeInstanceOf(BackupRequestInvalid);
    expect(await fs.readdir(targetDir)).toEqual([]);
  });
});

describe('prune', () => {
  it('keep=2 then keep=1: merges the oldest into its child, deletes exactly its files, every point left restores', async () => {
    const r = await buildBackups();
    await recordAll(r);
    const [b1, b2, b3] = r.ids as [string, string, string];
    // A backup being copied (not recorded yet) must survive any prune.
    const inProgress = diskFile(r.repo, r.vmId, r.image.A, randomUUID());
    await fs.copyFile(diskFile(r.repo, r.vmId, r.image.A, b3), inProgress);
    const before = await listVm(r);

    expect(await pruneBackups({ repository: r.repo, vmId: r.vmId, keep: 2 })).toEqual({
      removed: [b1],
      kept: [b2, b3],
    });
    expect(await listVm(r)).toEqual(before.filter((f) => f !== fileOf(r, 'A', 0) && f !== fileOf(r, 'B', 0)));
    expect((await imageInfo(diskFile(r.repo, r.vmId, r.image.A, b2)))['backing-filename']).toBeUndefined();
    expect((await imageInfo(diskFile(r.repo, r.vmId, r.image.A, b3)))['backing-filename']).toBe(
      `${b2}.qcow2`,
    );
    const c = await readCatalog(r.repo, r.vmId);
    expect(c.backups.map((b) => [b.backupId, b.parentBackupId])).toEqual([
      [b2, null],
      [b3, b2],
    ]);
    await assertRestores(r, 1);
    await assertRestores(r, 2);
    // Nothing more to do at keep=2.
    expect(await pruneBackups({ repository: r.repo, vmId: r.vmId, keep: 2 })).toEqual({
      removed: [],
      kept: [b2, b3],
    });

    const mid = await listVm(r);
    expect(await pruneBackups({ repository: r.repo, vmId: r.vmId, keep: 1 })).toEqual({
      removed: [b2],
      kept: [b3],
    });
    expect(await listVm(r)).toEqual(mid.filter((f) => f !== fileOf(r, 'A', 1)));
    expect((await imageInfo(diskFile(r.repo, r.vmId, r.image.A, b3)))['backing-filename']).toBeUndefined();
    await assertRestores(r, 2);
    expect(await fs.stat(inProgress)).toBeTruthy();
  });

  it('keep=1 from three points removes the two oldest in order', async () => {
    const r = await buildBackups();
    await recordAll(r);
    const [b1, b2, b3] = r.ids as [string, string, string];
    expect(await pruneBackups({ repository: r.repo, vmId: r.vmId, keep: 1 })).toEqual({
      removed: [b1, b2],
      kept: [b3],
    });
    expect(await listVm(r)).toEqual(['backups.json', fileOf(r, 'A', 2), fileOf(r, 'C', 2)].sort());
    await assertRestores(r, 2);
  });

  it('refuses keep < 1, a non-integer keep and bad ids before touching anything', async () => {
    const r = await buildBackups();
    await recordAll(r);
    const before = await listVm(r);
    for (const keep of [0, -1, 1.5, Number.NaN])
      await expect(pruneBackups({ repository: r.repo, vmId: r.vmId, keep })).rejects.toMatchObject({
        code: 'BACKUP_REQUEST_INVALID',
        reason: 'invalid-keep',
      });
    await expect(pruneBackups({ repository: r.repo, vmId: 'x/../..', keep: 1 })).rejects.toBeInstanceOf(
      BackupRequestInvalid,
    );
    expect(await listVm(r)).toEqual(before);
  });

  // A crash after each durable step: the re-run must end exactly where an uninterrupted prune ends.
  const crashes: Array<{ name: string; crash: (r: Repo) => Promise<void> }> = [
    {
      name: 'after the pull alone (child rebased, catalog still names the oldest)',
      crash: async (r) => {
        const req = {
          dir: path.join(r.repo, r.vmId, r.image.A),
          chain: [
            { file: `${r.ids[0]}.qcow2`, format: 'qcow2' as const },
            { file: `${r.ids[1]}.qcow2`, format: 'qcow2' as const },
          ],
          baseIndex: 0,
          topIndex: 1,
        };
        expect(await coldPullState(req)).toMatchObject({ status: 'pending' });
        await coldPull(req);
        expect(await coldPullState(req)).toMatchObject({ status: 'done' });
      },
    },
    ...(['pulled', 'journaled', 'cataloged'] as PruneStep[]).map((at) => ({
      name: `after step '${at}'`,
      crash: async (r: Repo) => {
        const crash = new Error(`crash after ${at}`);
        await expect(
          pruneBackups(
            { repository: r.repo, vmId: r.vmId, keep: 2 },
            {
              onStep: (s) => {
                if (s === at) throw crash;
              },
            },
          ),
        ).rejects.toBe(crash);
      },
    })),
  ];
  for (const { name, crash } of crashes) {
    it(`a re-run ${name} converges`, async () => {
      const r = await buildBackups();
      await recordAll(r);
      const [b1, b2, b3] = r.ids as [string, string, string];
      const before = await listVm(r);
      await crash(r);
      // The crash really left what its name says: b2 self-contained; from 'journaled' on a journal; from
      // 'cataloged' on b1 gone from the catalog but its files still there.
      const journal = path.join(r.repo, r.vmId, '.prune-pending.json');
      const journaled = name.includes("'journaled'") || name.includes("'cataloged'");
      const cataloged = name.includes("'cataloged'");
      expect((await imageInfo(diskFile(r.repo, r.vmId, r.image.A, b2)))['backing-filename']).toBeUndefined();
      expect(
        await fs.stat(journal).then(
          () => true,
          () => false,
        ),
      ).toBe(journaled);
      expect((await readCatalog(r.repo, r.vmId)).backups.some((b) => b.backupId === b1)).toBe(!cataloged);
      expect(await listVm(r)).toEqual(journaled ? [...before, '.prune-pending.json'].sort() : before);
      // Whatever the crash left, the catalog still restores every point it lists.
      const c = await readCatalog(r.repo, r.vmId);
      for (const b of c.backups) await assertRestores(r, r.ids.indexOf(b.backupId));
      const res = await pruneBackups({ repository: r.repo, vmId: r.vmId, keep: 2 });
      expect(res.kept).toEqual([b2, b3]);
      expect(res.removed).toEqual([b1]);
      expect(await listVm(r)).toEqual(
        before.filter((f) => f !== fileOf(r, 'A', 0) && f !== fileOf(r, 'B', 0)),
      );
      expect((await readCatalog(r.repo, r.vmId)).backups.map((b) => [b.backupId, b.parentBackupId])).toEqual([
        [b2, null],
        [b3, b2],
      ]);
      expect((await imageInfo(diskFile(r.repo, r.vmId, r.image.A, b2)))['backing-filename']).toBeUndefined();
      await assertRestores(r, 1);
      await assertRestores(r, 2);
      expect(await pruneBackups({ repository: r.repo, vmId: r.vmId, keep: 2 })).toEqual({
        removed: [],
        kept: [b2, b3],
      });
    });
  }

  it('refuses, deleting nothing, when a file disagrees with the catalog', async () => {
    const r = await buildBackups();
    await recordAll(r);
    // b2's file of A rewritten to back onto nothing the pull knows (a foreign header): neither before nor after.
    const b2A = diskFile(r.repo, r.vmId, r.image.A, r.ids[1] as string);
    await fs.copyFile(
      diskFile(r.repo, r.vmId, r.image.A, r.ids[0] as string),
      path.join(r.root, 'other.qcow2'),
    );
    await runOk('qemu-img', [
      'rebase',
      '-q',
      '-u',
      '-f',
      'qcow2',
      '-b',
      '../../../other.qcow2',
      '-F',
      'qcow2',
      b2A,
    ]);
    const before = await listVm(r);
    const catalog = await fs.readFile(path.join(r.repo, r.vmId, 'backups.json'), 'utf8');
    await expect(pruneBackups({ repository: r.repo, vmId: r.vmId, keep: 1 })).rejects.toBeInstanceOf(
      BackupChainBroken,
    );
    expect(await listVm(r)).toEqual(before);
    expect(await fs.readFile(path.join(r.repo, r.vmId, 'backups.json'), 'utf8')).toBe(catalog);
  });
});
