// Collects the evidence for compareChains for one image and runs it: metadata chain, file
// existence, qcow2 header chain (tolerating a broken one) and, when given, the disk of a
// domain's live and persistent XML.
import fs from 'node:fs/promises';
import path from 'node:path';
import { QemuImgError } from '../qemu/qemu-img';
import { errnoCode } from '../storage/errors';
import type { StorageDomain, StoredVolume } from '../storage/storage-domain';
import { compareChains, type CompareResult } from './compare';
import { parseDomainDiskChains, type DiskChain } from './domain-xml';
import { qcow2Chain, walkQcow2Chain, type Qcow2ChainEntry } from './qcow2-chain';

export interface InspectImageOptions {
  leafVolumeId?: string;
  /** Live domain XML (virDomainGetXMLDesc with flags 0). */
  liveXml?: string;
  /** Persistent domain XML (VIR_DOMAIN_XML_INACTIVE). */
  inactiveXml?: string;
  /** Disk target (vda) to compare; default: the disk whose chain contains a volume of the image. */
  target?: string;
}

export interface ImageInspection {
  metadata: StoredVolume[];
  qcow2: Qcow2ChainEntry[];
  libvirtLive?: DiskChain | null;
  libvirtInactive?: DiskChain | null;
  missingFiles: string[];
  result: CompareResult;
}

async function realpathOr(p: string): Promise<string> {
  try {
    return await fs.realpath(p);
  } catch {
    return p;
  }
}

/** Canonicalises libvirt paths (realpath where the file exists) so they compare with metadata paths. */
async function canonicalDisk(disk: DiskChain): Promise<DiskChain> {
  const chain = [];
  let below: string | null = null;
  for (const e of disk.chain) {
    let p = e.path;
    if (p !== null) {
      const abs: string = path.isAbsolute(p) || below === null ? p : path.resolve(path.dirname(below), p);
      p = await realpathOr(abs);
      below = p;
    }
    chain.push({ ...e, path: p });
  }
  return { ...disk, chain };
}

/** Picks the disk of `xml` that belongs to the image (by target, or by any chain path in `imageDir`). */
export async function diskForImage(
  xml: string,
  imageDir: string,
  target?: string,
): Promise<DiskChain | null> {
  const disks = await Promise.all(parseDomainDiskChains(xml).map(canonicalDisk));
  if (target !== undefined) return disks.find((d) => d.target === target) ?? null;
  return disks.find((d) => d.chain.some((e) => e.path !== null && path.dirname(e.path) === imageDir)) ?? null;
}

export async function inspectImage(
  domain: StorageDomain,
  imageId: string,
  opts: InspectImageOptions = {},
): Promise<ImageInspection> {
  const metadata = await domain.readChain(imageId, opts.leafVolumeId);
  const leaf = metadata[metadata.length - 1]!;
  const missing = new Set<string>();
  for (const v of metadata) {
    try {
      await fs.lstat(v.path);
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') missing.add(v.path);
      else throw e;
    }
  }
  let qcow2: Qcow2ChainEntry[] = [];
  if (!missing.has(leaf.path)) {
    try {
      qcow2 = await qcow2Chain(leaf.path);
    } catch (e) {
      if (!(e instanceof QemuImgError)) throw e;
      const walked = await walkQcow2Chain(leaf.path);
      qcow2 = walked.entries;
      if (walked.missing !== undefined) missing.add(walked.missing);
    }
  }
  const imageDir = domain.imageDir(imageId);
  const out: ImageInspection = { metadata, qcow2, missingFiles: [...missing], result: { ok: true } };
  if (opts.liveXml !== undefined) out.libvirtLive = await diskForImage(opts.liveXml, imageDir, opts.target);
  if (opts.inactiveXml !== undefined)
    out.libvirtInactive = await diskForImage(opts.inactiveXml, imageDir, opts.target);
  out.result = compareChains({
    metadata,
    qcow2,
    missingFiles: out.missingFiles,
    ...(out.libvirtLive !== undefined ? { libvirtLive: out.libvirtLive } : {}),
    ...(out.libvirtInactive !== undefined ? { libvirtInactive: out.libvirtInactive } : {}),
  });
  return out;
}
