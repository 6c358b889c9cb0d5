// One comparison of the three views of a chain (invariant 4): volume metadata, qcow2 headers and
// the libvirt definition (live and/or persistent). Pure: callers collect the evidence (see
// inspect-image.ts) and this names every disagreement.
//
// How a parent link is classified (the right side cannot be known, so the kind names the evidence):
//  - metadata-parent-mismatch: the header's backing reference names another volume of the image
//    (its relative name) or none, while the metadata names parent X ("metadata X, header Y").
//  - qcow2-backing-mismatch: the header's backing reference breaks the contract by itself: not the
//    parent's bare relative volumeId (absolute path, a directory part, a file that is no volume of
//    this image), or a backing file where the metadata says base.
//  - format-mismatch: the detected format, the header's backing format (-F) or a libvirt <format>
//    differs from the metadata format.
import path from 'node:path';
import { isUuid } from '../common/ids';
import type { VolumeMetadata } from '../storage/metadata';
import type { DiskChain } from './domain-xml';
import type { Qcow2ChainEntry } from './qcow2-chain';

export type DisagreementKind =
  | 'metadata-parent-mismatch'
  | 'metadata-chain-broken'
  | 'qcow2-backing-mismatch'
  | 'libvirt-chain-mismatch'
  | 'format-mismatch'
  | 'illegal-in-chain'
  | 'missing-file';

export interface Disagreement {
  kind: DisagreementKind;
  detail: string;
  volumeId?: string;
  /** Which view disagrees with the metadata. */
  source: 'metadata' | 'qcow2' | 'libvirt-live' | 'libvirt-persistent' | 'filesystem';
}

export type CompareResult = { ok: true } | { ok: false; disagreements: Disagreement[] };

export interface CompareInput {
  /** The metadata chain, BASE FIRST (StorageDomain.readChain), each with its data file path. */
  metadata: readonly (VolumeMetadata & { path: string })[];
  /** The header chain of the metadata leaf, LEAF FIRST (qcow2Chain / walkQcow2Chain). */
  qcow2: readonly Qcow2ChainEntry[];
  /** The disk from the live XML; null = the XML was given but no disk uses this image. */
  libvirtLive?: DiskChain | null;
  /** The disk from the persistent (inactive) XML; null as for libvirtLive. */
  libvirtInactive?: DiskChain | null;
  /** Files of the chain found missing on disk (absolute paths). */
  missingFiles?: readonly string[];
}

const norm = (p: string): string => path.resolve(p);

export function compareChains(input: CompareInput): CompareResult {
  const out: Disagreement[] = [];
  const meta = input.metadata;
  const missing = new Set((input.missingFiles ?? []).map(norm));
  const byPath = new Map(meta.map((v) => [norm(v.path), v]));

  if (meta.length === 0) {
    out.push({ kind: 'metadata-chain-broken', source: 'metadata', detail: 'metadata chain is empty' });
    return { ok: false, disagreements: out };
  }

  // 1. The metadata chain itself.
  meta.forEach((v, i) => {
    const expectedParent = i === 0 ? null : meta[i - 1]!.volumeId;
    if (v.parentId !== expectedParent) {
      out.push({
        kind: 'metadata-chain-broken',
        source: 'metadata',
        volumeId: v.volumeId,
        detail: `position ${i}: parentId ${v.parentId ?? 'null'} but the chain has ${expectedParent ?? 'nothing'} below it`,
      });
    }
    if (v.legality !== 'LEGAL') {
      out.push({
        kind: 'illegal-in-chain',
        source: 'metadata',
        volumeId: v.volumeId,
        detail: `${v.volumeId} is ${v.legality} but in the chain`,
      });
    }
    if (missing.has(norm(v.path))) {
      out.push({
        kind: 'missing-file',
        source: 'filesystem',
        volumeId: v.volumeId,
        detail: `data file ${v.path} does not exist`,
      });
    }
  });
  for (const m of missing) {
    if (!byPath.has(m))
      out.push({ kind: 'missing-file', source: 'qcow2', detail: `backing file ${m} does not exist` });
  }

  // 2. Metadata vs qcow2 headers.
  const qByPath = new Map(input.qcow2.map((e) => [norm(e.filename), e]));
  const leaf = meta[meta.length - 1]!;
  if (input.qcow2.length > 0 && norm(input.qcow2[0]!.filename) !== norm(leaf.path)) {
    out.push({
      kind: 'qcow2-backing-mismatch',
      source: 'qcow2',
      detail: `header chain starts at ${input.qcow2[0]!.filename}, not at leaf ${leaf.path}`,
    });
  }
  // Headers below a missing file cannot be read: volumes under it are not reported as absent.
  let unreachableBelow = -1;
  meta.forEach((v, i) => {
    if (missing.has(norm(v.path))) unreachableBelow = Math.max(unreachableBelow, i);
  });
  if ([...missing].some((m) => !byPath.has(m))) unreachableBelow = meta.length;
  meta.forEach((v, i) => {
    const e = qByPath.get(norm(v.path));
    if (!e) {
      if (!missing.has(norm(v.path)) && i >= unreachableBelow) {
        out.push({
          kind: 'qcow2-backing-mismatch',
          source: 'qcow2',
          volumeId: v.volumeId,
          detail: `${v.volumeId} is not in the header chain of leaf ${leaf.volumeId}`,
        });
      }
      return;
    }
    if (e.format !== v.format) {
      out.push({
        kind: 'format-mismatch',
        source: 'qcow2',
        volumeId: v.volumeId,
        detail: `metadata format ${v.format}, image is ${e.format}`,
      });
    }
    const parent = i === 0 ? null : meta[i - 1]!;
    compareBacking(v, parent, e, out);
  });

  // 3. Metadata vs libvirt.
  const expected = [...meta].reverse(); // leaf first, like libvirt
  if (input.libvirtLive !== undefined) compareLibvirt('libvirt-live', input.libvirtLive, expected, out);
  if (input.libvirtInactive !== undefined)
    compareLibvirt('libvirt-persistent', input.libvirtInactive, expected, out);

  return out.length === 0 ? { ok: true } : { ok: false, disagreements: out };
}

function compareBacking(
  v: VolumeMetadata & { path: string },
  parent: (VolumeMetadata & { path: string }) | null,
  e: Qcow2ChainEntry,
  out: Disagreement[],
): void {
  const id = v.volumeId;
  const ref = e.backingFilename;
  const metaParent = v.parentId;
  if (ref === undefined || ref === '') {
    if (metaParent !== null) {
      out.push({
        kind: 'metadata-parent-mismatch',
        source: 'qcow2',
        volumeId: id,
        detail: `metadata says parent ${metaParent}, qcow2 header has no backing file`,
      });
    }
    return;
  }
  const dir = path.dirname(norm(v.path));
  const resolved = path.isAbsolute(ref) ? norm(ref) : path.resolve(dir, ref);
  const namesVolumeOfImage = path.dirname(resolved) === dir && isUuid(path.basename(resolved));
  if (metaParent === null) {
    out.push({
      kind: namesVolumeOfImage ? 'metadata-parent-mismatch' : 'qcow2-backing-mismatch',
      source: 'qcow2',
      volumeId: id,
      detail: `metadata says ${id} is a base, qcow2 header names backing ${JSON.stringify(ref)}`,
    });
    return;
  }
  if (ref !== metaParent) {
    if (namesVolumeOfImage && path.basename(resolved) !== metaParent) {
      out.push({
        kind: 'metadata-parent-mismatch',
        source: 'qcow2',
        volumeId: id,
        detail: `metadata says parent ${metaParent}, qcow2 header says ${path.basename(resolved)} (${JSON.stringify(ref)})`,
      });
    } else {
      out.push({
        kind: 'qcow2-backing-mismatch',
        source: 'qcow2',
        volumeId: id,
        detail: `qcow2 backing reference ${JSON.stringify(ref)} is not the relative name ${JSON.stringify(metaParent)} of parent ${metaParent}`,
      });
    }
  }
  if (parent && e.backingFormat !== undefined && e.backingFormat !== parent.format) {
    out.push({
      kind: 'format-mismatch',
      source: 'qcow2',
      volumeId: id,
      detail: `header of ${id} opens its backing file as ${e.backingFormat}, metadata says parent ${parent.volumeId} is ${parent.format}`,
    });
  }
}

function compareLibvirt(
  source: 'libvirt-live' | 'libvirt-persistent',
  disk: DiskChain | null,
  expected: readonly (VolumeMetadata & { path: string })[],
  out: Disagreement[],
): void {
  const which = source === 'libvirt-live' ? 'live' : 'persistent';
  if (disk === null) {
    out.push({
      kind: 'libvirt-chain-mismatch',
      source,
      detail: `no disk of the ${which} definition uses this image`,
    });
    return;
  }
  const resolved: (string | null)[] = [];
  disk.chain.forEach((entry, j) => {
    let p = entry.path;
    if (p !== null && !path.isAbsolute(p)) {
      const below = j > 0 ? resolved[j - 1] : null;
      p = below ? path.resolve(path.dirname(below), p) : p;
    } else if (p !== null) p = norm(p);
    resolved.push(p);
    const want = expected[j];
    if (!want) {
      out.push({
        kind: 'libvirt-chain-mismatch',
        source,
        detail: `${which} chain of ${disk.target} has extra entry ${j}: ${entry.path ?? `(${entry.type})`}`,
      });
      return;
    }
    if (p === null || p !== norm(want.path)) {
      out.push({
        kind: 'libvirt-chain-mismatch',
        source,
        volumeId: want.volumeId,
        detail: `${which} chain of ${disk.target} entry ${j} is ${entry.path ?? `(${entry.type} source)`}, metadata has ${want.path}`,
      });
      return;
    }
    if (entry.format !== null && entry.format !== want.format) {
      out.push({
        kind: 'format-mismatch',
        source,
        volumeId: want.volumeId,
        detail: `${which} ${disk.target} entry ${j} format ${entry.format}, metadata says ${want.format}`,
      });
    }
  });
  if (disk.chain.length === 0) {
    out.push({
      kind: 'libvirt-chain-mismatch',
      source,
      detail: `${which} disk ${disk.target} has no source`,
    });
  } else if (disk.chain.length < expected.length && disk.complete) {
    out.push({
      kind: 'libvirt-chain-mismatch',
      source,
      volumeId: expected[disk.chain.length]!.volumeId,
      detail: `${which} chain of ${disk.target} ends after ${disk.chain.length} entries, metadata chain has ${expected.length}`,
    });
  }
}
