// One libvirt connection per agent, opened lazily and reopened when libvirtd restarted (activities that
// failed meanwhile are retried by Temporal and find the new connection).
import type { DomainXmls } from '../libvirt';
import { LibvirtConnection, readDomainXmls } from '../libvirt';

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
  return async () => await readDomainXmls(await libvirt());
}
