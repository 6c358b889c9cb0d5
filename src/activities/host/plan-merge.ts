import { findPathUsers } from '../../guard/path-users';
import { diskForImage, inspectImage } from '../../inspect/inspect-image';
import { domainLabel } from '../../libvirt/domain-xmls';
import { volumeRefFromPath } from '../../storage/paths';
import { StorageDomain } from '../../storage/storage-domain';
import type { HostActivities, MergePlan } from '../contracts';
import { nonRetryable } from '../failures';
import { toVolumeInfo } from '../volume-info';
import type { HostActivityDeps } from './deps';
import { isActive, stateOf, withVm } from './vm';

/**
 * Read-only (steps 1-2 on the host): the request checked against the metadata chain, the qcow2 headers
 * and the domain's live and persistent XML; every refusal is a non-retryable failure before any change.
 */
export function makePlanMerge(deps: HostActivityDeps): HostActivities['planMerge'] {
  return async (input) => {
    const conn = await deps.libvirt();
    return await withVm(conn, input.vmId, async (dom) => {
      const live = isActive(await stateOf(dom));
      const sd = await StorageDomain.open(deps.storageRoot, input.storageDomainId);
      const volumes = await sd.listVolumes(input.imageId);
      for (const id of [input.baseVolumeId, input.topVolumeId])
        if (!volumes.some((v) => v.volumeId === id))
          throw nonRetryable('InvalidRequest', `volume ${id} is not a volume of image ${input.imageId}`);

      const liveXml = live ? await dom.xml() : undefined;
      const inactiveXml = await dom.xml({ inactive: true });
      // The chain that matters is the one the VM uses: it ends at the disk's current source.
      const disk = await diskForImage(liveXml ?? inactiveXml, sd.imageDir(input.imageId));
      const leafId = disk?.chain[0]?.path
        ? volumeRefFromPath(deps.storageRoot, disk.chain[0].path)?.volumeId
        : undefined;
      if (!disk || !leafId)
        throw nonRetryable('InvalidRequest', `VM ${input.vmId} has no disk of image ${input.imageId}`);
      const inspection = await inspectImage(sd, input.imageId, {
        leafVolumeId: leafId,
        target: disk.target,
        ...(liveXml ? { liveXml } : {}),
        inactiveXml,
      });
      if (!inspection.result.ok)
        throw nonRetryable(
          'ChainMismatch',
          `image ${input.imageId}: ${inspection.result.disagreements.map((d) => `${d.kind}: ${d.detail}`).join('; ')}`,
          inspection.result.disagreements,
        );

      const chain = inspection.metadata;
      const ids = chain.map((v) => v.volumeId);
      const bi = ids.indexOf(input.baseVolumeId);
      const ti = ids.indexOf(input.topVolumeId);
      if (bi < 0 || ti < 0)
        throw nonRetryable(
          'InvalidRequest',
          `base and top must both be in the VM's chain of image ${input.imageId}`,
        );
      if (bi >= ti)
        throw nonRetryable(
          'InvalidRequest',
          `base ${input.baseVolumeId} is not an ancestor of top ${input.topVolumeId}`,
        );
      const base = chain[bi]!;
      const top = chain[ti]!;
      const topIsLeaf = ti === chain.length - 1;

      if (input.direction === 'backward') {
        // Invariant 3: never commit into a base that anything else also builds on.
        const children = volumes.filter((v) => v.parentId === base.volumeId && v.legality === 'LEGAL');
        if (children.length > 1)
          throw nonRetryable('SharedBase', `base ${base.volumeId} has ${children.length} children`);
        // Any domain on any host: a template base may serve a VM that runs elsewhere.
        const [other] = await findPathUsers([base.path], deps.domainXmls, { except: input.vmId });
        if (other)
          throw nonRetryable(
            'SharedBase',
            `base ${base.path} is also used by VM ${domainLabel(other.domain)} (${other.domain.uuid})`,
          );
      } else if (live && !topIsLeaf) {
        throw nonRetryable('InvalidRequest', 'a live forward merge can only pull into the active leaf');
      }

      const removed = input.direction === 'backward' ? chain.slice(bi + 1, ti + 1) : chain.slice(bi, ti);
      const newParent = input.direction === 'backward' ? base : (chain[bi - 1] ?? null);
      const plan: MergePlan = {
        mode: live ? 'live' : 'cold',
        diskTarget: disk.target,
        chain: chain.map(toVolumeInfo),
        removedVolumeIds: removed.map((v) => v.volumeId),
        childOfTopId: input.direction === 'backward' ? (chain[ti + 1]?.volumeId ?? null) : null,
        jobKind: input.direction === 'forward' ? 'pull' : topIsLeaf ? 'active-commit' : 'commit',
        // For a pull, the job's base is the new parent of top ('' = no backing file at all).
        basePath: input.direction === 'backward' ? base.path : (newParent?.path ?? ''),
        topPath: top.path,
        topIsLeaf,
        newParentId: newParent?.volumeId ?? null,
        capacity: base.capacity,
      };
      return plan;
    });
  };
}
