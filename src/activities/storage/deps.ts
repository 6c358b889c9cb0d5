import type { DomainXmls } from '../../libvirt/domain-xmls';
import { StorageDomain } from '../../storage/storage-domain';

export interface StorageActivityDeps {
  storageRoot: string;
  /** Every domain's XML on this host, for the deletion guard (fails closed: an error refuses). */
  domainXmls: () => Promise<DomainXmls[]>;
}

export function openDomain(deps: StorageActivityDeps, storageDomainId: string): Promise<StorageDomain> {
  return StorageDomain.open(deps.storageRoot, storageDomainId);
}
