// findVm: where a VM runs and what its disks are, asked of the hosts' agents (read-only). The CLI's way to
// find a VM by name or UUID on any configured host; the workflow's id is the CLI's, its history the answer.
import type { DescribeVmResult } from '../activities/contracts';
import { isUuid } from '../common/ids';
import { engine, hostActivities, probeHost } from './activities';
import { locateHost } from './common';
import { fail } from './failures';

export interface FindVmInput {
  /** A libvirt domain name or UUID. */
  vm: string;
}

export async function findVm(input: FindVmInput): Promise<DescribeVmResult> {
  const vmId = isUuid(input.vm) ? input.vm : await uuidOfName(input.vm);
  const located = await locateHost(vmId);
  return await hostActivities(located.hostId).short.describeVm({ vmId });
}

/**
 * The UUID of the domain named `name` on any host. Names are unique per host only: a name two hosts define
 * for different domains is ambiguous. Every host must answer before "not found" is said.
 */
async function uuidOfName(name: string): Promise<string> {
  const hosts = await engine.configuredHosts();
  const answers = await Promise.all(
    hosts.map((h) =>
      probeHost(h)
        .listVms()
        .then(
          (r) => ({ host: h, vms: r.vms }),
          () => ({ host: h, vms: null }),
        ),
    ),
  );
  const uuids = new Set<string>();
  for (const a of answers) for (const v of a.vms ?? []) if (v.name === name) uuids.add(v.uuid);
  const [only, ...more] = [...uuids];
  if (only !== undefined && more.length === 0) return only;
  if (only !== undefined)
    fail('InvalidRequest', `VM name ${name} names ${uuids.size} different domains: give its UUID`, {
      uuids: [...uuids],
    });
  const silent = answers.filter((a) => a.vms === null).map((a) => a.host);
  if (silent.length > 0)
    fail('HostUnreachable', `VM ${name}: host(s) ${silent.join(', ')} did not answer`, { silent });
  return fail(
    'VmNotFound',
    `no VM ${JSON.stringify(name)} is defined on any of the hosts ${hosts.join(', ')}`,
  );
}
