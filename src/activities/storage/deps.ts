import { Context } from '@temporalio/activity';
import type { DomainXmls } from '../../libvirt/domain-xmls';
import type { LockOwner } from '../../storage/lock';
import { StorageDomain } from '../../storage/storage-domain';
import type { Breakpoint } from '../breakpoints';

export interface StorageActivityDeps {
  storageRoot: string;
  /** Every configured host's domains, for the deletion guard and reconcile (fails closed: an error refuses). */
  domainXmls: () => Promise<DomainXmls[]>;
  /** Failure injection only (src/testing/holds.ts); default: none. */
  breakpoint?: Breakpoint;
}

export function openDomain(deps: StorageActivityDeps, storageDomainId: string): Promise<StorageDomain> {
  const bp = deps.breakpoint;
  // The breakpoint `image-lock` holds a step while it owns an image's lock (a dead owner's lock is broken).
  return StorageDomain.open(deps.storageRoot, storageDomainId, {
    lock: { onBrokenStale: logBrokenLock },
    ...(bp ? { whileLocked: () => bp('image-lock', { cancellable: false }) } : {}),
  });
}

function logBrokenLock(dead: LockOwner): void {
  const fields = { pid: dead.pid, host: dead.host, purpose: dead.purpose, acquiredAt: dead.acquiredAt };
  try {
    Context.current().log.warn('image lock: broke the lock of a dead owner', fields);
  } catch {
    // not inside an activity (a direct call from a test): nobody to tell
  }
}
