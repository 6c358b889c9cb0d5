// The fault tests' directory watch (test/helpers/file-watch.ts) tells a deletion of an ILLEGAL volume from
// one of a LEGAL volume, also when its handlers run after the whole deletion is over: the parent blocks its
// event loop (spawnSync) while another process deletes, as a loaded CI machine may delay it.
import { spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { StorageDomain, type StoredVolume } from '../../src/storage/storage-domain';
import { makeTmpDir } from '../fixtures/storage/helpers';
import { deletedWhileIllegal, ImageDirWatch, type FileEvent } from '../helpers/file-watch';

const CHANGE = path.resolve(__dirname, '../fixtures/storage/change-volume.ts');

let tmp: string;
let watch: ImageDirWatch | undefined;
beforeEach(async () => {
  tmp = await makeTmpDir();
});
afterEach(async () => {
  watch?.stop();
  watch = undefined;
  await fs.rm(tmp, { recursive: true, force: true });
});

async function leafOnBase(): Promise<{ domain: StorageDomain; sd: string; leaf: StoredVolume }> {
  const sd = randomUUID();
  const domain = await StorageDomain.create(tmp, sd);
  const base = await domain.createImage({ format: 'qcow2', capacity: 1 << 20 });
  const leaf = await domain.createVolume({ imageId: base.imageId, parentId: base.volumeId });
  return { domain, sd, leaf };
}

/** Runs change-volume.ts in `mode` on `leaf` while this process's event loop is blocked. */
function changeWithHandlersLate(sd: string, leaf: StoredVolume, mode: string): void {
  const r = spawnSync(
    process.execPath,
    ['--import', 'tsx', CHANGE, tmp, sd, leaf.imageId, leaf.volumeId, mode],
    {
      encoding: 'utf8',
    },
  );
  expect(r.status, r.stderr).toBe(0);
}

/** The unlink event of `volumeId`, once the watch has handled it. */
async function unlinkOf(volumeId: string): Promise<FileEvent> {
  return vi.waitFor(
    () => {
      const e = watch!.handled().find((x) => x.kind === 'unlink' && x.volumeId === volumeId);
      if (!e) throw new Error(`no unlink of ${volumeId} handled yet`);
      return e;
    },
    { timeout: 5_000, interval: 10 },
  );
}

describe('image directory watch', () => {
  it('sees a deleteVolume in this process as a deletion while ILLEGAL', async () => {
    const { domain, leaf } = await leafOnBase();
    watch = new ImageDirWatch(domain.imageDir(leaf.imageId));
    await domain.deleteVolume(leaf.imageId, leaf.volumeId);
    expect(deletedWhileIllegal(await unlinkOf(leaf.volumeId))).toBe(true);
  });

  it('still counts the ILLEGAL write when deleteVolume finished before any handler ran', async () => {
    const { domain, sd, leaf } = await leafOnBase();
    watch = new ImageDirWatch(domain.imageDir(leaf.imageId));
    changeWithHandlersLate(sd, leaf, 'delete');
    const e = await unlinkOf(leaf.volumeId);
    // The metadata write was announced but could no longer be read: the branch this fix is for (and the
    // data file's earlier write and attribute change did not count as its unlink).
    expect(e.legality).toBe('rewritten');
    expect(deletedWhileIllegal(e)).toBe(true);
    expect(watch.stop().missed).toEqual([]);
  });

  // Without the ILLEGAL write (data first, or metadata first), and after a LEGAL-keeping metadata write with
  // the metadata unlinked first, with the handlers late as above.
  it.each([
    ['unlink-data-first', 'LEGAL'],
    ['unlink-metadata-first', 'LEGAL'],
    ['rewrite-metadata-first', 'metadata-first'],
  ])('mutation: %s is caught (recorded %s)', async (mode, legality) => {
    const { domain, sd, leaf } = await leafOnBase();
    watch = new ImageDirWatch(domain.imageDir(leaf.imageId));
    changeWithHandlersLate(sd, leaf, mode);
    const e = await unlinkOf(leaf.volumeId);
    expect(e.legality).toBe(legality);
    expect(deletedWhileIllegal(e)).toBe(false);
  });
});
