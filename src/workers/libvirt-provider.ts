// One libvirt connection per agent, opened lazily and reopened when libvirtd restarted (activities that
// failed meanwhile are retried by Temporal and find the new connection).
import type { DomainXmls } from '../libvirt';
import { LibvirtConnection, readDomainXmls } from '../libvirt';

export interface LibvirtProvider {
  (): Promise<LibvirtConnection>;
  close(): Promise<void>;
}

export function libvirtProvider(uri: string, opts: { events?: boolean } = {}): LibvirtProvider {
  let current: Promise<LibvirtConnection> | undefined;
  const get = async (): Promise<LibvirtConnection> => {
    if (current) {
      const conn = await current.catch(() => undefined);
      if (conn && (await conn.isAlive())) return conn;
      current = undefined;
      await conn?.close().catch(() => undefined);
    }
    current ??= LibvirtConnection.open(uri, opts);
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

/**
 * Every configured host's domains (live and persistent XML), each tagged with its host: what the checks
 * that speak of "any domain on any host" read (deletion guard, shared base, reconcile). This host's own
 * libvirtd is read through the agent's connection, every other host's through a connection of its own
 * (no events). A host whose libvirtd does not answer fails the whole read, naming it: the checks built on
 * it then refuse, retryably (fail closed), until it answers.
 */
export interface FleetDomains {
  (): Promise<DomainXmls[]>;
  close(): Promise<void>;
}

export function fleetDomainXmls(
  own: { hostId: string; libvirt: () => Promise<LibvirtConnection> },
  hostUris: Record<string, string>,
): FleetDomains {
  const others = Object.entries(hostUris)
    .filter(([id]) => id !== own.hostId)
    .map(([hostId, uri]) => ({ hostId, uri, libvirt: libvirtProvider(uri, { events: false }) }));
  const hosts = [{ hostId: own.hostId, uri: 'this host', libvirt: own.libvirt }, ...others];
  const read = async (): Promise<DomainXmls[]> => {
    const perHost = await Promise.all(
      hosts.map(async (h) => {
        try {
          return (await readDomainXmls(await h.libvirt())).map((d) => ({ ...d, host: h.hostId }));
        } catch (err) {
          const why = err instanceof Error ? err.message : String(err);
          throw new Error(`host ${h.hostId} (${h.uri}) did not answer: ${why}`, { cause: err });
        }
      }),
    );
    return perHost.flat();
  };
  return Object.assign(read, {
    close: async () => {
      await Promise.all(others.map((o) => o.libvirt.close()));
    },
  });
}
