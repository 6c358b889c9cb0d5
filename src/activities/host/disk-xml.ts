// Edits of a domain definition's <disk> elements with fast-xml-parser in order-preserving mode, so that
// everything else in the definition round-trips unchanged.
import { XMLBuilder, XMLParser } from 'fast-xml-parser';

type Node = Record<string, unknown> & { ':@'?: Record<string, string> };

const OPTIONS = {
  preserveOrder: true,
  ignoreAttributes: false,
  attributeNamePrefix: '@_',
  parseAttributeValue: false,
  parseTagValue: false,
  trimValues: false,
  suppressEmptyNode: true,
} as const;

const children = (n: Node, tag: string): Node[] => (n[tag] as Node[] | undefined) ?? [];
const tagOf = (n: Node): string | undefined => Object.keys(n).find((k) => k !== ':@');

/**
 * Points the disk `target` at `file` (a file source, driver type `format`) and drops its <backingStore>
 * (libvirt reads the rest of the chain from the qcow2 headers). Returns null when nothing changes.
 */
export function setDiskSource(xml: string, target: string, file: string, format: string): string | null {
  const doc = new XMLParser(OPTIONS).parse(xml) as Node[];
  const domain = doc.find((n) => tagOf(n) === 'domain');
  if (!domain) throw new Error('not a domain definition');
  const disk = children(domain, 'domain')
    .filter((n) => tagOf(n) === 'devices')
    .flatMap((d) => children(d, 'devices'))
    .find(
      (n) =>
        tagOf(n) === 'disk' &&
        children(n, 'disk').some((c) => tagOf(c) === 'target' && c[':@']?.['@_dev'] === target),
    );
  if (!disk) throw new Error(`no disk ${target} in the definition`);
  const parts = children(disk, 'disk');
  const source = parts.find((c) => tagOf(c) === 'source');
  const driver = parts.find((c) => tagOf(c) === 'driver');
  const hasBacking = parts.some((c) => tagOf(c) === 'backingStore');
  if (source?.[':@']?.['@_file'] === file && driver?.[':@']?.['@_type'] === format && !hasBacking)
    return null;
  disk[':@'] = { ...disk[':@'], '@_type': 'file' };
  if (source) source[':@'] = { '@_file': file };
  else parts.unshift({ source: [], ':@': { '@_file': file } });
  if (driver) driver[':@'] = { ...driver[':@'], '@_type': format };
  disk.disk = parts.filter((c) => tagOf(c) !== 'backingStore');
  return new XMLBuilder(OPTIONS).build(doc);
}
