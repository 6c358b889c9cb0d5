// The CLI's view of VMs and storage: it runs on a host, so it reads libvirt (LIBVIRT_DEFAULT_URI) and the
// storage root directly; everything that changes a chain goes through a workflow.
import fs from 'node:fs/promises';
import path from 'node:path';
import type { VolumeRef } from '../schemas/volume';
import { isUuid } from '../common/ids';
import type { Config } from '../config';
import { parseDomainDiskChains } from '../inspect/domain-xml';
import type { Domain } from '../libvirt';
import { LibvirtConnection, isNoDomainError } from '../libvirt';
import { volumeRefFromPath } from '../storage/paths';
import { StorageDomain } from '../storage/storage-domain';
import type { StoredVolume } from '../storage/storage-domain';
import { UsageError } from './output';

export interface CliDisk {
  target: string;
  /** The disk's leaf (its <source>). */
  path: string;
  format: string | null;
  /** Set when the leaf is a volume of a storage domain under the storage root. */
  volume: VolumeRef | null;
}

export interface VmView {
  vmId: string;
  name: string;
  active: boolean;
  disks: CliDisk[];
}

export async function withLibvirt<T>(
  config: Config,
  fn: (conn: LibvirtConnection) => Promise<T>,
): Promise<T> {
  const conn = await LibvirtConnection.open(config.libvirtUri, { events: false });
  try {
    return await fn(conn);
  } finally {
    await conn.close();
  }
}

/** The VM by name or UUID on this host; an unknown VM is bad input (exit 2). The caller frees the handle. */
export async function lookupVm(conn: LibvirtConnection, ref: string): Promise<Domain> {
  try {
    return isUuid(ref) ? await conn.lookupByUuid(ref) : await conn.lookupByName(ref);
  } catch (err) {
    if (isNoDomainError(err))
      throw new UsageError(`no VM ${JSON.stringify(ref)} is defined on this host (${conn.uri})`);
    throw err;
  }
}

/** Name, state and disks (live definition when it runs, persistent otherwise, as the host agent sees it). */
export async function describeDomain(dom: Domain, storageRoot: string): Promise<VmView> {
  const active = await dom.isActive();
  const disks = parseDomainDiskChains(await dom.xml({ inactive: !active }))
    .filter((d) => d.device === 'disk' && d.chain[0]?.path)
    .map((d): CliDisk => {
      const p = d.chain[0]!.path!;
      return { target: d.target, path: p, format: d.format, volume: volumeRefFromPath(storageRoot, p) };
    });
  return { vmId: dom.uuid, name: dom.name, active, disks };
}

export async function viewVm(config: Config, ref: string): Promise<VmView> {
  return withLibvirt(config, async (conn) => {
    const dom = await lookupVm(conn, ref);
    try {
      return await describeDomain(dom, config.storageRoot);
    } finally {
      dom.free();
    }
  });
}

/** Opened storage domains, one per id. */
export class StorageDomains {
  private readonly open = new Map<string, Promise<StorageDomain>>();
  constructor(private readonly storageRoot: string) {}
  get(storageDomainId: string): Promise<StorageDomain> {
    let sd = this.open.get(storageDomainId);
    if (!sd) {
      sd = StorageDomain.open(this.storageRoot, storageDomainId);
      this.open.set(storageDomainId, sd);
    }
    return sd;
  }
}

/** The disk's chain from storage metadata, base first, ending at the disk's actual leaf. */
export async function diskChain(storageDomains: StorageDomains, disk: CliDisk): Promise<StoredVolume[]> {
  const v = disk.volume;
  if (!v) return [];
  return (await storageDomains.get(v.storageDomainId)).readChain(v.imageId, v.volumeId);
}

/** Storage domain ids under the storage root (directories named by a UUID with an images/ directory). */
export async function listStorageDomains(storageRoot: string): Promise<string[]> {
  let names: string[];
  try {
    names = await fs.readdir(storageRoot);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  const out: string[] = [];
  for (const n of names.filter(isUuid).sort()) {
    const st = await fs.lstat(path.join(storageRoot, n, 'images')).catch(() => null);
    if (st?.isDirectory()) out.push(n);
  }
  return out;
}
