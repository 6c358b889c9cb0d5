import type { DescribeVmResult, HostActivities } from '../contracts';
import type { HostActivityDeps } from './deps';
import { describe, vmState, withVm } from './vm';
import { isNoDomainError } from '../../libvirt/errors';
import { StorageDomain } from '../../storage/storage-domain';
import { toVolumeInfo } from '../volume-info';

/** Read-only: the domains libvirtd knows on this host. */
export function makeListVms(deps: HostActivityDeps): HostActivities['listVms'] {
  return async () => {
    const conn = await deps.libvirt();
    const vms = await conn.listDomains();
    return {
      hostId: deps.hostId,
      vms: vms.map(({ name, uuid, state }) => ({ name, uuid, state: vmState(state) })),
    };
  };
}

/** Read-only: whether this host defines the VM, and its state (and, asked for, its description). */
export function makeLocateVm(deps: HostActivityDeps): HostActivities['locateVm'] {
  return async ({ vmId, describe: andDescribe, chains }) => {
    const conn = await deps.libvirt();
    try {
      const dom = await conn.lookupByUuid(vmId);
      try {
        return {
          found: true,
          hostId: deps.hostId,
          vmId,
          name: dom.name,
          state: vmState((await dom.state()).state),
          ...(andDescribe
            ? { description: await describeWith(deps, await describe(deps, dom), chains) }
            : {}),
        };
      } finally {
        dom.free();
      }
    } catch (err) {
      if (isNoDomainError(err)) return { found: false, hostId: deps.hostId, vmId };
      throw err;
    }
  };
}

/** The description with each storage disk's metadata chain (the shared storage is readable from every host). */
async function describeWith(
  deps: HostActivityDeps,
  vm: DescribeVmResult,
  chains: boolean | undefined,
): Promise<DescribeVmResult> {
  if (!chains) return vm;
  const disks = await Promise.all(
    vm.disks.map(async (d) => {
      if (!d.volume) return d;
      const sd = await StorageDomain.open(deps.storageRoot, d.volume.storageDomainId);
      return { ...d, chain: (await sd.readChain(d.volume.imageId, d.volume.volumeId)).map(toVolumeInfo) };
    }),
  );
  return { ...vm, disks };
}

/** Read-only: the VM's disks, each mapped to its storage-domain volume when it has one. */
export function makeDescribeVm(deps: HostActivityDeps): HostActivities['describeVm'] {
  return async ({ vmId }) => withVm(await deps.libvirt(), vmId, (dom) => describe(deps, dom));
}
