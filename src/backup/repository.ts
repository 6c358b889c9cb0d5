// The backup repository's catalog, `<repository>/<vmId>/backups.json` (DESIGN.md "Backups", step 6): read,
// validated, and changed only under the VM's catalog lock (src/storage/lock.ts: cross-process and
// cross-host) with an atomic replace, so a reader sees the old or the new restore points, never a torn file.
// Disk files are relative to `<repository>/<vmId>` on disk and absolute in everything returned here.
import path from 'node:path';
import { z } from 'zod';
import { imageHeader } from '../qemu/qemu-img';
import { withLock, type LockOptions } from '../storage/lock';
import { writeFileAtomic } from '../storage/metadata';
import { readFileNoFollow } from './atomic-file';
import { BackupCatalogSchema, BackupRecordSchema } from './catalog-schema';
import { BackupCatalogCorrupt, BackupNotFound, BackupRequestInvalid } from './errors';
import {
  backupFileName,
  catalogPath,
  checkPath,
  diskFile,
  fromCatalogFile,
  lockPath,
  toCatalogFile,
  validRepository,
  validUuid,
  vmDir,
} from './paths';
import type { BackupCatalog, BackupRecord } from './types';

export {
  backupFileName,
  catalogPath,
  diskFile,
  fromCatalogFile,
  imageDir,
  toCatalogFile,
  vmDir,
} from './paths';

export function emptyCatalog(vmId: string): BackupCatalog {
  return { version: 1, vmId, backups: [] };
}

/** Rules the zod shape cannot state: ids unique, parents recorded earlier, files where the layout puts them. */
function catalogProblem(catalog: BackupCatalog, vmId: string): string | null {
  if (catalog.vmId !== vmId) return `it belongs to VM ${catalog.vmId}`;
  const seen = new Set<string>();
  for (const [i, r] of catalog.backups.entries()) {
    if (seen.has(r.backupId)) return `backups[${i}]: backup ${r.backupId} appears twice`;
    if (r.parentBackupId !== null && !seen.has(r.parentBackupId))
      return `backups[${i}]: parent ${r.parentBackupId} is not an earlier restore point`;
    seen.add(r.backupId);
    const images = new Set<string>();
    for (const d of r.disks) {
      if (images.has(d.imageId)) return `backups[${i}]: image ${d.imageId} appears twice`;
      images.add(d.imageId);
      const want = `${d.imageId}/${r.backupId}.qcow2`;
      if (d.file !== want) return `backups[${i}]: disk file ${d.file}, expected ${want}`;
    }
  }
  return null;
}

function withFiles(catalog: BackupCatalog, map: (file: string) => string): BackupCatalog {
  return {
    ...catalog,
    backups: catalog.backups.map((r) => ({ ...r, disks: r.disks.map((d) => ({ ...d, file: map(d.file) })) })),
  };
}

/**
 * The VM's restore points, oldest first, with absolute disk files. No catalog (or no VM directory yet):
 * an empty catalog. A catalog that is there but cannot be parsed or breaks the rules: BackupCatalogCorrupt.
 */
export async function readCatalog(repository: string, vmId: string): Promise<BackupCatalog> {
  const file = catalogPath(repository, vmId);
  if (!(await checkPath(repository, vmDir(repository, vmId), 'dir'))) return emptyCatalog(vmId);
  let text: string | null;
  try {
    text = await readFileNoFollow(file);
  } catch (e) {
    throw new BackupCatalogCorrupt(file, 'cannot be opened as a regular file', { cause: e });
  }
  if (text === null) return emptyCatalog(vmId);
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new BackupCatalogCorrupt(file, 'not valid JSON', { cause: e });
  }
  const r = BackupCatalogSchema.safeParse(raw);
  if (!r.success) throw new BackupCatalogCorrupt(file, z.prettifyError(r.error), { cause: r.error });
  const problem = catalogProblem(r.data, vmId);
  if (problem) throw new BackupCatalogCorrupt(file, problem);
  return withFiles(r.data, (f) => fromCatalogFile(repository, vmId, f));
}

/** The newest restore point: the parent of the next incremental. */
export function lastBackup(catalog: BackupCatalog): BackupRecord | undefined {
  return catalog.backups[catalog.backups.length - 1];
}

export function findBackup(catalog: BackupCatalog, backupId: string): BackupRecord {
  const r = catalog.backups.find((b) => b.backupId === backupId);
  if (!r) throw new BackupNotFound(catalog.vmId, backupId);
  return r;
}

/**
 * Runs `fn` holding the VM's catalog lock (`<repository>/<vmId>/.backups.lock`; the VM directory must exist).
 * Not re-entrant: the *Locked functions below are for code already inside it.
 */
export function withCatalogLock<T>(
  repository: string,
  vmId: string,
  fn: () => Promise<T>,
  opts: LockOptions = {},
): Promise<T> {
  return withLock(lockPath(repository, vmId), fn, { purpose: `backup catalog of VM ${vmId}`, ...opts });
}

/** Replaces backups.json (caller holds the catalog lock). Validated before anything is written. */
export async function writeCatalogLocked(
  repository: string,
  vmId: string,
  catalog: BackupCatalog,
): Promise<void> {
  const file = catalogPath(repository, vmId);
  const stored = BackupCatalogSchema.parse(withFiles(catalog, (f) => toCatalogFile(repository, vmId, f)));
  const problem = catalogProblem(stored, vmId);
  if (problem) throw new BackupRequestInvalid('invalid-record', `refusing to write ${file}: ${problem}`);
  await writeFileAtomic(file, `${JSON.stringify(stored, null, 2)}\n`);
}

/** The record with every disk file absolute at its layout place; anything else is refused (no side effect). */
function normaliseRecord(repository: string, vmId: string, record: BackupRecord): BackupRecord {
  const r = BackupRecordSchema.safeParse(record);
  if (!r.success)
    throw new BackupRequestInvalid('invalid-record', z.prettifyError(r.error), { cause: r.error });
  const rec = r.data;
  const images = new Set<string>();
  return {
    ...rec,
    disks: rec.disks.map((d) => {
      if (images.has(d.imageId))
        throw new BackupRequestInvalid('invalid-record', `image ${d.imageId} appears twice`);
      images.add(d.imageId);
      if (d.mode === 'incremental' && rec.parentBackupId === null)
        throw new BackupRequestInvalid('invalid-record', `disk ${d.target} is incremental but has no parent`);
      const want = diskFile(repository, vmId, d.imageId, rec.backupId);
      // Absolute as results carry it, or relative as backups.json stores it: the same place either way.
      const given = path.isAbsolute(d.file) ? d.file : fromCatalogFile(repository, vmId, d.file);
      if (given !== want)
        throw new BackupRequestInvalid('invalid-path', `disk ${d.target}: file ${d.file}, expected ${want}`);
      return { ...d, file: want };
    }),
  };
}

/** The files are where the record says, and their headers are what the record claims (full, or backed by the parent). */
async function checkRecordFiles(repository: string, vmId: string, rec: BackupRecord): Promise<void> {
  for (const d of rec.disks) {
    if (!(await checkPath(repository, d.file, 'file')))
      throw new BackupRequestInvalid('invalid-record', `disk ${d.target}: ${d.file} does not exist`);
    const h = await imageHeader(d.file, 'qcow2');
    const want =
      d.mode === 'incremental' && rec.parentBackupId !== null ? backupFileName(rec.parentBackupId) : null;
    const bad = (detail: string): never => {
      throw new BackupRequestInvalid('invalid-record', `disk ${d.target}: ${d.file} ${detail}`);
    };
    if (h.format !== 'qcow2') bad(`is ${h.format}, not qcow2`);
    if (h.virtualSize !== d.capacity) bad(`has ${h.virtualSize} bytes, the record says ${d.capacity}`);
    if (want === null && h.backingFile !== null) bad(`is a full backup but backs onto ${h.backingFile}`);
    if (want !== null && (h.backingFile !== want || h.backingFormat !== 'qcow2'))
      bad(`must back onto ${want} (qcow2), found ${h.backingFile ?? 'no backing file'}`);
  }
}

export type RecordOutcome = 'recorded' | 'already-recorded';

/**
 * Appends `record` (disk files absolute, or relative as stored) as the newest restore point. Idempotent: a
 * record with that backupId already there changes nothing ('already-recorded'). The parent must be the
 * newest restore point (the one the incremental was taken against), each file must exist where the layout
 * puts it with the header its mode implies. Every check runs before the catalog is written.
 */
export async function recordBackup(
  repository: string,
  vmId: string,
  record: BackupRecord,
  opts: LockOptions = {},
): Promise<RecordOutcome> {
  validRepository(repository);
  validUuid('vmId', vmId);
  const rec = normaliseRecord(repository, vmId, record);
  if (!(await checkPath(repository, vmDir(repository, vmId), 'dir')))
    throw new BackupRequestInvalid(
      'invalid-record',
      `${vmDir(repository, vmId)} does not exist (no backup files)`,
    );
  return withCatalogLock(
    repository,
    vmId,
    async () => {
      const catalog = await readCatalog(repository, vmId);
      if (catalog.backups.some((b) => b.backupId === rec.backupId)) return 'already-recorded';
      const last = lastBackup(catalog);
      if (rec.parentBackupId !== null && rec.parentBackupId !== last?.backupId)
        throw new BackupRequestInvalid(
          'invalid-record',
          `parent ${rec.parentBackupId} is not the newest restore point (${last?.backupId ?? 'none'})`,
        );
      if (rec.parentBackupId !== null && last) {
        for (const d of rec.disks)
          if (d.mode === 'incremental' && !last.disks.some((p) => p.imageId === d.imageId))
            throw new BackupRequestInvalid(
              'invalid-record',
              `disk ${d.target} is incremental but parent ${last.backupId} has no disk of image ${d.imageId}`,
            );
      }
      await checkRecordFiles(repository, vmId, rec);
      await writeCatalogLocked(repository, vmId, { ...catalog, backups: [...catalog.backups, rec] });
      return 'recorded';
    },
    opts,
  );
}

export type RemoveOutcome = 'removed' | 'not-recorded';

/**
 * Drops one restore point from the catalog (caller holds the catalog lock); its children become
 * self-contained in the catalog (parentBackupId null), so only call it once their files no longer back
 * onto the removed one's (prune.ts). Files are not touched.
 */
export async function removeBackupRecordLocked(
  repository: string,
  vmId: string,
  backupId: string,
): Promise<RemoveOutcome> {
  validUuid('backupId', backupId);
  const catalog = await readCatalog(repository, vmId);
  if (!catalog.backups.some((b) => b.backupId === backupId)) return 'not-recorded';
  const backups = catalog.backups
    .filter((b) => b.backupId !== backupId)
    .map((b) => (b.parentBackupId === backupId ? { ...b, parentBackupId: null } : b));
  await writeCatalogLocked(repository, vmId, { ...catalog, backups });
  return 'removed';
}

/** removeBackupRecordLocked under the catalog lock. */
export async function removeBackupRecord(
  repository: string,
  vmId: string,
  backupId: string,
  opts: LockOptions = {},
): Promise<RemoveOutcome> {
  validUuid('backupId', backupId);
  if (!(await checkPath(repository, vmDir(repository, vmId), 'dir'))) return 'not-recorded';
  return withCatalogLock(repository, vmId, () => removeBackupRecordLocked(repository, vmId, backupId), opts);
}
