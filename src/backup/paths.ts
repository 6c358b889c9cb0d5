// Where a VM's backups live: `<repository>/<vmId>/backups.json` and `<repository>/<vmId>/<imageId>/<backupId>.qcow2`.
// Paths are built only from validated canonical UUIDs under an absolute repository directory, checked to
// stay inside it, and every component below the repository is lstat'ed before use: a symlink planted as a
// VM directory, image directory or backup file could redirect a write or a prune's deletion elsewhere.
import fs from 'node:fs/promises';
import path from 'node:path';
import { isUuid } from '../common/ids';
import { errnoCode } from '../storage/errors';
import { BackupRequestInvalid } from './errors';

export const CATALOG_NAME = 'backups.json';
export const LOCK_NAME = '.backups.lock';
export const PRUNE_JOURNAL_NAME = '.prune-pending.json';

export function validUuid(field: string, value: unknown): string {
  if (!isUuid(value))
    throw new BackupRequestInvalid(
      'invalid-id',
      `${field} must be a canonical lower-case UUID, got ${JSON.stringify(value)}`,
    );
  return value;
}

/** The repository directory: absolute and normalised (the caller's spelling is kept, not resolved). */
export function validRepository(repository: unknown): string {
  if (typeof repository !== 'string' || !path.isAbsolute(repository))
    throw new BackupRequestInvalid(
      'invalid-path',
      `repository must be an absolute path, got ${JSON.stringify(repository)}`,
    );
  return path.resolve(repository);
}

function inside(dir: string, p: string): string {
  const rel = path.relative(dir, path.resolve(p));
  if (rel === '' || rel.startsWith('..') || path.isAbsolute(rel))
    throw new BackupRequestInvalid('invalid-path', `${p} is not inside ${dir}`);
  return path.resolve(p);
}

export function vmDir(repository: string, vmId: string): string {
  const repo = validRepository(repository);
  return inside(repo, path.join(repo, validUuid('vmId', vmId)));
}

export function imageDir(repository: string, vmId: string, imageId: string): string {
  const dir = vmDir(repository, vmId);
  return inside(dir, path.join(dir, validUuid('imageId', imageId)));
}

/** The backup file's name inside its image directory: also its children's relative backing name. */
export function backupFileName(backupId: string): string {
  return `${validUuid('backupId', backupId)}.qcow2`;
}

/** `<repository>/<vmId>/<imageId>/<backupId>.qcow2` (absolute). */
export function diskFile(repository: string, vmId: string, imageId: string, backupId: string): string {
  const dir = imageDir(repository, vmId, imageId);
  return inside(dir, path.join(dir, backupFileName(backupId)));
}

export function catalogPath(repository: string, vmId: string): string {
  return path.join(vmDir(repository, vmId), CATALOG_NAME);
}

export function lockPath(repository: string, vmId: string): string {
  return path.join(vmDir(repository, vmId), LOCK_NAME);
}

export function pruneJournalPath(repository: string, vmId: string): string {
  return path.join(vmDir(repository, vmId), PRUNE_JOURNAL_NAME);
}

/** As backups.json stores a disk's file: relative to `<repository>/<vmId>`, e.g. `<imageId>/<backupId>.qcow2`. */
export function toCatalogFile(repository: string, vmId: string, absFile: string): string {
  const dir = vmDir(repository, vmId);
  if (!path.isAbsolute(absFile))
    throw new BackupRequestInvalid('invalid-path', `expected an absolute file, got ${absFile}`);
  return path.relative(dir, inside(dir, absFile));
}

/** The absolute file of a catalog entry; refuses one that would leave `<repository>/<vmId>`. */
export function fromCatalogFile(repository: string, vmId: string, relFile: string): string {
  const dir = vmDir(repository, vmId);
  if (path.isAbsolute(relFile))
    throw new BackupRequestInvalid('invalid-path', `expected a relative file, got ${relFile}`);
  return inside(dir, path.join(dir, relFile));
}

/**
 * lstat's every component from the repository down to `p`: a symlink anywhere is refused, every
 * intermediate component must be a directory, the last one of type `expect`. False when one is missing.
 */
export async function checkPath(repository: string, p: string, expect: 'dir' | 'file'): Promise<boolean> {
  const repo = validRepository(repository);
  const parts = path.relative(repo, inside(repo, p)).split(path.sep);
  let cur = repo;
  for (const [i, part] of parts.entries()) {
    cur = path.join(cur, part);
    let st;
    try {
      st = await fs.lstat(cur);
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') return false;
      throw e;
    }
    const last = i === parts.length - 1;
    if (st.isSymbolicLink()) throw new BackupRequestInvalid('invalid-path', `${cur} is a symlink`);
    const ok = last && expect === 'file' ? st.isFile() : st.isDirectory();
    if (!ok)
      throw new BackupRequestInvalid(
        'invalid-path',
        `${cur} is not a ${last && expect === 'file' ? 'regular file' : 'directory'}`,
      );
  }
  return true;
}
