// One libvirt connection per agent, opened lazily and reopened when libvirtd restarted (activities that
// failed meanwhile are retried by Temporal and find the new connection).
import type { DomainXmls } from '../storage/deletion-guard';
import { LibvirtConnection } from '../libvirt';

export interface LibvirtProvider {
  (): Promise<LibvirtConnection>;
  close(): Promise<void>;
}

export function libvirtProvider(uri: string): LibvirtProvider {
  let current: Promise<LibvirtConnection> | undefined;
  const get = async (): Promise<LibvirtConnection> => {
    if (current) {
      const conn = await current.catch(() => undefined);
      if (conn && (await conn.isAlive())) return conn;
      current = undefined;
      await conn?.close().catch(() => undefined);
    }
    current ??= LibvirtConnection.open(uri);
    return await current;
  };
  return Object.assign(get, {
    close: async () => {
      const conn = await current?.catch(() => undefined);
      current = undefined;
      await conn?.close();
    },
  });
}

/** Every domain's live (when running) and persistent XML: what the deletion guard checks against. */
export function domainXmlSource(libvirt: () => Promise<LibvirtConnection>): () => Promise<DomainXmls[]> {
  return async () => {
    const conn = await libvirt();
    const out: DomainXmls[] = [];
    for (const d of await conn.listDomains()) {
      const dom = await conn.lookupByUuid(d.uuid);
      try {
        const active = await dom.isActive();
        out.push({
          name: d.name,
          ...(active ? { live: await dom.xml() } : {}),
          inactive: await dom.xml({ inactive: true }),
        });
      } finally {
        dom.free();
      }
    }
    return out;
  };
}
