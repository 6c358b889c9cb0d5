// The CLI's view of VMs and storage: a VM is found through the hosts' agents (workflow findVm), wherever
// it runs; the shared storage root is read directly; everything that changes a chain goes through a
// workflow. The local libvirtd (LIBVIRT_DEFAULT_URI) is read only by the dev commands.
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { VolumeRef } from '../schemas/volume';
import { isUuid } from '../common/ids';
import type { Config } from '../config';
import { parseDomainDiskChains } from '../inspect/domain-xml';
import type { Domain, LibvirtConnection } from '../libvirt';
import { volumeRefFromPath } from '../storage/paths';
import { StorageDomain } from '../storage/storage-domain';
import type { StoredVolume } from '../storage/storage-domain';
import { ENGINE_TASK_QUEUE } from '../common/task-queues';
import type { findVm as FindVm } from '../workflows/find-vm';
import { OperationFailed, UsageError } from './output';
import { failureMessageOf, failureTypeOf, withTemporal } from './workflows';

export interface CliDisk {
  target: string;
  /** The disk's leaf (its <source>). */
  path: string;
  /** Set when the leaf is a volume of a storage domain under the storage root. */
  volume: VolumeRef | null;
}

export interface VmView {
  vmId: string;
  name: string;
  /** The host that runs (or defines) it. */
  hostId: string;
  active: boolean;
  disks: CliDisk[];
}

export async function withLibvirt<T>(
  config: Config,
  fn: (conn: LibvirtConnection) => Promise<T>,
): Promise<T> {
  // Loaded here: most commands ask Temporal only, and the libvirt binding (koffi) costs 25-35 ms to load.
  const { LibvirtConnection } = await import('../libvirt');
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
    const { isNoDomainError } = await import('../libvirt');
    if (isNoDomainError(err))
      throw new UsageError(`no VM ${JSON.stringify(ref)} is defined on this host (${conn.uri})`);
    throw err;
  }
}

/** Name, state and disks (live definition when it runs, persistent otherwise, as the host agent sees it). */
export async function describeDomain(dom: Domain, storageRoot: string, hostId: string): Promise<VmView> {
  const active = await dom.isActive();
  const disks = parseDomainDiskChains(await dom.xml({ inactive: !active }))
    .filter((d) => d.device === 'disk' && d.chain[0]?.path)
    .map((d): CliDisk => {
      const p = d.chain[0]!.path!;
      return { target: d.target, path: p, volume: volumeRefFromPath(storageRoot, p) };
    });
  return { vmId: dom.uuid, name: dom.name, hostId, active, disks };
}

/** The VM by name or UUID on any configured host, as its host's agent describes it; unknown: exit 2. */
export async function viewVm(config: Config, ref: string): Promise<VmView> {
  const found = await withTemporal(config, async (client) => {
    try {
      return await client.workflow.execute<typeof FindVm>('findVm', {
        taskQueue: ENGINE_TASK_QUEUE,
        workflowId: `find-vm:${ref}:${randomUUID()}`,
        args: [{ vm: ref }],
        // With no engine to run it, the lookup ends instead of waiting for ever (it may wait for silent
        // hosts twice: to resolve the name, then to locate the VM).
        workflowExecutionTimeout: `${2 * config.locateTimeoutSeconds + 60}s`,
      });
    } catch (err) {
      if (failureTypeOf(err) === 'VmNotFound') throw new UsageError(failureMessageOf(err));
      throw new OperationFailed(`cannot find VM ${JSON.stringify(ref)}: ${failureMessageOf(err)}`);
    }
  });
  return {
    vmId: found.vmId,
    name: found.name,
    hostId: found.hostId,
    active: found.state === 'running' || found.state === 'paused',
    disks: found.disks.map((d) => ({ target: d.target, path: d.path, volume: d.volume })),
  };
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
