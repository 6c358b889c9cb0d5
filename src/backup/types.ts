// The words of backups (DESIGN.md "Backups"), defined once: the repository's record, the per-disk plan
// and result, shared by the storage-side modules in src/backup, the activities, workflows and CLI.
// Pure types: safe for workflows to import with `import type`.
import type { Format } from '../schemas/volume';

/** A byte range of a virtual disk. */
export interface Extent {
  offset: number;
  length: number;
}

/** One disk as the backup's snapshot froze it: the chain below the snapshot's new leaf. */
export interface FrozenDisk {
  target: string;
  imageId: string;
  /** The frozen chain, base first, the frozen leaf last (absolute paths). */
  chain: Array<{ path: string; format: Format }>;
  /** Virtual size in bytes. */
  capacity: number;
}

export type DiskBackupMode = 'full' | 'incremental';

/** What a disk's backup will copy, decided once from the frozen chain's bitmaps (step 3). */
export interface DiskBackupPlan {
  target: string;
  imageId: string;
  mode: DiskBackupMode;
  /** Why a disk is full although an incremental was possible or asked for (no parent, raw, in-use bitmap, gap…). */
  reason?: string;
  /** Incremental: the bitmap whose union over the frozen chain is the changed blocks (`livemerge-<parent>`). */
  bitmap?: string;
  /** Incremental: the changed extents; full: the allocated (non-zero) extents of the frozen view. */
  extents: Extent[];
  /** The sum of `extents`' lengths. */
  changedBytes: number;
  /** Incremental: the throwaway overlay over the frozen chain that holds the merged bitmap (removed after the copy). */
  scratch?: string;
}

/** A disk of a recorded backup, as `backups.json` keeps it and the workflow result reports it. */
export type { BackupDisk } from '../schemas/results';
import type { BackupDisk } from '../schemas/results';

/** One recorded backup (a restore point). */
export interface BackupRecord {
  backupId: string;
  /** ISO 8601. */
  createdAt: string;
  /** The backup its incrementals are relative to; null once self-contained (full, or pruned onto). */
  parentBackupId: string | null;
  disks: BackupDisk[];
}

/** `<repository>/<vmId>/backups.json`: the restore points, oldest first. */
export interface BackupCatalog {
  version: 1;
  vmId: string;
  backups: BackupRecord[];
}
