// Path safety: ids that are not canonical lower-case UUIDs and symlinks planted inside a storage
// domain are refused with typed errors, and nothing outside the domain is read, written or removed.
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PathRefused, StorageDomainNotFound } from '../../src/storage/errors';
import { StorageDomain, type StoredVolume } from '../../src/storage/storage-domain';
import { makeTmpDir, snapshotTree } from '../fixtures/storage/helpers';

let tmp: string;
let root: string;
let outside: string;
let domain: StorageDomain;
let base: StoredVolume;

beforeEach(async () => {
  tmp = await makeTmpDir();
  root = path.join(tmp, 'root');
  outside = path.join(tmp, 'outside');
  await fs.mkdir(outside);
  await fs.writeFile(path.join(outside, 'victim'), 'precious data\n');
  await fs.writeFile(path.join(outside, 'victim.meta.json'), '{"not":"metadata"}\n');
  domain = await StorageDomain.create(root, randomUUID());
  base = await domain.createImage({ format: 'raw', capacity: 1 << 20 });
});
afterEach(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
});

async function refused(p: Promise<unknown>, reason: PathRefused['reason']): Promise<PathRefused> {
  const err = await p.then(
    () => new Error('expected PathRefused, got success'),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(PathRefused);
  expect((err as PathRefused).code).toBe('PATH_REFUSED');
  expect((err as PathRefused).reason).toBe(reason);
  return err as PathRefused;
}

const BAD_IDS = [
  '../x',
  '/etc/passwd',
  '..',
  '',
  'a/b',
  randomUUID().toUpperCase(),
  randomUUID().replace(/-/g, ''),
  `{${randomUUID()}}`,
  ` ${randomUUID()}`,
  `${randomUUID()}/../../etc`,
];

describe('id validation', () => {
  it.each(BAD_IDS)('refuses %j everywhere before building a path', async (bad) => {
    const before = await snapshotTree(tmp);
    await refused(domain.readVolume(bad, base.volumeId), 'invalid-id');
    await refused(domain.readVolume(base.imageId, bad), 'invalid-id');
    await refused(domain.listVolumes(bad), 'invalid-id');
    await refused(domain.createImage({ imageId: bad, format: 'raw', capacity: 1 << 20 }), 'invalid-id');
    await refused(domain.createVolume({ imageId: base.imageId, parentId: bad }), 'invalid-id');
    await refused(
      domain.createVolume({ imageId: base.imageId, parentId: base.volumeId, volumeId: bad }),
      'invalid-id',
    );
    await refused(domain.deleteVolume(base.imageId, bad), 'invalid-id');
    await refused(domain.deleteVolume(bad, base.volumeId), 'invalid-id');
    await refused(
      domain.updateVolume(base.imageId, bad, (m) => m),
      'invalid-id',
    );
    await refused(domain.reparent(base.imageId, base.volumeId, bad), 'invalid-id');
    await refused(domain.setSnapshotId(base.imageId, base.volumeId, bad), 'invalid-id');
    await refused(StorageDomain.open(root, bad), 'invalid-id');
    await refused(StorageDomain.create(root, bad), 'invalid-id');
    expect(await snapshotTree(tmp)).toEqual(before);
  });

  it('opens only existing domains', async () => {
    await expect(StorageDomain.open(root, randomUUID())).rejects.toBeInstanceOf(StorageDomainNotFound);
  });
});

describe('planted symlinks', () => {
  it('refuses a volume data file that is a symlink to outside', async () => {
    const child = await domain.createVolume({ imageId: base.imageId, parentId: base.volumeId });
    await fs.rm(child.path);
    await fs.symlink(path.join(outside, 'victim'), child.path);
    const before = await snapshotTree(outside);

    await refused(domain.readVolume(base.imageId, child.volumeId), 'symlink');
    await refused(domain.listVolumes(base.imageId), 'symlink');
    await refused(domain.readChain(base.imageId), 'symlink');
    await refused(domain.setLegality(base.imageId, child.volumeId, 'ILLEGAL'), 'symlink');
    await refused(domain.deleteVolume(base.imageId, child.volumeId), 'symlink');

    expect(await snapshotTree(outside)).toEqual(before);
    expect(await fs.readFile(path.join(outside, 'victim'), 'utf8')).toBe('precious data\n');
    expect((await fs.lstat(child.path)).isSymbolicLink()).toBe(true);
  });

  it('refuses a metadata file that is a symlink to outside', async () => {
    const metaPath = `${base.path}.meta.json`;
    await fs.rm(metaPath);
    await fs.symlink(path.join(outside, 'victim.meta.json'), metaPath);
    const before = await snapshotTree(outside);
    await refused(domain.readVolume(base.imageId, base.volumeId), 'symlink');
    await refused(
      domain.updateVolume(base.imageId, base.volumeId, (m) => ({ ...m, description: 'x' })),
      'symlink',
    );
    await refused(domain.deleteVolume(base.imageId, base.volumeId), 'symlink');
    expect(await snapshotTree(outside)).toEqual(before);
  });

  it('refuses a volume id planted as a symlink when creating a volume with that id', async () => {
    const volumeId = randomUUID();
    await fs.symlink(path.join(outside, 'victim'), path.join(domain.imageDir(base.imageId), volumeId));
    const before = await snapshotTree(outside);
    await refused(
      domain.createVolume({ imageId: base.imageId, parentId: base.volumeId, volumeId }),
      'symlink',
    );
    expect(await snapshotTree(outside)).toEqual(before);
  });

  it('refuses an image directory that is a symlink to outside', async () => {
    // A complete, valid-looking image outside the domain, linked in as an image dir.
    const other = await StorageDomain.create(path.join(tmp, 'other-root'), domain.id);
    const foreign = await other.createImage({ format: 'raw', capacity: 1 << 20 });
    const foreignDir = other.imageDir(foreign.imageId);
    const linkDir = domain.imageDir(foreign.imageId);
    await fs.symlink(foreignDir, linkDir);
    const before = await snapshotTree(path.join(tmp, 'other-root'));

    await refused(domain.listVolumes(foreign.imageId), 'symlink');
    await refused(domain.readVolume(foreign.imageId, foreign.volumeId), 'symlink');
    await refused(domain.readChain(foreign.imageId), 'symlink');
    await refused(domain.createVolume({ imageId: foreign.imageId, parentId: foreign.volumeId }), 'symlink');
    await refused(
      domain.updateVolume(foreign.imageId, foreign.volumeId, (m) => ({ ...m, description: 'pwned' })),
      'symlink',
    );
    await refused(domain.deleteVolume(foreign.imageId, foreign.volumeId), 'symlink');

    expect(await snapshotTree(path.join(tmp, 'other-root'))).toEqual(before);
    expect(await fs.readdir(foreignDir)).not.toContain('.image.lock');
  });

  it('refuses a domain whose images dir or domain dir is a symlink', async () => {
    const sd1 = randomUUID();
    await fs.mkdir(path.join(outside, 'images'), { recursive: true });
    await fs.symlink(outside, path.join(root, sd1));
    await refused(StorageDomain.open(root, sd1), 'symlink');
    await refused(StorageDomain.create(root, sd1), 'symlink');

    const sd2 = randomUUID();
    await fs.mkdir(path.join(root, sd2));
    await fs.symlink(path.join(outside, 'images'), path.join(root, sd2, 'images'));
    await refused(StorageDomain.open(root, sd2), 'symlink');
    expect(await fs.readdir(path.join(outside, 'images'))).toEqual([]);
  });

  it('refuses a regular file planted where a directory belongs', async () => {
    const imageId = randomUUID();
    await fs.writeFile(path.join(domain.dir, 'images', imageId), 'not a dir');
    await refused(domain.listVolumes(imageId), 'not-a-directory');
  });
});
