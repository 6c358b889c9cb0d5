// The activity contracts: what workflows may call, on which queue. Pure types (workflows import them with
// `import type`); the factories in host/, storage/ and engine/ implement them.
import type { AuditEvent } from '../audit/event';
import type { BackupCatalog, BackupRecord, DiskBackupPlan, FrozenDisk } from '../backup/types';
import type { BackupDisk, ChainReport } from '../schemas/results';
import type { Format, VolumeInfo, VolumeRef } from '../schemas/volume';

export type { AuditEvent } from '../audit/event';
export type { ChainReport } from '../schemas/results';
export type { Format, Legality, VolumeInfo, VolumeRef } from '../schemas/volume';
export type VmState = 'running' | 'paused' | 'shutoff' | 'crashed' | 'other';
export type JobKind = 'commit' | 'active-commit' | 'pull';

export interface VmDisk {
  target: string;
  path: string;
  /** Set when the disk's leaf lives in a storage domain under this host's storage root. */
  volume: VolumeRef | null;
  /** Asked for (`chains`) and `volume` set: the image's chain from metadata up to that leaf, base first. */
  chain?: VolumeInfo[];
}

export interface LocateVmInput {
  vmId: string;
  /** Found: describe the VM in the same call. */
  describe?: boolean;
  /** With `describe`: each disk's metadata chain too (what readChain returns), read in the same call. */
  chains?: boolean;
}

export interface LocateVmResult {
  found: boolean;
  hostId: string;
  vmId: string;
  name?: string;
  state?: VmState;
  /** When asked for (`describe`) and found: the VM's description, read in the same call. */
  description?: DescribeVmResult;
}

export interface DescribeVmResult {
  vmId: string;
  name: string;
  hostId: string;
  state: VmState;
  disks: VmDisk[];
}

export interface MergePlanInput {
  vmId: string;
  storageDomainId: string;
  imageId: string;
  baseVolumeId: string;
  topVolumeId: string;
  direction: 'backward' | 'forward';
}

/** What a merge will do, decided once on the VM's host from metadata, qcow2 headers and the domain XML. */
export interface MergePlan {
  mode: 'live' | 'cold';
  diskTarget: string;
  /** The image's chain from metadata, base first. */
  chain: VolumeInfo[];
  /** Volumes whose data moves and which are then removed. */
  removedVolumeIds: string[];
  /** The volume above top (backward) whose parent becomes base; null when top is the leaf. */
  childOfTopId: string | null;
  /** Live only: which libvirt job does the work. */
  jobKind: JobKind;
  basePath: string;
  topPath: string;
  /** backward: top is the active leaf (active commit + pivot); forward: the new parent of top. */
  topIsLeaf: boolean;
  newParentId: string | null;
  capacity: number;
}

export interface JobRef {
  vmId: string;
  diskTarget: string;
  jobKind: JobKind;
  basePath: string;
  topPath: string;
  /** Paths that must be gone from the chain once the job has done its work. */
  removedPaths: string[];
}

export interface StartJobResult {
  status: 'started' | 'adopted' | 'already-done';
}

export interface AbortJobResult {
  aborted: boolean;
  /**
   * The merge had passed its point of no return (an active commit pivoted, or a job that completed):
   * it must be finished, not reported cancelled. Absent in results recorded before it existed.
   */
  merged?: boolean;
}

/** The live merge's host steps 3-6 as one unit (DESIGN "The host finishes what it started"). */
export interface MergeOnHostInput extends JobRef {
  bandwidthBytesPerSec?: number;
  /** The path the disk's leaf has once the merge is done (step 6). */
  expectedLeafPath: string;
  /** The removal whose merge this is: it is sent the same stage reports (lean histories). */
  alsoReportTo?: { workflowId: string; runId: string; imageId: string };
}

/** How the unit found and left the job: the branches a retry took are visible in the history. */
export interface MergeOnHostResult {
  start: StartJobResult['status'];
  pivot: 'pivoted' | 'already-pivoted' | 'none';
  cur: number;
  end: number;
  /** The activity attempt that finished the unit (> 1: a retry resumed it). */
  attempt: number;
}

export type WaitOutcome = 'ready' | 'completed' | 'vm-stopped' | 'failed';
export interface WaitResult {
  outcome: WaitOutcome;
  cur: number;
  end: number;
  detail?: string;
}

/** What step 7 records: the merge's volumes, as planned. */
export interface RecordMergeInput {
  storageDomainId: string;
  imageId: string;
  direction: 'backward' | 'forward';
  baseVolumeId: string;
  topVolumeId: string;
  removedVolumeIds: string[];
  childOfTopId: string | null;
}

export interface HostActivities {
  listVms(): Promise<{ hostId: string; vms: Array<{ name: string; uuid: string; state: string }> }>;
  /** Read-only. */
  locateVm(input: LocateVmInput): Promise<LocateVmResult>;
  /** Read-only. */
  describeVm(input: { vmId: string }): Promise<DescribeVmResult>;
  /** Read-only: validates the request against the VM's real chains and returns the plan. */
  planMerge(input: MergePlanInput): Promise<MergePlan>;
  startJob(input: JobRef & { bandwidthBytesPerSec?: number }): Promise<StartJobResult>;
  waitForJob(input: JobRef & { expect: 'ready' | 'completed' }): Promise<WaitResult>;
  pivot(input: JobRef): Promise<void>;
  abortJob(input: JobRef): Promise<AbortJobResult>;
  /**
   * Steps 3-6 on the VM's host without the engine between them: start or adopt the job, wait for it,
   * pivot, verify. Reports each stage it stays in for 0.3 s to its workflow (signal `hostStage`). Cancellable until the
   * pivot call reaches libvirt: then the job is aborted (and the abort awaited) and it ends cancelled.
   */
  mergeOnHost(input: MergeOnHostInput): Promise<MergeOnHostResult>;
  verifyMerged(input: JobRef & { expectedLeafPath: string }): Promise<void>;
  /** Live: external disk-only snapshot of all disks at once (REUSE_EXT onto pre-created volumes). */
  snapshotDisks(input: {
    vmId: string;
    disks: Array<{ target: string; newLeafPath: string; newLeafFormat: Format }>;
  }): Promise<{ status: 'taken' | 'already-taken' }>;
  /** Backups, step 1: bitmap `bitmap` starts recording on the leaf of each of `targets` (qcow2 leaves). */
  addBackupBitmap(input: {
    vmId: string;
    bitmap: string;
    targets: string[];
  }): Promise<{ status: 'added' | 'already-added' }>;
  /** Each of `bitmaps` removed from every image of every disk's chain. */
  removeBackupBitmaps(input: {
    vmId: string;
    bitmaps: string[];
  }): Promise<{ removed: Array<{ target: string; bitmap: string }> }>;
  /** Shut-off VM: point disks at new sources in the persistent definition. */
  setDiskSources(input: {
    vmId: string;
    disks: Array<{ target: string; path: string; format: Format }>;
  }): Promise<{ changed: boolean }>;
}

export interface StorageActivities {
  /** Base first, ending at `leafVolumeId` (the VM's current leaf) or the image's one LEGAL leaf. */
  readChain(input: {
    storageDomainId: string;
    imageId: string;
    leafVolumeId?: string;
  }): Promise<VolumeInfo[]>;
  /** Creates a qcow2 child volume; a volume already there with the same parent counts as done. */
  createVolume(input: VolumeRef & { parentId: string; description?: string }): Promise<VolumeInfo>;
  /** The frozen volume stands for the snapshot: it carries its id and, when given, its description. */
  setSnapshotId(input: VolumeRef & { snapshotId: string | null; description?: string }): Promise<void>;
  /** Step 7. */
  recordMerge(input: RecordMergeInput): Promise<void>;
  /** Steps 7 and 8 in one task (lean histories v3): recordMerge, then deleteVolumes of the removed volumes. */
  recordAndDelete(input: RecordMergeInput): Promise<{ deleted: string[]; alreadyGone: string[] }>;
  /** Step 8, each volume behind the deletion guard. */
  deleteVolumes(input: {
    storageDomainId: string;
    imageId: string;
    volumeIds: string[];
  }): Promise<{ deleted: string[]; alreadyGone: string[] }>;
  /** Cold merge of a shut-off VM's image (qemu-img), heartbeating. */
  coldMerge(input: MergePlanInput & { plan: MergePlan; bandwidthBytesPerSec?: number }): Promise<void>;
  /** Removes volumes a failed createSnapshot made and never used. */
  discardVolumes(input: { storageDomainId: string; imageId: string; volumeIds: string[] }): Promise<void>;
  reconcileScan(input: { storageDomainId: string }): Promise<{
    orphans: VolumeRef[];
    reports: ChainReport[];
  }>;
}

/** Where a backup's files go and which backup they are. */
export interface BackupRef {
  repository: string;
  vmId: string;
  backupId: string;
}

export interface BackupActivities {
  /** Read-only: the VM's recorded restore points (an empty catalog when there are none). */
  readBackups(input: { repository: string; vmId: string }): Promise<BackupCatalog>;
  /** Read-only: the `livemerge-*` bitmaps of a frozen disk's leaf, oldest first (NBD mode's parent). */
  backupBitmaps(input: { disk: FrozenDisk }): Promise<string[]>;
  /** Read-only but for a scratch overlay of its own: step 3 for one disk. */
  planBackupDisk(
    input: BackupRef & { disk: FrozenDisk; bitmap?: string; reasonIfFull?: string },
  ): Promise<DiskBackupPlan>;
  /** Step 4 for one disk, heartbeating progress `{ copied, total }`. */
  copyBackupDisk(
    input: BackupRef & {
      disk: FrozenDisk;
      plan: DiskBackupPlan;
      parentBackupId?: string;
      bandwidthBytesPerSec?: number;
    },
  ): Promise<{ copiedBytes: number; file: string; status: 'copied' | 'already-copied' }>;
  /** Step 4, NBD mode: read-only exports of the frozen disks (a detached server, until stopBackupExports). */
  startBackupExports(
    input: BackupRef & { disks: Array<{ disk: FrozenDisk; plan: DiskBackupPlan }> },
  ): Promise<{ exports: Array<{ target: string; uri: string; bitmap?: string }> }>;
  stopBackupExports(input: BackupRef): Promise<void>;
  /** Step 6. */
  recordBackup(input: { repository: string; vmId: string; record: BackupRecord }): Promise<{
    status: 'recorded' | 'already-recorded';
  }>;
  /** A failed backup's files (partial or complete) and scratch overlays removed. */
  discardBackup(input: BackupRef & { imageIds: string[] }): Promise<void>;
  restoreBackupDisk(input: {
    repository: string;
    vmId: string;
    backupId: string;
    imageId: string;
    targetDir: string;
  }): Promise<{ path: string }>;
  pruneBackups(input: { repository: string; vmId: string; keep: number }): Promise<{
    removed: string[];
    kept: string[];
  }>;
}

export type { BackupCatalog, BackupDisk, BackupRecord, DiskBackupPlan, FrozenDisk };

export interface EngineActivities {
  /** Read-only: who holds the VM's lock (workflow `vm-lock:<vmId>`), null when nobody does. */
  vmLockHolder(input: { vmId: string }): Promise<{ workflowId: string; workflowType: string } | null>;
  audit(event: AuditEvent): Promise<{ written: boolean }>;
  configuredHosts(): Promise<string[]>;
  /** How long finding a VM waits for hosts that do not answer before HostUnreachable. */
  locatePolicy(): Promise<{ timeoutSeconds: number }>;
}
