// Path construction for a storage domain. Every path is built only from validated canonical
// UUIDs, checked to stay under the domain directory, and every component below the storage root
// is lstat'ed so that a symlink planted as a domain dir, images dir, image dir, volume or
// metadata file is refused (symlinks could redirect writes or deletions outside the domain).
// The storage root itself is resolved once (realpath) by the caller and trusted.
import fsSync from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { InvalidIdError, isUuid } from '../common/ids';
import type { VolumeRef } from '../schemas/volume';
import { PathRefused, errnoCode } from './errors';

export const IMAGES_DIR = 'images';
export const META_SUFFIX = '.meta.json';
export const LOCK_NAME = '.image.lock';

/** Validates an id (canonical lower-case UUID) before it is used in a path. */
export function validId(field: string, value: unknown): string {
  if (!isUuid(value)) {
    throw new PathRefused('invalid-id', String(value), `${field} is not a canonical lower-case UUID`, {
      cause: new InvalidIdError(field, value),
    });
  }
  return value;
}

/** Throws PathRefused unless `p` (normalised) is strictly inside `dir`. */
export function assertInside(dir: string, p: string): string {
  const rel = path.relative(dir, path.resolve(p));
  if (rel === '' || rel.startsWith('..') || path.isAbsolute(rel)) {
    throw new PathRefused('outside-root', p, `not under ${dir}`);
  }
  return path.resolve(p);
}

export type Expect = 'dir' | 'file';

export class DomainPaths {
  readonly domainDir: string;
  readonly imagesDir: string;

  /** `storageRoot` must be absolute and already resolved (realpath). */
  constructor(
    readonly storageRoot: string,
    readonly storageDomainId: string,
  ) {
    if (!path.isAbsolute(storageRoot))
      throw new PathRefused('outside-root', storageRoot, 'storage root must be absolute');
    validId('storageDomainId', storageDomainId);
    this.domainDir = assertInside(storageRoot, path.join(storageRoot, storageDomainId));
    this.imagesDir = path.join(this.domainDir, IMAGES_DIR);
  }

  imageDir(imageId: string): string {
    return assertInside(this.imagesDir, path.join(this.imagesDir, validId('imageId', imageId)));
  }

  volumePath(imageId: string, volumeId: string): string {
    const dir = this.imageDir(imageId);
    return assertInside(dir, path.join(dir, validId('volumeId', volumeId)));
  }

  metaPath(imageId: string, volumeId: string): string {
    const dir = this.imageDir(imageId);
    return assertInside(dir, path.join(dir, `${validId('volumeId', volumeId)}${META_SUFFIX}`));
  }

  lockPath(imageId: string): string {
    const dir = this.imageDir(imageId);
    return path.join(dir, LOCK_NAME);
  }

  /**
   * lstat's every component from the domain directory down to `p`. Any symlink is refused; every
   * intermediate component must be a directory and the last one of the expected type.
   * Returns false when a component does not exist (and nothing below it can).
   */
  async check(p: string, expect: Expect): Promise<boolean> {
    const abs = path.resolve(p);
    if (abs !== this.domainDir) assertInside(this.domainDir, abs);
    const rel = path.relative(this.domainDir, abs);
    const parts = rel === '' ? [] : rel.split(path.sep);
    let cur = this.domainDir;
    const components = [cur, ...parts.map((part) => (cur = path.join(cur, part)))];
    for (let i = 0; i < components.length; i++) {
      const c = components[i]!;
      let st;
      try {
        st = await fs.lstat(c);
      } catch (e) {
        if (errnoCode(e) === 'ENOENT') return false;
        if (errnoCode(e) === 'ENOTDIR') throw new PathRefused('not-a-directory', c);
        throw e;
      }
      if (st.isSymbolicLink())
        throw new PathRefused('symlink', c, 'symlinks are not followed inside a storage domain');
      const last = i === components.length - 1;
      const want: Expect = last ? expect : 'dir';
      if (want === 'dir' && !st.isDirectory()) throw new PathRefused('not-a-directory', c);
      if (want === 'file' && !st.isFile()) throw new PathRefused('not-a-file', c);
    }
    return true;
  }
}

/** The storage-domain ids of a volume path `<root>/<sd>/images/<img>/<vol>`, or null for any other path. */
export function volumeRefFromPath(storageRoot: string, p: string): VolumeRef | null {
  let root = storageRoot;
  try {
    root = fsSync.realpathSync(storageRoot);
  } catch {
    // the root does not exist here: no path can be under it
  }
  const parts = path.relative(root, path.resolve(p)).split(path.sep);
  if (parts.length !== 4 || parts[1] !== 'images') return null;
  const [storageDomainId, , imageId, volumeId] = parts as [string, string, string, string];
  if (![storageDomainId, imageId, volumeId].every(isUuid)) return null;
  return { storageDomainId, imageId, volumeId };
}
