// Invariant 2: no volume is deleted while it is in the live or persistent chain of any domain, or
// while a LEGAL volume names it as parent. Decoupled from libvirt: the caller supplies every
// domain's XML (live and/or inactive) through a callback; errors from it propagate, so a guard
// that cannot see the domains refuses by failing (fail closed).
//
// A chain entry matches the volume when its path (relative entries resolved against the image
// above them) equals the volume path or its realpath, when its realpath equals the volume's
// realpath, or, conservatively, when a relative entry's last component is the volumeId.
// A persistent definition usually names only the top image: chains that libvirt did not spell out
// to the end (no terminating <backingStore/>) are completed from the qcow2 headers, because that
// is the chain the domain will open at its next start.
import fs from 'node:fs/promises';
import path from 'node:path';
import { parseDomainDiskChains } from '../inspect/domain-xml';
import { walkQcow2Chain } from '../inspect/qcow2-chain';
import type { DomainXmls } from '../libvirt/domain-xmls';
import type { VolumeRef } from '../schemas/volume';
import { DeletionRefused } from './errors';
import type { StorageDomain } from './storage-domain';

export interface DeletionGuardDeps {
  domainXmls: () => Promise<DomainXmls[]>;
  domain: StorageDomain;
}

async function realpathOrNull(p: string): Promise<string | null> {
  try {
    return await fs.realpath(p);
  } catch {
    return null;
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await fs.stat(p);
    return true;
  } catch {
    return false;
  }
}

/** Every path of every disk chain in `xml` (relative entries kept with their resolved form). */
async function chainPaths(xml: string): Promise<Array<{ raw: string; abs: string | null }>> {
  const out: Array<{ raw: string; abs: string | null }> = [];
  for (const disk of parseDomainDiskChains(xml)) {
    let below: string | null = null;
    for (const e of disk.chain) {
      if (e.path === null) continue;
      const abs: string | null = path.isAbsolute(e.path)
        ? path.resolve(e.path)
        : below
          ? path.resolve(path.dirname(below), e.path)
          : null;
      out.push({ raw: e.path, abs });
      below = abs;
    }
    const last = disk.chain[disk.chain.length - 1];
    if (!disk.complete && last && last.type === 'file' && below !== null && (await exists(below))) {
      const walked = await walkQcow2Chain(below);
      for (const w of walked.entries.slice(1)) out.push({ raw: w.filename, abs: path.resolve(w.filename) });
      if (walked.missing !== undefined) out.push({ raw: walked.missing, abs: walked.missing });
    }
  }
  return out;
}

/** Throws DeletionRefused when `volume` may not be deleted now (see header); resolves otherwise. */
export async function assertDeletable(
  volume: Pick<VolumeRef, 'imageId' | 'volumeId'>,
  deps: DeletionGuardDeps,
): Promise<void> {
  const { domain } = deps;
  const target = domain.volumePath(volume.imageId, volume.volumeId); // validates both ids
  const realTarget = await realpathOrNull(target);
  const matches = async (e: { raw: string; abs: string | null }): Promise<boolean> => {
    if (!path.isAbsolute(e.raw) && path.basename(e.raw) === volume.volumeId) return true;
    if (e.abs === null) return false;
    if (e.abs === target || e.abs === realTarget) return true;
    const real = await realpathOrNull(e.abs);
    return real !== null && (real === target || real === realTarget);
  };

  for (const d of await deps.domainXmls()) {
    const views: Array<['in-live-chain' | 'in-persistent-chain', string | undefined]> = [
      ['in-live-chain', d.live],
      ['in-persistent-chain', d.inactive],
    ];
    for (const [reason, xml] of views) {
      if (xml === undefined) continue;
      for (const e of await chainPaths(xml)) {
        if (await matches(e))
          throw new DeletionRefused(reason, volume.volumeId, d.name, `chain entry ${e.raw}`);
      }
    }
  }

  let volumes;
  try {
    volumes = await domain.listVolumes(volume.imageId);
  } catch (e) {
    if ((e as { code?: string }).code === 'IMAGE_NOT_FOUND') return;
    throw e;
  }
  const child = volumes.find((v) => v.parentId === volume.volumeId && v.legality === 'LEGAL');
  if (child) throw new DeletionRefused('parent-of-legal-volume', volume.volumeId, child.volumeId);
}

/**
 * The guard, then StorageDomain.deleteVolume (idempotent), which re-checks the LEGAL-child rule
 * under the image lock so a child created between the two steps is still seen.
 */
export async function deleteVolumeGuarded(
  volume: Pick<VolumeRef, 'imageId' | 'volumeId'>,
  deps: DeletionGuardDeps,
): Promise<{ deleted: boolean }> {
  await assertDeletable(volume, deps);
  return deps.domain.deleteVolume(volume.imageId, volume.volumeId, { refuseIfLegalChild: true });
}
