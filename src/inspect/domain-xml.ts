// Disk chains from libvirt domain XML (live or inactive), parsed with fast-xml-parser.
// Chains are returned LEAF FIRST (the order of libvirt's nested <backingStore> elements):
// chain[0] is the disk's <source>, chain[1] its first <backingStore>, and so on.
// Live XML spells out the whole chain and ends it with an empty <backingStore/> (complete: true).
// Inactive XML usually names only the top (no <backingStore>: complete: false, the rest is decided
// by the qcow2 headers at start-up); an explicit empty <backingStore/> there also means "no backing".
import { XMLParser } from 'fast-xml-parser';

export interface ChainEntry {
  /** `file` for type='file', `dev` for type='block', `dir` for type='dir'; null for network/volume sources. */
  path: string | null;
  /** Source type attribute (file, block, network, volume, dir). */
  type: string;
  /** qcow2/raw/...: <driver type> for the top, <format type> for backing stores. */
  format: string | null;
  /** libvirt's node index (<source index> for the top, <backingStore index> below), live XML only. */
  index?: number;
}

export interface DiskChain {
  /** Target device name, e.g. vda. */
  target: string;
  /** disk, cdrom, floppy, lun. */
  device: string;
  /** Format of the top image (<driver type>). */
  format: string | null;
  /** Leaf first. Empty for a disk without a source (an empty cdrom drive). */
  chain: ChainEntry[];
  /** True when the chain ends with an explicit empty <backingStore/> (nothing below the last entry). */
  complete: boolean;
  /**
   * Live XML of a disk with a mirroring block job (active commit, copy): libvirt's <mirror job ready>.
   * `ready` is 'yes' once QEMU said the copy is synchronised (the only safe signal for a pivot: vdsm
   * learnt that cur == end can be reported earlier), 'pivot' / 'abort' while one is in flight.
   */
  mirror?: { job: string | null; ready: string | null };
}

type XmlNode = Record<string, unknown>;

const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: '@_',
  parseAttributeValue: false,
  parseTagValue: false,
  trimValues: true,
  // Keep entity handling to XML's predefined entities (&amp; in a path); no DOCTYPE entities.
  processEntities: true,
  htmlEntities: false,
});

function asArray(v: unknown): unknown[] {
  if (v === undefined || v === null) return [];
  return Array.isArray(v) ? v : [v];
}

function node(v: unknown): XmlNode | undefined {
  // An element with neither attributes nor children parses as '' (e.g. <backingStore/>).
  if (v === '') return {};
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as XmlNode) : undefined;
}

function attr(n: XmlNode | undefined, name: string): string | undefined {
  const v = n?.[`@_${name}`];
  return typeof v === 'string' ? v : undefined;
}

function sourcePath(type: string, source: XmlNode | undefined): string | null {
  if (!source) return null;
  switch (type) {
    case 'file':
      return attr(source, 'file') ?? null;
    case 'block':
      return attr(source, 'dev') ?? null;
    case 'dir':
      return attr(source, 'dir') ?? null;
    default:
      return null;
  }
}

function toIndex(s: string | undefined): number | undefined {
  if (s === undefined || !/^\d+$/.test(s)) return undefined;
  return Number(s);
}

export class DomainXmlError extends Error {
  override readonly name = 'DomainXmlError';
}

/**
 * The last documents parsed, by their text: the guard's scans read every domain's XML again and again, and
 * most of them have not changed (issue 13: parsing was an eighth of the host agent's CPU at 8 merges at once).
 */
const parsed = new Map<string, DiskChain[]>();
const PARSED_KEPT = 256;

/** Every <disk> of a <domain> document with its chain, leaf first (a copy the caller may change). */
export function parseDomainDiskChains(xml: string): DiskChain[] {
  let disks = parsed.get(xml);
  if (disks === undefined) {
    disks = parseDisks(xml);
    if (parsed.size >= PARSED_KEPT) parsed.delete(parsed.keys().next().value as string);
    parsed.set(xml, disks);
  }
  return structuredClone(disks);
}

function parseDisks(xml: string): DiskChain[] {
  let doc: XmlNode;
  try {
    doc = parser.parse(xml, true) as XmlNode;
  } catch (e) {
    throw new DomainXmlError(`invalid domain XML: ${e instanceof Error ? e.message : String(e)}`, {
      cause: e,
    });
  }
  const domain = node(doc.domain);
  if (!domain) throw new DomainXmlError('no <domain> element');
  const devices = node(asArray(domain.devices)[0]);
  const disks: DiskChain[] = [];
  for (const d of asArray(devices?.disk)) {
    const disk = node(d);
    if (!disk) continue;
    const target = attr(node(asArray(disk.target)[0]), 'dev');
    if (!target) continue;
    const type = attr(disk, 'type') ?? 'file';
    const format = attr(node(asArray(disk.driver)[0]), 'type') ?? null;
    const source = node(asArray(disk.source)[0]);
    const chain: ChainEntry[] = [];
    let complete = false;
    if (source) {
      const top: ChainEntry = { path: sourcePath(type, source), type, format };
      const idx = toIndex(attr(source, 'index'));
      if (idx !== undefined) top.index = idx;
      chain.push(top);
      let bs = disk.backingStore;
      for (let depth = 0; depth < 1000; depth++) {
        const b = node(asArray(bs)[0]);
        if (b === undefined) break; // no <backingStore>: unknown below
        const bType = attr(b, 'type');
        if (bType === undefined && b.source === undefined) {
          complete = true; // <backingStore/>: explicitly nothing below
          break;
        }
        const entry: ChainEntry = {
          path: sourcePath(bType ?? 'file', node(asArray(b.source)[0])),
          type: bType ?? 'file',
          format: attr(node(asArray(b.format)[0]), 'type') ?? null,
        };
        const bIdx = toIndex(attr(b, 'index'));
        if (bIdx !== undefined) entry.index = bIdx;
        chain.push(entry);
        bs = b.backingStore;
      }
    }
    const entry: DiskChain = { target, device: attr(disk, 'device') ?? 'disk', format, chain, complete };
    const mirror = node(asArray(disk.mirror)[0]);
    if (mirror) entry.mirror = { job: attr(mirror, 'job') ?? null, ready: attr(mirror, 'ready') ?? null };
    disks.push(entry);
  }
  return disks;
}

/** The domain's <name>. */
export function parseDomainName(xml: string): string | undefined {
  const doc = parser.parse(xml) as XmlNode;
  const name = node(doc.domain)?.name;
  return typeof name === 'string' ? name : undefined;
}
