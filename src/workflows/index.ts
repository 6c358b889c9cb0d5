// Every workflow type registered on `livemerge-engine` (DESIGN.md "Operations").
export { createSnapshot } from './create-snapshot';
export { mergeDisk } from './merge-disk';
export { reconcile } from './reconcile';
export { removeSnapshot } from './remove-snapshot';
export { listHostVms } from './smoke';
export { findVm } from './find-vm';
export { backupVm } from './backup-vm';
export { restoreBackup } from './restore-backup';
export { pruneBackups } from './prune-backups';
export { vmLock } from './vm-lock';
