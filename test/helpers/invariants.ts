// DESIGN.md invariant 4, checked from the outside: every volume file on disk is LEGAL and in the chain a
// VM uses, and that chain's metadata, qcow2 headers and libvirt definition agree.
import fs from 'node:fs/promises';
import { inspectImage } from '../../src/inspect/inspect-image';
import type { Domain } from '../../src/libvirt';
import type { StorageDomain } from '../../src/storage/storage-domain';

export interface InvariantReport {
  orphans: string[];
  disagreements: string[];
}

export async function checkImage(sd: StorageDomain, imageId: string, dom: Domain): Promise<InvariantReport> {
  const active = await dom.isActive();
  const inspection = await inspectImage(sd, imageId, {
    ...(active ? { liveXml: await dom.xml() } : {}),
    inactiveXml: await dom.xml({ inactive: true }),
  });
  const inChain = new Set(inspection.metadata.map((v) => v.volumeId));
  const files = (await fs.readdir(sd.imageDir(imageId))).filter((f) => /^[0-9a-f-]{36}$/.test(f));
  const volumes = await sd.listVolumes(imageId);
  const orphans = [
    ...files.filter((f) => !inChain.has(f)).map((f) => `file ${f} is in no chain`),
    ...volumes.filter((v) => v.legality !== 'LEGAL').map((v) => `volume ${v.volumeId} is ${v.legality}`),
  ];
  const disagreements = inspection.result.ok
    ? []
    : inspection.result.disagreements.map((d) => `${d.kind}: ${d.detail}`);
  return { orphans, disagreements };
}
