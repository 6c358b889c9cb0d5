import type { DomainXmls } from '../../libvirt/domain-xmls';
import { StorageDomain } from '../../storage/storage-domain';
import type { Breakpoint } from '../breakpoints';

export interface StorageActivityDeps {
  storageRoot: string;
  /** Every domain's XML on this host, for the deletion guard (fails closed: an error refuses). */
  domainXmls: () => Promise<DomainXmls[]>;
  /** Failure injection only (src/testing/holds.ts); default: none. */
  breakpoint?: Breakpoint;
}

export function openDomain(deps: StorageActivityDeps, storageDomainId: string): Promise<StorageDomain> {
  const bp = deps.breakpoint;
  // The breakpoint `image-lock` holds a step while it owns an image's lock (a dead owner's lock is broken).
  return StorageDomain.open(
    deps.storageRoot,
    storageDomainId,
    bp ? { whileLocked: () => bp('image-lock', { cancellable: false }) } : {},
  );
}
