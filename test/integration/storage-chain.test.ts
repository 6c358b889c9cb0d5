// Chains built by StorageDomain: relative backing names and formats in the qcow2 headers, base-first
// readChain, data written through the leaf reads back, and the metadata operations of a merge.
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  AlreadyExists,
  ChainAmbiguous,
  ChainBroken,
  InvalidStorageRequest,
  MetadataCorrupt,
  VolumeNotFound,
} from '../../src/storage/errors';
import { StorageDomain, type StoredVolume } from '../../src/storage/storage-domain';
import { makeTmpDir, qemuImgInfoJson, qemuIo } from '../fixtures/storage/helpers';

const MiB = 1 << 20;
let tmp: string;
let domain: StorageDomain;

beforeEach(async () => {
  tmp = await makeTmpDir();
  domain = await StorageDomain.create(tmp, randomUUID());
});
afterEach(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
});

async function buildChain(format: 'raw' | 'qcow2'): Promise<StoredVolume[]> {
  const base = await domain.createImage({ format, capacity: 4 * MiB, description: 'base' });
  // Data in the base, then one distinct pattern per layer at its own offset.
  await qemuIo(base.path, ['write -P 0x10 0 64k'], format);
  const chain = [base];
  for (let i = 1; i <= 3; i++) {
    const child = await domain.createVolume({
      imageId: base.imageId,
      parentId: chain[i - 1]!.volumeId,
      description: `layer ${i}`,
    });
    await qemuIo(child.path, [`write -P 0x${(0x10 + i).toString(16)} ${i * 64}k 64k`], 'qcow2');
    chain.push(child);
  }
  return chain;
}

describe.each(['raw', 'qcow2'] as const)('%s base with 3 qcow2 children', (baseFormat) => {
  it('writes relative backing names with backing formats, reads base first, and data reads back through the leaf', async () => {
    const chain = await buildChain(baseFormat);
    const [base, c1, c2, c3] = chain as [StoredVolume, StoredVolume, StoredVolume, StoredVolume];

    // Files on disk exactly as DESIGN.md lays them out.
    const imageDir = path.join(domain.dir, 'images', base.imageId);
    expect((await fs.readdir(imageDir)).sort()).toEqual(
      chain.flatMap((v) => [v.volumeId, `${v.volumeId}.meta.json`]).sort(),
    );
    for (const v of chain) expect(v.path).toBe(path.join(imageDir, v.volumeId));

    // qemu-img's own view: leaf first, relative names, explicit backing formats.
    const info = await qemuImgInfoJson(c3.path, true);
    expect(info.map((i) => i.filename)).toEqual([c3.path, c2.path, c1.path, base.path]);
    expect(info.map((i) => i.format)).toEqual(['qcow2', 'qcow2', 'qcow2', baseFormat]);
    expect(info.map((i) => i['backing-filename'])).toEqual([
      c2.volumeId,
      c1.volumeId,
      base.volumeId,
      undefined,
    ]);
    expect(info.map((i) => i['backing-filename-format'])).toEqual(['qcow2', 'qcow2', baseFormat, undefined]);
    expect(info.map((i) => i['virtual-size'])).toEqual([4 * MiB, 4 * MiB, 4 * MiB, 4 * MiB]);

    // Metadata.
    expect(chain.map((v) => v.parentId)).toEqual([null, base.volumeId, c1.volumeId, c2.volumeId]);
    expect(chain.map((v) => v.format)).toEqual([baseFormat, 'qcow2', 'qcow2', 'qcow2']);
    for (const v of chain) {
      expect(v).toMatchObject({
        legality: 'LEGAL',
        capacity: 4 * MiB,
        snapshotId: null,
        storageDomainId: domain.id,
        imageId: base.imageId,
        generation: 2,
      });
      const onDisk = JSON.parse(await fs.readFile(`${v.path}.meta.json`, 'utf8')) as Record<string, unknown>;
      expect(Object.keys(onDisk).sort()).toEqual(
        [
          'volumeId',
          'imageId',
          'storageDomainId',
          'parentId',
          'format',
          'capacity',
          'legality',
          'snapshotId',
          'description',
          'createdAt',
          'generation',
        ].sort(),
      );
    }

    // readChain: base first, with or without the leaf named.
    expect((await domain.readChain(base.imageId)).map((v) => v.volumeId)).toEqual(
      chain.map((v) => v.volumeId),
    );
    expect((await domain.readChain(base.imageId, c2.volumeId)).map((v) => v.volumeId)).toEqual([
      base.volumeId,
      c1.volumeId,
      c2.volumeId,
    ]);

    // Every layer's data reads back through the leaf; the lower layers were not modified.
    await qemuIo(
      c3.path,
      [
        'read -P 0x10 0 64k',
        'read -P 0x11 64k 64k',
        'read -P 0x12 128k 64k',
        'read -P 0x13 192k 64k',
        'read -P 0 256k 64k',
      ],
      'qcow2',
    );
    await qemuIo(c3.path, ['write -P 0x42 1M 64k'], 'qcow2');
    await qemuIo(c3.path, ['read -P 0x42 1M 64k'], 'qcow2');
    await qemuIo(base.path, ['read -P 0 64k 192k', 'read -P 0 1M 64k'], baseFormat);
    await qemuIo(c1.path, ['read -P 0x11 64k 64k', 'read -P 0 128k 64k'], 'qcow2');
  });
});

describe('metadata operations', () => {
  it('finds the leaf, refuses ambiguity and broken chains', async () => {
    const [base, c1] = (await buildChain('raw')) as [StoredVolume, StoredVolume];
    const sibling = await domain.createVolume({ imageId: base.imageId, parentId: c1.volumeId });
    await expect(domain.readChain(base.imageId)).rejects.toBeInstanceOf(ChainAmbiguous);
    expect((await domain.readChain(base.imageId, sibling.volumeId)).map((v) => v.volumeId)).toEqual([
      base.volumeId,
      c1.volumeId,
      sibling.volumeId,
    ]);

    // An ILLEGAL leaf is not a leaf: the remaining LEGAL leaf is found.
    await domain.setLegality(base.imageId, sibling.volumeId, 'ILLEGAL');
    expect((await domain.readChain(base.imageId)).length).toBe(4);

    // A parent without metadata breaks the chain.
    await fs.rm(`${c1.path}.meta.json`);
    await expect(domain.readChain(base.imageId, sibling.volumeId)).rejects.toBeInstanceOf(ChainBroken);
  });

  it('rejects bad parents, duplicate ids and corrupt metadata', async () => {
    const base = await domain.createImage({ format: 'qcow2', capacity: MiB });
    await expect(
      domain.createVolume({ imageId: base.imageId, parentId: randomUUID() }),
    ).rejects.toBeInstanceOf(VolumeNotFound);
    await expect(
      domain.createImage({ imageId: base.imageId, format: 'raw', capacity: MiB }),
    ).rejects.toBeInstanceOf(AlreadyExists);
    await expect(
      domain.createVolume({ imageId: base.imageId, parentId: base.volumeId, volumeId: base.volumeId }),
    ).rejects.toBeInstanceOf(AlreadyExists);
    await expect(domain.createImage({ format: 'raw', capacity: 0 })).rejects.toBeInstanceOf(
      InvalidStorageRequest,
    );

    const illegal = await domain.createVolume({ imageId: base.imageId, parentId: base.volumeId });
    await domain.setLegality(base.imageId, illegal.volumeId, 'ILLEGAL');
    await expect(
      domain.createVolume({ imageId: base.imageId, parentId: illegal.volumeId }),
    ).rejects.toBeInstanceOf(InvalidStorageRequest);

    await fs.writeFile(`${illegal.path}.meta.json`, '{"volumeId": "tor');
    await expect(domain.readVolume(base.imageId, illegal.volumeId)).rejects.toBeInstanceOf(MetadataCorrupt);
    const moved = { ...base, path: undefined, volumeId: randomUUID() };
    await fs.writeFile(`${illegal.path}.meta.json`, JSON.stringify(moved));
    await expect(domain.readVolume(base.imageId, illegal.volumeId)).rejects.toBeInstanceOf(MetadataCorrupt);
  });

  it('updateVolume protects identity fields and skips no-op writes', async () => {
    const base = await domain.createImage({ format: 'raw', capacity: MiB });
    await expect(
      domain.updateVolume(base.imageId, base.volumeId, (m) => ({ ...m, generation: 99 })),
    ).rejects.toBeInstanceOf(InvalidStorageRequest);
    await expect(
      domain.updateVolume(base.imageId, base.volumeId, (m) => ({ ...m, volumeId: randomUUID() })),
    ).rejects.toBeInstanceOf(InvalidStorageRequest);
    await expect(
      domain.updateVolume(base.imageId, base.volumeId, (m) => ({ ...m, capacity: -1 })),
    ).rejects.toBeInstanceOf(InvalidStorageRequest);
    const same = await domain.updateVolume(base.imageId, base.volumeId, (m) => m);
    expect(same.generation).toBe(base.generation);
    const changed = await domain.updateVolume(base.imageId, base.volumeId, (m) => {
      m.description = 'changed in place';
    });
    expect(changed).toMatchObject({ description: 'changed in place', generation: base.generation + 1 });
    expect((await domain.readVolume(base.imageId, base.volumeId)).description).toBe('changed in place');
  });

  it('records a backward merge: reparent, take over snapshotId, ILLEGAL, delete — each idempotent', async () => {
    const [base, c1, c2, c3] = (await buildChain('raw')) as [
      StoredVolume,
      StoredVolume,
      StoredVolume,
      StoredVolume,
    ];
    const snap = randomUUID();
    await domain.setSnapshotId(base.imageId, c1.volumeId, snap);

    // Reparent refuses cycles and LEGAL-on-ILLEGAL.
    await expect(domain.reparent(base.imageId, c1.volumeId, c3.volumeId)).rejects.toBeInstanceOf(
      InvalidStorageRequest,
    );
    await expect(domain.reparent(base.imageId, c1.volumeId, c1.volumeId)).rejects.toBeInstanceOf(
      InvalidStorageRequest,
    );

    // Commit c1 into base: c2 re-parented to base, base takes over c1's snapshot, c1 ILLEGAL then deleted.
    for (let round = 0; round < 2; round++) {
      await domain.reparent(base.imageId, c2.volumeId, base.volumeId);
      await domain.takeOverSnapshotId(base.imageId, base.volumeId, c1.volumeId);
      await domain.setLegality(base.imageId, c1.volumeId, 'ILLEGAL');
    }
    const after = await domain.readVolume(base.imageId, base.volumeId);
    expect(after).toMatchObject({ snapshotId: snap, generation: base.generation + 1 });
    expect((await domain.readVolume(base.imageId, c2.volumeId)).generation).toBe(c2.generation + 1);
    expect((await domain.readChain(base.imageId)).map((v) => v.volumeId)).toEqual([
      base.volumeId,
      c2.volumeId,
      c3.volumeId,
    ]);

    expect(await domain.deleteVolume(base.imageId, c1.volumeId)).toEqual({ deleted: true });
    expect(await domain.deleteVolume(base.imageId, c1.volumeId)).toEqual({ deleted: false });
    await expect(fs.stat(c1.path)).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(fs.stat(`${c1.path}.meta.json`)).rejects.toMatchObject({ code: 'ENOENT' });
    expect((await domain.listVolumes(base.imageId)).map((v) => v.volumeId).sort()).toEqual(
      [base.volumeId, c2.volumeId, c3.volumeId].sort(),
    );
  });

  it('deleteVolume finishes a deletion interrupted after the data file went (reconcile path)', async () => {
    const base = await domain.createImage({ format: 'raw', capacity: MiB });
    const child = await domain.createVolume({ imageId: base.imageId, parentId: base.volumeId });
    await domain.setLegality(base.imageId, child.volumeId, 'ILLEGAL');
    await fs.rm(child.path); // crash between steps 2 and 3
    const scan = await domain.scanImage(base.imageId);
    expect(scan.metadataWithoutData).toEqual([child.volumeId]);
    expect(await domain.deleteVolume(base.imageId, child.volumeId)).toEqual({ deleted: true });
    expect((await domain.scanImage(base.imageId)).volumes.map((v) => v.volumeId)).toEqual([base.volumeId]);

    // A data file without metadata (crash inside createVolume before any metadata) is reported and deletable.
    const orphan = randomUUID();
    await fs.writeFile(path.join(domain.imageDir(base.imageId), orphan), '');
    expect((await domain.scanImage(base.imageId)).dataWithoutMetadata).toEqual([orphan]);
    expect(await domain.deleteVolume(base.imageId, orphan)).toEqual({ deleted: true });
    expect(await domain.deleteVolume(base.imageId, orphan)).toEqual({ deleted: false });
    expect(await domain.deleteVolume(randomUUID(), orphan)).toEqual({ deleted: false });
  });
});
