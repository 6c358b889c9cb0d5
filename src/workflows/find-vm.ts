// findVm: where a VM runs and what its disks are, asked of the hosts' agents (read-only). The CLI's way to
// find a VM by name or UUID on any configured host; the workflow's id is the CLI's, its history the answer.
import type { DescribeVmResult } from '../activities/contracts';
import { isUuid } from '../common/ids';
import { probeHost } from './activities';
import { askHosts, engineSteps, locateAndDescribe } from './common';
import { fail } from './failures';

export interface FindVmInput {
  /** A libvirt domain name or UUID. */
  vm: string;
}

export async function findVm(input: FindVmInput): Promise<DescribeVmResult> {
  const vmId = isUuid(input.vm) ? input.vm : await uuidOfName(input.vm);
  return (await locateAndDescribe(vmId)).vm;
}

/**
 * The UUID of the domain named `name` on any host. Names are unique per host only: a name two hosts define
 * for different domains is ambiguous. Every host must answer (silent ones are asked again, as when locating
 * a VM) before a name is taken as unique or as not found.
 */
async function uuidOfName(name: string): Promise<string> {
  const hosts = await engineSteps().configuredHosts();
  const answers = await askHosts(
    hosts,
    (h) => probeHost(h).listVms(),
    () => false,
    {
      what: `VM ${JSON.stringify(name)}`,
      describe: (a) => `${a.hostId} ${a.vms.some((v) => v.name === name) ? 'has it' : 'does not have it'}`,
    },
  );
  const uuids = new Set<string>();
  for (const a of answers) for (const v of a.vms) if (v.name === name) uuids.add(v.uuid);
  const [only, ...more] = [...uuids];
  if (only !== undefined && more.length === 0) return only;
  if (only !== undefined)
    fail('InvalidRequest', `VM name ${name} names ${uuids.size} different domains: give its UUID`, {
      uuids: [...uuids],
    });
  return fail(
    'VmNotFound',
    `no VM ${JSON.stringify(name)} is defined on any of the hosts ${hosts.join(', ')}`,
  );
}
