// Prune (DESIGN.md "Backups"): while more than `keep` restore points remain, the OLDEST is merged into its
// children with the cold pull primitive (src/merge/cold/pull.ts): each child disk that backs onto the
// oldest's file pulls its data in and, the oldest being the root, ends with no backing file. Only then is
// the oldest dropped from the catalog, and only after that are its files deleted.
//
// Crash safety, step by step (every step is durable before the next starts, and each is re-runnable):
//   1. pull   — per disk, the pull's own state decides: 'pending' runs it (the safe rebase leaves the child's
//               guest view unchanged if interrupted), 'done' (header already without backing) skips it.
//   2. journal — `.prune-pending.json` names the backup and images about to go (atomic write).
//   3. catalog — backups.json without the oldest, its children with parentBackupId null (atomic write).
//   4. delete — the oldest's files, each removal fsynced, then the journal.
// A re-run first finishes a journal it finds: backup still in the catalog → the crash came before step 3,
// nothing was deleted, the journal is dropped and the loop decides again; backup gone from the catalog →
// the crash came after step 3, its files are deleted now. Files nobody recorded (a backup being copied) are
// never touched: only files the journal or the catalog names are deleted, and never one that a remaining
// restore point's file still backs onto.
import { z } from 'zod';
import { isUuid } from '../common/ids';
import {
  ChainMismatch,
  InvalidColdMergeRequest,
  coldPull,
  coldPullState,
  type ColdPullRequest,
} from '../merge/cold';
import { imageHeader, type RunOptions } from '../qemu/qemu-img';
import type { LockOptions } from '../storage/lock';
import { writeFileAtomic } from '../storage/metadata';
import { readFileNoFollow, removeFileDurably } from './atomic-file';
import { BackupCatalogCorrupt, BackupChainBroken, BackupRequestInvalid } from './errors';
import {
  backupFileName,
  checkPath,
  diskFile,
  imageDir,
  pruneJournalPath,
  validRepository,
  validUuid,
  vmDir,
} from './paths';
import { readCatalog, removeBackupRecordLocked, withCatalogLock } from './repository';
import type { BackupCatalog, BackupRecord } from './types';

export interface PruneRequest {
  repository: string;
  vmId: string;
  /** How many restore points remain (the newest ones); at least 1. */
  keep: number;
}

export interface PruneResult {
  /** Restore points removed by this call (oldest first), including one a crashed run had left half-deleted. */
  removed: string[];
  /** The restore points left, oldest first. */
  kept: string[];
}

/** The boundaries after which a crash can happen; `onStep` is told after each one is durable. */
export type PruneStep = 'pulled' | 'journaled' | 'cataloged' | 'deleted';

export interface PruneOptions {
  run?: RunOptions;
  lock?: LockOptions;
  /** Called after each step of removing `backupId` is durable; a throw stops the prune there, as a crash would. */
  onStep?: (step: PruneStep, backupId: string) => void | Promise<void>;
}

const uuid = z.string().refine(isUuid, 'must be a canonical lower-case UUID');
const JournalSchema = z
  .object({ version: z.literal(1), vmId: uuid, backupId: uuid, imageIds: z.array(uuid) })
  .strict();
type Journal = z.infer<typeof JournalSchema>;

async function readJournal(repository: string, vmId: string): Promise<Journal | null> {
  const file = pruneJournalPath(repository, vmId);
  let text: string | null;
  try {
    text = await readFileNoFollow(file);
  } catch (e) {
    throw new BackupCatalogCorrupt(file, 'cannot be opened as a regular file', { cause: e });
  }
  if (text === null) return null;
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new BackupCatalogCorrupt(file, 'not valid JSON', { cause: e });
  }
  const r = JournalSchema.safeParse(raw);
  if (!r.success) throw new BackupCatalogCorrupt(file, z.prettifyError(r.error), { cause: r.error });
  if (r.data.vmId !== vmId) throw new BackupCatalogCorrupt(file, `it belongs to VM ${r.data.vmId}`);
  return r.data;
}

/** Guard before a deletion: no remaining restore point's file of that image backs onto `backupId`'s file. */
async function assertUnreferenced(
  repository: string,
  vmId: string,
  catalog: BackupCatalog,
  imageId: string,
  backupId: string,
  opts: RunOptions,
): Promise<void> {
  const name = backupFileName(backupId);
  for (const r of catalog.backups) {
    if (r.backupId === backupId) continue;
    for (const d of r.disks) {
      if (d.imageId !== imageId || !(await checkPath(repository, d.file, 'file'))) continue;
      const h = await imageHeader(d.file, 'qcow2', opts);
      if (h.backingFile === name)
        throw new BackupChainBroken(
          d.file,
          `still backs onto ${diskFile(repository, vmId, imageId, backupId)}, which prune would delete`,
        );
    }
  }
}

async function deleteFiles(
  repository: string,
  vmId: string,
  catalog: BackupCatalog,
  journal: Journal,
  opts: RunOptions,
): Promise<void> {
  for (const imageId of journal.imageIds) {
    await assertUnreferenced(repository, vmId, catalog, imageId, journal.backupId, opts);
    const file = diskFile(repository, vmId, imageId, journal.backupId);
    if (await checkPath(repository, file, 'file')) await removeFileDurably(file);
  }
}

/** Step 1 for one child disk: pull the oldest's data into it unless its header shows that done. */
async function pullIntoChild(
  repository: string,
  vmId: string,
  oldest: BackupRecord,
  child: BackupRecord,
  imageId: string,
  opts: RunOptions,
): Promise<void> {
  const top = diskFile(repository, vmId, imageId, child.backupId);
  const base = diskFile(repository, vmId, imageId, oldest.backupId);
  if (!(await checkPath(repository, top, 'file')))
    throw new BackupChainBroken(top, 'the backup file is missing');
  await checkPath(repository, base, 'file'); // a symlink is refused; a missing base is the pull's to judge
  const req: ColdPullRequest = {
    dir: imageDir(repository, vmId, imageId),
    chain: [
      { file: backupFileName(oldest.backupId), format: 'qcow2' },
      { file: backupFileName(child.backupId), format: 'qcow2' },
    ],
    baseIndex: 0,
    topIndex: 1,
  };
  try {
    if ((await coldPullState(req, opts)).status === 'pending') await coldPull(req, opts);
  } catch (e) {
    if (e instanceof ChainMismatch || e instanceof InvalidColdMergeRequest)
      throw new BackupChainBroken(top, `cannot pull ${base} into it: ${e.message}`, { cause: e });
    throw e;
  }
}

async function removeOldest(
  repository: string,
  vmId: string,
  catalog: BackupCatalog,
  opts: PruneOptions,
): Promise<void> {
  const run = opts.run ?? {};
  const [oldest] = catalog.backups;
  if (!oldest) return;
  const step = async (s: PruneStep): Promise<void> => {
    await opts.onStep?.(s, oldest.backupId);
  };
  // 1. Every child disk whose image the oldest also has may back onto it: make it self-contained.
  const children = catalog.backups.filter((b) => b.parentBackupId === oldest.backupId);
  for (const child of children)
    for (const d of child.disks)
      if (oldest.disks.some((o) => o.imageId === d.imageId))
        await pullIntoChild(repository, vmId, oldest, child, d.imageId, run);
  for (const o of oldest.disks)
    await assertUnreferenced(repository, vmId, catalog, o.imageId, oldest.backupId, run);
  await step('pulled');
  // 2. The intent, so a crash after step 3 still knows which files to delete.
  const journal: Journal = {
    version: 1,
    vmId,
    backupId: oldest.backupId,
    imageIds: oldest.disks.map((d) => d.imageId),
  };
  const journalFile = pruneJournalPath(repository, vmId);
  await writeFileAtomic(journalFile, `${JSON.stringify(journal, null, 2)}\n`);
  await step('journaled');
  // 3. The restore point leaves the catalog; its children are now roots.
  await removeBackupRecordLocked(repository, vmId, oldest.backupId);
  const after = await readCatalog(repository, vmId);
  await step('cataloged');
  // 4. Only now its files (a disk the children lack goes with it), then the journal.
  await deleteFiles(repository, vmId, after, journal, run);
  await removeFileDurably(journalFile);
  await step('deleted');
}

export async function pruneBackups(req: PruneRequest, opts: PruneOptions = {}): Promise<PruneResult> {
  validRepository(req.repository);
  validUuid('vmId', req.vmId);
  if (!Number.isSafeInteger(req.keep) || req.keep < 1)
    throw new BackupRequestInvalid(
      'invalid-keep',
      `keep must be an integer >= 1, got ${JSON.stringify(req.keep)}`,
    );
  const { repository, vmId, keep } = req;
  if (!(await checkPath(repository, vmDir(repository, vmId), 'dir'))) return { removed: [], kept: [] };
  return withCatalogLock(
    repository,
    vmId,
    async () => {
      const removed: string[] = [];
      // A crashed run first: finish (or drop) what its journal says.
      const journal = await readJournal(repository, vmId);
      if (journal) {
        const catalog = await readCatalog(repository, vmId);
        if (!catalog.backups.some((b) => b.backupId === journal.backupId)) {
          await deleteFiles(repository, vmId, catalog, journal, opts.run ?? {});
          removed.push(journal.backupId);
        }
        await removeFileDurably(pruneJournalPath(repository, vmId));
      }
      for (;;) {
        const catalog = await readCatalog(repository, vmId);
        if (catalog.backups.length <= keep) return { removed, kept: catalog.backups.map((b) => b.backupId) };
        const oldest = catalog.backups[0]?.backupId ?? '';
        await removeOldest(repository, vmId, catalog, opts);
        removed.push(oldest);
      }
    },
    opts.lock,
  );
}
