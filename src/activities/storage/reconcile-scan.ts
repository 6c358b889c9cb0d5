import { findPathUsers } from '../../guard/path-users';
import { inspectImage } from '../../inspect/inspect-image';
import type { DomainXmls } from '../../libvirt/domain-xmls';
import type { ChainReport, StorageActivities, VolumeRef } from '../contracts';
import type { StorageActivityDeps } from './deps';
import { openDomain } from './deps';

/**
 * Read-only. Orphans: ILLEGAL volumes that no LEGAL volume names as parent, and data files a crash left
 * without metadata (their deletion still passes the guard). Reports: every image whose metadata, qcow2
 * headers and the libvirt definition using it disagree.
 */
export function makeReconcileScan(deps: StorageActivityDeps): StorageActivities['reconcileScan'] {
  return async ({ storageDomainId }) => {
    const sd = await openDomain(deps, storageDomainId);
    let read: Promise<DomainXmls[]> | undefined;
    const xmls = (): Promise<DomainXmls[]> => (read ??= deps.domainXmls()); // read once, when first needed
    const orphans: VolumeRef[] = [];
    const reports: ChainReport[] = [];
    for (const imageId of await sd.listImages()) {
      const scan = await sd.scanImage(imageId);
      const legal = scan.volumes.filter((v) => v.legality === 'LEGAL');
      for (const v of scan.volumes)
        if (v.legality === 'ILLEGAL' && !legal.some((l) => l.parentId === v.volumeId))
          orphans.push({ storageDomainId, imageId, volumeId: v.volumeId });
      for (const volumeId of scan.dataWithoutMetadata) orphans.push({ storageDomainId, imageId, volumeId });
      if (legal.length === 0) continue;

      // The domain whose chains hold a file of the image (the last one, if several) is compared with it.
      const files = [
        ...scan.volumes.map((v) => v.path),
        ...scan.dataWithoutMetadata.map((id) => sd.volumePath(imageId, id)),
      ];
      const user: Partial<DomainXmls> = (await findPathUsers(files, xmls)).at(-1)?.domain ?? {};
      try {
        const inspection = await inspectImage(sd, imageId, {
          ...(user.live ? { liveXml: user.live } : {}),
          ...(user.inactive ? { inactiveXml: user.inactive } : {}),
        });
        reports.push({
          storageDomainId,
          imageId,
          ok: inspection.result.ok,
          disagreements: inspection.result.ok ? [] : inspection.result.disagreements,
        });
      } catch (err) {
        reports.push({
          storageDomainId,
          imageId,
          ok: false,
          disagreements: [
            { kind: 'metadata-chain-broken', detail: err instanceof Error ? err.message : String(err) },
          ],
        });
      }
    }
    return { orphans, reports };
  };
}
