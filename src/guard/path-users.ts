// Which domains use a file: the one check behind the deletion guard (invariant 2), the shared-base check
// (invariant 3) and reconcile's scan, so that all three answer the same question the same way.
//
// A domain uses a file when the file is in the chain of one of its disks, in its live XML (a running
// domain) or its persistent XML. A persistent definition usually names only the top image: a chain that
// libvirt did not spell out to the end (no terminating <backingStore/>) is completed from the qcow2
// headers, because that is the chain the domain opens at its next start.
//
// Matching: a chain entry (relative entries resolved against the image above them) names a file when
// both resolve (realpath) to the same absolute path; a file that does not exist here is compared by its
// resolved absolute path. A relative entry, the form every backing reference in a storage domain has
// (the parent's volumeId), also names every file of that name: it may sit below an image this host cannot
// resolve, and volume ids are unique.
//
// Fails closed: whatever it cannot classify (the domain list cannot be read, an XML does not parse, a
// chain file cannot be stat'ed, resolved or its header read) throws PathCheckFailed, a retryable error
// naming what could not be checked. Nothing is skipped: sources without a path (network disks, empty
// drives) name no file.
import fs from 'node:fs/promises';
import path from 'node:path';
import { parseDomainDiskChains } from '../inspect/domain-xml';
import { walkChainFiles } from '../inspect/qcow2-header';
import type { DomainXmls } from '../libvirt/domain-xmls';
import { errnoCode } from '../storage/errors';

export type ChainView = 'live' | 'persistent';

export interface PathUse {
  domain: DomainXmls;
  view: ChainView;
  /** The chain entry as the XML or a qcow2 header names it. */
  entry: string;
  /** The asked-for file it names. */
  path: string;
}

/** The check could not be made; retrying may succeed (libvirtd back, a file no longer being replaced). */
export class PathCheckFailed extends Error {
  override readonly name = 'PathCheckFailed';
  readonly code = 'PATH_CHECK_FAILED' as const;
}

interface Entry {
  raw: string;
  /** Resolved and canonical; null for a relative entry with nothing above it to resolve against. */
  canonical: string | null;
}

const gone = (e: unknown): boolean => errnoCode(e) === 'ENOENT' || errnoCode(e) === 'ENOTDIR';

/** realpath, or the resolved absolute path when the file does not exist; any other error throws. */
async function canonical(p: string): Promise<string> {
  try {
    return await fs.realpath(p);
  } catch (e) {
    if (gone(e)) return path.resolve(p);
    throw e;
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await fs.stat(p);
    return true;
  } catch (e) {
    if (gone(e)) return false;
    throw e;
  }
}

/** Every file of every disk chain in `xml`, completed from the qcow2 headers where the XML stops. */
async function chainEntries(xml: string): Promise<Entry[]> {
  const out: Entry[] = [];
  for (const disk of parseDomainDiskChains(xml)) {
    let below: string | null = null;
    for (const e of disk.chain) {
      if (e.path === null) continue;
      const abs: string | null = path.isAbsolute(e.path)
        ? path.resolve(e.path)
        : below
          ? path.resolve(path.dirname(below), e.path)
          : null;
      out.push({ raw: e.path, canonical: abs === null ? null : await canonical(abs) });
      below = abs;
    }
    const last = disk.chain[disk.chain.length - 1];
    if (!disk.complete && last?.type === 'file' && below !== null && (await exists(below))) {
      const walked = await walkChainFiles(below, last.format === 'raw');
      for (const file of walked.files.slice(1)) out.push({ raw: file, canonical: await canonical(file) });
      if (walked.missing !== undefined)
        out.push({ raw: walked.missing, canonical: path.resolve(walked.missing) });
    }
  }
  return out;
}

/**
 * The entries of a domain's view, computed once per read of the domains: checks that share a read
 * (sharedFreshReads) share its entries too, which were resolved after that read.
 */
const entriesOf = new WeakMap<DomainXmls, Map<ChainView, Promise<Entry[]>>>();
function viewEntries(d: DomainXmls, view: ChainView, xml: string): Promise<Entry[]> {
  let views = entriesOf.get(d);
  if (!views) entriesOf.set(d, (views = new Map<ChainView, Promise<Entry[]>>()));
  let entries = views.get(view);
  if (!entries) {
    entries = chainEntries(xml);
    views.set(view, entries);
    // A failed resolution is not kept: the next check that shares this read tries again.
    entries.catch(() => views.delete(view));
  }
  return entries;
}

const message = (e: unknown): string => (e instanceof Error ? e.message : String(e));

/**
 * Every use of any of `paths` by the domains (a list, or how to read it), in domain order, live view
 * before persistent. `except`: the uuid of a domain whose own uses do not count.
 */
export async function findPathUsers(
  paths: readonly string[],
  domains: readonly DomainXmls[] | (() => Promise<DomainXmls[]>),
  opts: { except?: string } = {},
): Promise<PathUse[]> {
  const what = paths.length === 1 ? paths[0]! : `${paths.length} files (${paths.join(', ')})`;
  const failed = (step: string, cause: unknown): PathCheckFailed =>
    new PathCheckFailed(`cannot tell which domains use ${what}: ${step}: ${message(cause)}`, { cause });

  let list: readonly DomainXmls[];
  try {
    list = typeof domains === 'function' ? await domains() : domains;
  } catch (e) {
    throw failed('the domains could not be read', e);
  }
  const targets: Array<{ path: string; canonical: string; name: string }> = [];
  for (const p of paths) {
    try {
      targets.push({ path: p, canonical: await canonical(p), name: path.basename(p) });
    } catch (e) {
      throw failed(`${p} could not be resolved`, e);
    }
  }

  const uses: PathUse[] = [];
  for (const d of list) {
    if (opts.except !== undefined && d.uuid === opts.except) continue;
    const views: Array<[ChainView, string | undefined]> = [
      ['live', d.live],
      ['persistent', d.inactive],
    ];
    for (const [view, xml] of views) {
      if (xml === undefined) continue;
      let entries: Entry[];
      try {
        entries = await viewEntries(d, view, xml);
      } catch (e) {
        throw failed(`the ${view} disk chains of domain ${d.name} could not be read`, e);
      }
      for (const e of entries)
        for (const t of targets)
          if (e.canonical === t.canonical || (!path.isAbsolute(e.raw) && path.basename(e.raw) === t.name))
            uses.push({ domain: d, view, entry: e.raw, path: t.path });
    }
  }
  return uses;
}
