// Restore (DESIGN.md "Backups"): one self-contained qcow2 per disk that reads exactly what the guest saw at
// the backup's snapshot. `qemu-img convert -O qcow2` reads the backup file through its (relative) backing
// chain and writes no backing file. It writes `<imageId>.qcow2.part` and renames it only when complete and
// fsynced, so a crash leaves no final file that is short; a final file already there means the restore of
// that disk finished ('already-restored').
import { constants } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { qemuImgInfo, runQemuImg, type RunOptions } from '../qemu/qemu-img';
import { errnoCode } from '../storage/errors';
import { fsyncDir } from '../storage/metadata';
import { BackupChainBroken, BackupNotFound, BackupRequestInvalid } from './errors';
import { checkPath, imageDir, validRepository, validUuid } from './paths';
import { findBackup, readCatalog } from './repository';

export interface RestoreDiskRequest {
  repository: string;
  vmId: string;
  backupId: string;
  imageId: string;
  /** An existing directory; the disk is written to `<targetDir>/<imageId>.qcow2`. */
  targetDir: string;
}

export interface RestoredDisk {
  target: string;
  imageId: string;
  /** The self-contained qcow2 written (absolute). */
  path: string;
  status: 'restored' | 'already-restored';
}

export interface RestoreRequest {
  repository: string;
  vmId: string;
  backupId: string;
  targetDir: string;
}

export interface RestoreResult {
  disks: RestoredDisk[];
}

/** The target directory: absolute, existing, a real directory (not a symlink to one). */
async function validTargetDir(targetDir: unknown): Promise<string> {
  if (typeof targetDir !== 'string' || !path.isAbsolute(targetDir))
    throw new BackupRequestInvalid(
      'invalid-path',
      `targetDir must be an absolute path, got ${JSON.stringify(targetDir)}`,
    );
  const dir = path.resolve(targetDir);
  try {
    const st = await fs.lstat(dir);
    if (!st.isDirectory())
      throw new BackupRequestInvalid('invalid-path', `targetDir ${dir} is not a directory`);
  } catch (e) {
    if (errnoCode(e) === 'ENOENT')
      throw new BackupRequestInvalid('target-dir-missing', `targetDir ${dir} does not exist`, { cause: e });
    throw e;
  }
  return dir;
}

/** True when `p` is a regular file; absent: false; a symlink or anything else: refused. */
async function isRegularFile(p: string): Promise<boolean> {
  try {
    const st = await fs.lstat(p);
    if (!st.isFile()) throw new BackupRequestInvalid('invalid-path', `${p} exists and is not a regular file`);
    return true;
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return false;
    throw e;
  }
}

async function fsyncFile(p: string): Promise<void> {
  const fh = await fs.open(p, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** The backing chain qemu-img will follow stays inside the image's directory of the repository. */
async function checkChain(repository: string, dir: string, file: string, opts: RunOptions): Promise<void> {
  const chain = await qemuImgInfo(file, { ...opts, backingChain: true, format: 'qcow2', forceShare: false });
  for (const link of chain) {
    const f = path.resolve(dir, link.filename);
    if (path.dirname(f) !== dir)
      throw new BackupChainBroken(file, `its backing chain leaves ${dir}: ${link.filename}`);
    if (link.format !== 'qcow2') throw new BackupChainBroken(f, `is ${link.format}, not qcow2`);
    if (!(await checkPath(repository, f, 'file'))) throw new BackupChainBroken(f, 'is missing');
  }
}

export async function restoreBackupDisk(
  req: RestoreDiskRequest,
  opts: RunOptions = {},
): Promise<RestoredDisk> {
  validRepository(req.repository);
  validUuid('vmId', req.vmId);
  validUuid('backupId', req.backupId);
  validUuid('imageId', req.imageId);
  const targetDir = await validTargetDir(req.targetDir);
  const record = findBackup(await readCatalog(req.repository, req.vmId), req.backupId);
  const disk = record.disks.find((d) => d.imageId === req.imageId);
  if (!disk) throw new BackupNotFound(req.vmId, req.backupId, req.imageId);
  const out = path.join(targetDir, `${req.imageId}.qcow2`);
  const done = { target: disk.target, imageId: disk.imageId, path: out };
  if (await isRegularFile(out)) return { ...done, status: 'already-restored' };

  if (!(await checkPath(req.repository, disk.file, 'file')))
    throw new BackupChainBroken(disk.file, 'the backup file is missing');
  await checkChain(req.repository, imageDir(req.repository, req.vmId, req.imageId), disk.file, opts);
  const part = `${out}.part`;
  if (await isRegularFile(part)) await fs.rm(part); // left by an interrupted restore: start it again
  try {
    // No -U: the backup files must not be changing under the copy (a prune's rebase holds them for writing).
    await runQemuImg(['convert', '-q', '-f', 'qcow2', '-O', 'qcow2', disk.file, part], opts);
    await fsyncFile(part);
    await fs.rename(part, out);
  } catch (e) {
    await fs.rm(part, { force: true });
    throw e;
  }
  await fsyncDir(targetDir);
  return { ...done, status: 'restored' };
}

/** Every disk of the restore point, one after the other (each idempotent on its own). */
export async function restoreBackup(req: RestoreRequest, opts: RunOptions = {}): Promise<RestoreResult> {
  validRepository(req.repository);
  validUuid('vmId', req.vmId);
  validUuid('backupId', req.backupId);
  await validTargetDir(req.targetDir);
  const record = findBackup(await readCatalog(req.repository, req.vmId), req.backupId);
  const disks: RestoredDisk[] = [];
  for (const d of record.disks) disks.push(await restoreBackupDisk({ ...req, imageId: d.imageId }, opts));
  return { disks };
}
