import { parseDomainDiskChains, type DiskChain } from '../../inspect/domain-xml';
import type { Domain } from '../../libvirt/domain';
import { DomainState } from '../../libvirt/constants';
import { isNoDomainError } from '../../libvirt/errors';
import { volumeRefFromPath } from '../../storage/paths';
import type { DescribeVmResult, VmDisk, VmState } from '../contracts';
import { nonRetryable } from '../failures';
import type { HostActivityDeps, HostLibvirt } from './deps';

export function vmState(state: number): VmState {
  switch (state) {
    case DomainState.RUNNING:
    case DomainState.BLOCKED:
      return 'running';
    case DomainState.PAUSED:
    case DomainState.PMSUSPENDED:
      return 'paused';
    case DomainState.SHUTOFF:
      return 'shutoff';
    case DomainState.CRASHED:
      return 'crashed';
    default:
      return 'other';
  }
}

export const isActive = (s: VmState): boolean => s === 'running' || s === 'paused';

/** Looks the VM up, runs `fn`, frees the handle. An unknown VM is a non-retryable VmNotFound. */
export async function withVm<T>(
  conn: HostLibvirt,
  vmId: string,
  fn: (dom: Domain) => Promise<T>,
): Promise<T> {
  let dom: Domain;
  try {
    dom = await conn.lookupByUuid(vmId);
  } catch (err) {
    if (isNoDomainError(err)) throw nonRetryable('VmNotFound', `no VM ${vmId} on this host`);
    throw err;
  }
  try {
    return await fn(dom);
  } finally {
    dom.free();
  }
}

export async function stateOf(dom: Domain): Promise<VmState> {
  return vmState((await dom.state()).state);
}

export async function describe(deps: HostActivityDeps, dom: Domain): Promise<DescribeVmResult> {
  const state = await stateOf(dom);
  const xml = await dom.xml({ inactive: !isActive(state) });
  const disks: VmDisk[] = parseDomainDiskChains(xml)
    .filter((d) => d.device === 'disk' && d.chain[0]?.path)
    .map((d) => {
      const p = d.chain[0]!.path!;
      return { target: d.target, path: p, volume: volumeRefFromPath(deps.storageRoot, p) };
    });
  return { vmId: dom.uuid, name: dom.name, hostId: deps.hostId, state, disks };
}

/** The disk as the live or persistent XML describes it (its chain leaf first, its leaf's format). */
export async function vmDisk(dom: Domain, target: string, inactive: boolean): Promise<DiskChain | null> {
  return parseDomainDiskChains(await dom.xml({ inactive })).find((d) => d.target === target) ?? null;
}

/**
 * True when every given view of the disk that has `leafPath` as its leaf opens it raw (<driver type='raw'>),
 * and at least one does: the header walk may then read a leaf with no qcow2 magic as raw (walkLeafChain).
 */
export function opensLeafRaw(views: Array<DiskChain | null | undefined>, leafPath: string): boolean {
  const naming = views.filter((d): d is DiskChain => d?.chain[0]?.path === leafPath);
  return naming.length > 0 && naming.every((d) => d.format === 'raw');
}

/** The paths of a disk's chain, leaf first ('' for an entry with no path). */
export const chainPaths = (disk: DiskChain): string[] => disk.chain.map((e) => e.path ?? '');

/** The disk's chain (leaf first) in the live or persistent XML. */
export async function diskChain(dom: Domain, target: string, inactive: boolean): Promise<string[] | null> {
  const disk = await vmDisk(dom, target, inactive);
  return disk ? chainPaths(disk) : null;
}

/** libvirt's live XML says the disk's mirroring job is synchronised (<mirror ready='yes'>). */
export async function mirrorReady(dom: Domain, target: string): Promise<boolean> {
  const disk = parseDomainDiskChains(await dom.xml()).find((d) => d.target === target);
  return disk?.mirror?.ready === 'yes';
}
