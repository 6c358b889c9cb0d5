// libvirt enum and flag values (libvirt-domain.h / libvirt-domain-snapshot.h, libvirt 9.0).
// Names drop the common C prefix: DomainState.RUNNING is VIR_DOMAIN_RUNNING.

/** virDomainState */
export const DomainState = {
  NOSTATE: 0,
  RUNNING: 1,
  BLOCKED: 2,
  PAUSED: 3,
  SHUTDOWN: 4,
  SHUTOFF: 5,
  CRASHED: 6,
  PMSUSPENDED: 7,
} as const;
export type DomainState = (typeof DomainState)[keyof typeof DomainState];

/** virDomainXMLFlags (VIR_DOMAIN_XML_*) */
export const DomainXmlFlags = {
  SECURE: 1 << 0,
  INACTIVE: 1 << 1,
  UPDATE_CPU: 1 << 2,
  MIGRATABLE: 1 << 3,
} as const;

/** virDomainModificationImpact (VIR_DOMAIN_AFFECT_*) */
export const DomainAffect = { CURRENT: 0, LIVE: 1 << 0, CONFIG: 1 << 1 } as const;

/** virDomainMetadataType: an element of our own namespace under <metadata>. */
export const DOMAIN_METADATA_ELEMENT = 2;

/** virDomainDefineFlags (VIR_DOMAIN_DEFINE_*) */
export const DomainDefineFlags = { VALIDATE: 1 << 0 } as const;

/** virDomainCreateFlags (VIR_DOMAIN_START_*) */
export const DomainStartFlags = {
  PAUSED: 1 << 0,
  AUTODESTROY: 1 << 1,
  BYPASS_CACHE: 1 << 2,
  FORCE_BOOT: 1 << 3,
  VALIDATE: 1 << 4,
  RESET_NVRAM: 1 << 5,
} as const;

/** virDomainDestroyFlagsValues (VIR_DOMAIN_DESTROY_*) */
export const DomainDestroyFlags = { DEFAULT: 0, GRACEFUL: 1 << 0, REMOVE_LOGS: 1 << 1 } as const;

/** virDomainUndefineFlagsValues (VIR_DOMAIN_UNDEFINE_*) */
export const DomainUndefineFlags = {
  MANAGED_SAVE: 1 << 0,
  SNAPSHOTS_METADATA: 1 << 1,
  NVRAM: 1 << 2,
  KEEP_NVRAM: 1 << 3,
  CHECKPOINTS_METADATA: 1 << 4,
  TPM: 1 << 5,
  KEEP_TPM: 1 << 6,
} as const;

/** virConnectListAllDomainsFlags (subset) */
export const ListDomainsFlags = {
  ACTIVE: 1 << 0,
  INACTIVE: 1 << 1,
  PERSISTENT: 1 << 2,
  TRANSIENT: 1 << 3,
} as const;

/** virDomainCheckpointCreateFlags (VIR_DOMAIN_CHECKPOINT_CREATE_*) */
export const CheckpointCreateFlags = {
  REDEFINE: 1 << 0,
  QUIESCE: 1 << 1,
  REDEFINE_VALIDATE: 1 << 2,
} as const;

/** virDomainCheckpointDeleteFlags (VIR_DOMAIN_CHECKPOINT_DELETE_*) */
export const CheckpointDeleteFlags = {
  CHILDREN: 1 << 0,
  METADATA_ONLY: 1 << 1,
  CHILDREN_ONLY: 1 << 2,
} as const;

/** virDomainSnapshotCreateFlags (VIR_DOMAIN_SNAPSHOT_CREATE_*) */
export const SnapshotCreateFlags = {
  REDEFINE: 1 << 0,
  CURRENT: 1 << 1,
  NO_METADATA: 1 << 2,
  HALT: 1 << 3,
  DISK_ONLY: 1 << 4,
  REUSE_EXT: 1 << 5,
  QUIESCE: 1 << 6,
  ATOMIC: 1 << 7,
  LIVE: 1 << 8,
  VALIDATE: 1 << 9,
} as const;

/** virDomainBlockJobType */
export const BlockJobType = {
  UNKNOWN: 0,
  PULL: 1,
  COPY: 2,
  COMMIT: 3,
  ACTIVE_COMMIT: 4,
  BACKUP: 5,
} as const;
export type BlockJobType = (typeof BlockJobType)[keyof typeof BlockJobType];

/** virConnectDomainEventBlockJobStatus (VIR_DOMAIN_BLOCK_JOB_*) */
export const BlockJobStatus = { COMPLETED: 0, FAILED: 1, CANCELED: 2, READY: 3 } as const;
export type BlockJobStatus = (typeof BlockJobStatus)[keyof typeof BlockJobStatus];

/** virDomainBlockJobAbortFlags */
export const BlockJobAbortFlags = { ASYNC: 1 << 0, PIVOT: 1 << 1 } as const;

/** virDomainBlockJobInfoFlags */
export const BlockJobInfoFlags = { BANDWIDTH_BYTES: 1 << 0 } as const;

/** virDomainBlockJobSetSpeedFlags */
export const BlockJobSetSpeedFlags = { BANDWIDTH_BYTES: 1 << 0 } as const;

/** virDomainBlockPullFlags */
export const BlockPullFlags = { BANDWIDTH_BYTES: 1 << 6 } as const;

/** virDomainBlockRebaseFlags */
export const BlockRebaseFlags = {
  SHALLOW: 1 << 0,
  REUSE_EXT: 1 << 1,
  COPY_RAW: 1 << 2,
  COPY: 1 << 3,
  RELATIVE: 1 << 4,
  COPY_DEV: 1 << 5,
  BANDWIDTH_BYTES: 1 << 6,
} as const;

/** virDomainBlockCommitFlags */
export const BlockCommitFlags = {
  SHALLOW: 1 << 0,
  DELETE: 1 << 1,
  ACTIVE: 1 << 2,
  RELATIVE: 1 << 3,
  BANDWIDTH_BYTES: 1 << 4,
} as const;

/** virDomainEventID (subset used here) */
export const DomainEventId = { LIFECYCLE: 0, BLOCK_JOB: 8, BLOCK_JOB_2: 16 } as const;

/** virDomainEventType (lifecycle `event`) */
export const LifecycleEvent = {
  DEFINED: 0,
  UNDEFINED: 1,
  STARTED: 2,
  SUSPENDED: 3,
  RESUMED: 4,
  STOPPED: 5,
  SHUTDOWN: 6,
  PMSUSPENDED: 7,
  CRASHED: 8,
} as const;
export type LifecycleEvent = (typeof LifecycleEvent)[keyof typeof LifecycleEvent];

/** virDomainEventStoppedDetailType (lifecycle `detail` when event is STOPPED) */
export const LifecycleStoppedDetail = {
  SHUTDOWN: 0,
  DESTROYED: 1,
  CRASHED: 2,
  MIGRATED: 3,
  SAVED: 4,
  FAILED: 5,
  FROM_SNAPSHOT: 6,
} as const;

/** virConnectCloseReason */
export const ConnectCloseReason = { ERROR: 0, EOF: 1, KEEPALIVE: 2, CLIENT: 3 } as const;
export type ConnectCloseReason = (typeof ConnectCloseReason)[keyof typeof ConnectCloseReason];

export function nameOf<T extends Record<string, number>>(table: T, value: number): string {
  for (const [k, v] of Object.entries(table)) if (v === value) return k;
  return String(value);
}
