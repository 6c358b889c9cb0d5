// Two processes updating one image's metadata concurrently never lose an update, and a reader never
// sees a torn JSON document. Also: stale-lock breaking and the cross-host timeout.
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LockTimeout } from '../../src/storage/errors';
import { lockOwner, withLock, type LockOwner } from '../../src/storage/lock';
import { VolumeMetadataSchema } from '../../src/storage/metadata';
import { StorageDomain } from '../../src/storage/storage-domain';
import { makeTmpDir } from '../fixtures/storage/helpers';

const WORKER = path.resolve(__dirname, '../fixtures/storage/race-worker.ts');
const UPDATES_PER_WORKER = 250;

let tmp: string;
const children: ChildProcess[] = [];

beforeEach(async () => {
  tmp = await makeTmpDir();
});
afterEach(async () => {
  for (const c of children.splice(0)) if (c.exitCode === null) c.kill('SIGKILL');
  await fs.rm(tmp, { recursive: true, force: true });
});

function startWorker(args: string[]): {
  child: ChildProcess;
  ready: Promise<void>;
  exited: Promise<number | null>;
} {
  const child = fork(WORKER, args, {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  children.push(child);
  const ready = new Promise<void>((resolve, reject) => {
    child.on('message', (m) => m === 'ready' && resolve());
    child.once('exit', (code) => reject(new Error(`worker exited early (${code})`)));
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, ready, exited };
}

describe('image lock across processes', () => {
  it('loses no update and never exposes torn metadata (2 processes × 250 updates)', async () => {
    const sd = randomUUID();
    const domain = await StorageDomain.create(tmp, sd);
    const base = await domain.createImage({ format: 'qcow2', capacity: 1 << 20 });
    const initialGeneration = base.generation;
    const metaFile = path.join(domain.imageDir(base.imageId), `${base.volumeId}.meta.json`);

    const workers = ['A', 'B'].map((w) =>
      startWorker([tmp, sd, base.imageId, base.volumeId, w, String(UPDATES_PER_WORKER)]),
    );
    await Promise.all(workers.map((w) => w.ready));
    for (const w of workers) w.child.send('go');

    // Read concurrently while they write: every read must be a complete, valid document whose
    // generation never goes backwards.
    let done = false;
    const allExited = Promise.all(workers.map((w) => w.exited)).finally(() => (done = true));
    let reads = 0;
    let lastGeneration = 0;
    while (!done) {
      const text = await fs.readFile(metaFile, 'utf8');
      const meta = VolumeMetadataSchema.parse(JSON.parse(text));
      expect(meta.generation).toBeGreaterThanOrEqual(lastGeneration);
      lastGeneration = meta.generation;
      reads++;
    }
    expect(await allExited).toEqual([0, 0]);

    const final = await domain.readVolume(base.imageId, base.volumeId);
    const total = 2 * UPDATES_PER_WORKER;
    expect(final.generation).toBe(initialGeneration + total);
    const c = JSON.parse(final.description) as {
      counts: Record<string, number>;
      seen: Record<string, number[]>;
    };
    expect(c.counts).toEqual({ A: UPDATES_PER_WORKER, B: UPDATES_PER_WORKER });
    const all = Array.from({ length: UPDATES_PER_WORKER }, (_, i) => i);
    expect(c.seen.A).toEqual(all);
    expect(c.seen.B).toEqual(all);
    expect(reads).toBeGreaterThan(0);
    // No lock or temp file is left behind.
    const left = (await fs.readdir(domain.imageDir(base.imageId))).filter((n) => n.startsWith('.'));
    expect(left).toEqual([]);
  });

  it('serialises concurrent updates inside one process too', async () => {
    const domain = await StorageDomain.create(tmp, randomUUID());
    const base = await domain.createImage({ format: 'raw', capacity: 1 << 20 });
    await Promise.all(
      Array.from({ length: 50 }, () =>
        domain.updateVolume(base.imageId, base.volumeId, (m) => ({
          ...m,
          description: String(Number(m.description || '0') + 1),
        })),
      ),
    );
    const final = await domain.readVolume(base.imageId, base.volumeId);
    expect(final.description).toBe('50');
    expect(final.generation).toBe(base.generation + 50);
  });

  it('breaks a lock whose owner process on this host is dead', async () => {
    const domain = await StorageDomain.create(tmp, randomUUID());
    const base = await domain.createImage({ format: 'raw', capacity: 1 << 20 });
    // A real process that held the lock and died (its pid is now free).
    const dead = spawn(process.execPath, ['-e', '0']);
    const deadPid = await new Promise<number>((resolve) => dead.once('exit', () => resolve(dead.pid!)));
    const lockFile = path.join(domain.imageDir(base.imageId), '.image.lock');
    let template!: LockOwner;
    await withLock(lockFile, async () => {
      template = (await lockOwner(lockFile))!;
    });
    await fs.writeFile(
      lockFile,
      JSON.stringify({ ...template, token: 'dead-owner', pid: deadPid, pidStart: '1' }),
    );

    const updated = await domain.setSnapshotId(base.imageId, base.volumeId, randomUUID());
    expect(updated.generation).toBe(base.generation + 1);
    await expect(fs.stat(lockFile)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('never breaks a lock owned by another host: times out naming the owner', async () => {
    const domain = await StorageDomain.create(tmp, randomUUID(), { lock: { timeoutMs: 300 } });
    const base = await domain.createImage({ format: 'raw', capacity: 1 << 20 });
    const lockFile = path.join(domain.imageDir(base.imageId), '.image.lock');
    const foreign = {
      token: 'foreign',
      host: `not-${os.hostname()}`,
      bootId: null,
      pidNs: null,
      pid: 1,
      pidStart: null,
      acquiredAt: new Date().toISOString(),
      purpose: 'test',
    };
    await fs.writeFile(lockFile, JSON.stringify(foreign));
    const err = await domain
      .setSnapshotId(base.imageId, base.volumeId, randomUUID())
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LockTimeout);
    expect((err as LockTimeout).owner).toMatchObject({ host: foreign.host, token: 'foreign' });
    expect(JSON.parse(await fs.readFile(lockFile, 'utf8'))).toEqual(foreign);
    expect((await domain.readVolume(base.imageId, base.volumeId)).generation).toBe(base.generation);
  });
});
