// Volume metadata (DESIGN.md "Volume metadata"): schema and atomic, durable writes.
// A write is: temp file in the same directory (O_EXCL|O_NOFOLLOW), write, fsync, rename over the
// target, fsync the directory. Readers therefore see either the old or the new document, never a
// torn one, and after a crash the rename is durable once writeMetadata resolved.
// Callers serialise writers with the image lock (lock.ts); this module only makes each write atomic.
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { isUuid } from '../common/ids';
import { Format, Legality } from '../schemas/volume';
import { MetadataCorrupt, errnoCode } from './errors';

const uuid = z.string().refine(isUuid, 'must be a canonical lower-case UUID');

export const VolumeMetadataSchema = z
  .object({
    volumeId: uuid,
    imageId: uuid,
    storageDomainId: uuid,
    parentId: uuid.nullable(),
    format: Format,
    capacity: z.number().int().positive(),
    legality: Legality,
    snapshotId: uuid.nullable(),
    description: z.string(),
    createdAt: z.iso.datetime(),
    generation: z.number().int().positive(),
  })
  .strict();
export type VolumeMetadata = z.infer<typeof VolumeMetadataSchema>;

/** Fields a mutation may never change (identity and bookkeeping). */
export const IMMUTABLE_FIELDS = [
  'volumeId',
  'imageId',
  'storageDomainId',
  'createdAt',
  'generation',
] as const;

export function parseMetadata(file: string, text: string): VolumeMetadata {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new MetadataCorrupt(file, 'not valid JSON', { cause: e });
  }
  const r = VolumeMetadataSchema.safeParse(raw);
  if (!r.success) throw new MetadataCorrupt(file, z.prettifyError(r.error), { cause: r.error });
  return r.data;
}

/** Reads one metadata file without following a symlink. Returns null when it does not exist. */
export async function readMetadataFile(file: string): Promise<VolumeMetadata | null> {
  let fh;
  try {
    fh = await fs.open(file, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return null;
    throw e;
  }
  try {
    return parseMetadata(file, await fh.readFile('utf8'));
  } finally {
    await fh.close();
  }
}

export async function fsyncDir(dir: string): Promise<void> {
  const fh = await fs.open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Writes `meta` to `file` atomically and durably (see header). Validates before writing. Temp files are
 * dot-files, never matching `<uuid>.meta.json`, so listings ignore them.
 */
export async function writeMetadataFile(file: string, meta: VolumeMetadata): Promise<void> {
  const data = VolumeMetadataSchema.parse(meta);
  await writeFileAtomic(file, `${JSON.stringify(data, null, 2)}\n`);
}

/**
 * Atomic, durable replacement of a small file: a temp dot-file in the same directory (O_EXCL|O_NOFOLLOW),
 * write, fsync, rename over the target, fsync the directory. A reader sees the old or the new content,
 * never a torn one. Writers are serialised by the caller (an image lock, the backup catalog's lock).
 */
export async function writeFileAtomic(file: string, text: string): Promise<void> {
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`);
  const fh = await fs.open(
    tmp,
    constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
    0o644,
  );
  try {
    try {
      await fh.writeFile(text, 'utf8');
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fs.rename(tmp, file);
  } catch (e) {
    await fs.rm(tmp, { force: true });
    throw e;
  }
  await fsyncDir(dir);
}
