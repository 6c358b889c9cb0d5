// A VM never migrates while a merge of it runs (DESIGN.md "Hosts"). libvirt itself refuses to migrate a
// domain with an active block job; the steps of the host unit around the job (before the job starts,
// after the pivot until the result is verified) are covered by a hold: an element of our own
// namespace in the running domain's metadata, which livemerge's libvirt qemu hook (scripts/libvirt-hooks/
// livemerge, installed by set-up as /etc/libvirt/hooks/qemu.d/livemerge) finds in the incoming definition on
// the destination host and refuses ("migrate begin" exits 1 with the holders' workflow ids). The hold lives with the running domain (and
// its status XML across libvirtd restarts), so it ends with the VM, never on disk.
//
// Holders are attempt-scoped (`workflowId/activityId#attempt`): an attempt removes only its own entry, so
// a late release by an attempt the server gave up on cannot free a hold its successor took; a new attempt
// drops the entries of the attempts it supersedes (and a late hold of a superseded attempt adds nothing).
// An attempt that fails retryably keeps its entry: the VM stays held until the next attempt takes over.
import { XMLParser } from 'fast-xml-parser';
import { escapeXml } from '../../common/xml';
import type { Domain } from '../../libvirt/domain';

export const HOLD_NAMESPACE = 'https://livemerge.dev/xmlns/hold/1';
const HOLD_KEY = 'livemerge';

export interface Holder {
  /** `workflowId/activityId#attempt`. */
  holder: string;
  workflowId: string;
  since: string;
}

const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: '',
  removeNSPrefix: true,
  isArray: (name) => name === 'by',
});

export function parseHolders(xml: string | null): Holder[] {
  if (xml === null) return [];
  const doc = parser.parse(xml) as { hold?: { by?: Array<Partial<Holder>> } | string };
  const by = typeof doc.hold === 'object' ? (doc.hold.by ?? []) : [];
  return by
    .filter((b): b is Holder => typeof b.holder === 'string' && typeof b.workflowId === 'string')
    .map((b) => ({ holder: b.holder, workflowId: b.workflowId, since: String(b.since ?? '') }));
}

function holdXml(holders: Holder[]): string | null {
  if (holders.length === 0) return null;
  const by = holders.map(
    (h) =>
      `<by holder="${escapeXml(h.holder)}" workflowId="${escapeXml(h.workflowId)}" since="${escapeXml(h.since)}"/>`,
  );
  return `<hold>${by.join('')}</hold>`;
}

// Read-modify-write of one domain's metadata: serialised per VM within this agent (the only writer).
const queues = new Map<string, Promise<unknown>>();
function serialised<T>(vmId: string, fn: () => Promise<T>): Promise<T> {
  const prev = queues.get(vmId) ?? Promise.resolve();
  const next = prev.then(fn, fn);
  const tail = next.catch(() => undefined);
  queues.set(vmId, tail);
  void tail.then(() => {
    if (queues.get(vmId) === tail) queues.delete(vmId);
  });
  return next;
}

async function update(dom: Domain, change: (hs: Holder[]) => Holder[]): Promise<void> {
  await serialised(dom.uuid, async () => {
    const before = parseHolders(await dom.liveMetadata(HOLD_NAMESPACE));
    const after = change(before);
    if (JSON.stringify(after) === JSON.stringify(before)) return;
    await dom.setLiveMetadata(HOLD_NAMESPACE, HOLD_KEY, holdXml(after));
  });
}

export interface HoldRef {
  workflowId: string;
  activityId: string;
  attempt: number;
}

const holderOf = (r: HoldRef): string => `${r.workflowId}/${r.activityId}#${r.attempt}`;

/** The attempt number of an entry of the same activity as `r`, or null for any other entry. */
function attemptOf(h: Holder, r: HoldRef): number | null {
  const prefix = `${r.workflowId}/${r.activityId}#`;
  if (!h.holder.startsWith(prefix)) return null;
  const n = Number(h.holder.slice(prefix.length));
  return Number.isInteger(n) ? n : null;
}

/**
 * The holders with `ref` holding: entries of this activity's earlier attempts go (they are superseded); an
 * entry of a later attempt means this one is superseded itself and changes nothing.
 */
export function withHold(hs: Holder[], ref: HoldRef, since: string): Holder[] {
  const attempts = hs.map((h) => attemptOf(h, ref));
  if (attempts.some((a) => a !== null && a >= ref.attempt)) return hs;
  return [
    ...hs.filter((_, i) => attempts[i] === null),
    { holder: holderOf(ref), workflowId: ref.workflowId, since },
  ];
}

/**
 * Idempotent (see withHold). A domain that does not run cannot migrate live: nothing to hold.
 */
export async function holdVm(dom: Domain, ref: HoldRef): Promise<void> {
  if (!(await dom.isActive())) return;
  const since = new Date().toISOString();
  await update(dom, (hs) => withHold(hs, ref, since));
}

/** Idempotent: removes this attempt's entry. */
export async function releaseVm(dom: Domain, ref: HoldRef): Promise<void> {
  if (!(await dom.isActive())) return;
  const holder = holderOf(ref);
  await update(dom, (hs) => hs.filter((h) => h.holder !== holder));
}

/** Idempotent: removes every entry of the workflow (its merge is over on this host). */
export async function releaseWorkflowHolds(dom: Domain, workflowId: string): Promise<void> {
  if (!(await dom.isActive())) return;
  await update(dom, (hs) => hs.filter((h) => h.workflowId !== workflowId));
}
