import type { Domain } from '../../libvirt/domain';
import type { HostActivities, JobRef } from '../contracts';
import { nonRetryable } from '../failures';
import { walkLeafChain } from './chains';
import type { HostActivityDeps } from './deps';
import { chainPaths, isActive, opensLeafRaw, stateOf, vmDisk, withVm } from './vm';

/**
 * Step 6, read-only: the disk's leaf is where it must be and no removed volume is left in the live
 * chain, the persistent definition or the qcow2 headers below the leaf. Nothing is deleted unless this passes.
 */
export async function verifyChains(dom: Domain, input: JobRef & { expectedLeafPath: string }): Promise<void> {
  const live = isActive(await stateOf(dom)) ? await vmDisk(dom, input.diskTarget, false) : undefined;
  const persistent = await vmDisk(dom, input.diskTarget, true);
  const views: Array<[string, string[] | null]> = [];
  if (live !== undefined) views.push(['live XML', live && chainPaths(live)]);
  views.push(['persistent XML', persistent && chainPaths(persistent)]);
  // The leaf is read as the VM opens it: a raw one needs no qemu-img probe.
  const openedRaw = opensLeafRaw([live, persistent], input.expectedLeafPath);
  views.push(['qcow2 headers', await walkLeafChain(input.expectedLeafPath, openedRaw)]);
  const problems: string[] = [];
  for (const [view, chain] of views) {
    if (!chain) {
      problems.push(`${view}: no disk ${input.diskTarget}`);
      continue;
    }
    if (view !== 'qcow2 headers' && chain[0] !== input.expectedLeafPath)
      problems.push(`${view}: leaf is ${chain[0]}, expected ${input.expectedLeafPath}`);
    const left = input.removedPaths.filter((p) => chain.includes(p));
    if (left.length > 0) problems.push(`${view} still holds ${left.join(', ')}`);
  }
  if (problems.length > 0)
    throw nonRetryable(
      'ChainMismatch',
      `merge not verified on VM ${input.vmId}: ${problems.join('; ')}`,
      problems,
    );
}

export function makeVerifyMerged(deps: HostActivityDeps): HostActivities['verifyMerged'] {
  return async (input) => withVm(await deps.libvirt(), input.vmId, (dom) => verifyChains(dom, input));
}
