import type { Domain } from './domain';
import { isNoDomainError } from './errors';

/** The XML documents of one libvirt domain: what every "which domain uses this file" check reads. */
export interface DomainXmls {
  name: string;
  /** Set for every domain read from libvirt (callers that build the set by hand may leave it out). */
  uuid?: string;
  /** Live XML of a running domain. */
  live?: string;
  /** Persistent (inactive) XML of a defined domain. */
  inactive?: string;
  /** The host whose libvirtd defines it, when the set spans several hosts. */
  host?: string;
}

/** How a message names a domain: its name, and its host when known. */
export function domainLabel(d: Pick<DomainXmls, 'name' | 'host'>): string {
  return d.host === undefined ? d.name : `${d.name} on host ${d.host}`;
}

/**
 * Every domain's live (when running) and persistent XML. A domain undefined while the scan runs is
 * skipped (on this host it no longer references anything) and its UUID added to `vanished`: across hosts
 * it may have moved to another host whose list was read before it arrived.
 */
export async function readDomainXmls(
  conn: {
    listDomains(): Promise<Array<{ name: string; uuid: string }>>;
    lookupByUuid(uuid: string): Promise<Domain>;
  },
  vanished: string[] = [],
): Promise<DomainXmls[]> {
  const out: DomainXmls[] = [];
  for (const d of await conn.listDomains()) {
    try {
      const dom = await conn.lookupByUuid(d.uuid);
      try {
        const live = (await dom.isActive()) ? await dom.xml() : undefined;
        out.push({
          name: d.name,
          uuid: d.uuid,
          ...(live ? { live } : {}),
          inactive: await dom.xml({ inactive: true }),
        });
      } finally {
        dom.free();
      }
    } catch (err) {
      if (!isNoDomainError(err)) throw err;
      vanished.push(d.uuid);
    }
  }
  return out;
}
