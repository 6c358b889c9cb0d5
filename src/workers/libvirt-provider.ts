// One libvirt connection per agent, opened lazily and reopened when libvirtd restarted (activities that
// failed meanwhile are retried by Temporal and find the new connection).
import { sharedFreshReads } from '../common/shared-reads';
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

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms / 1000} s`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

export interface FleetDomains {
  (): Promise<DomainXmls[]>;
  close(): Promise<void>;
}

/** How long one host's libvirtd may take to list its domains before it counts as not answering. */
const HOST_READ_TIMEOUT_MS = 30_000;

/** How many reads of the fleet a domain leaving a host during the read may cost before the read refuses. */
const FLEET_READ_ROUNDS = 3;

/**
 * Every configured host's domains (live and persistent XML), each tagged with its host: what the checks
 * that speak of "any domain on any host" read (deletion guard, shared base, reconcile). This host's own
 * libvirtd is read through the agent's connection, every other host's through a connection of its own
 * (no events). A host whose libvirtd does not answer fails the whole read, naming it: the checks built on
 * it then refuse, retryably (fail closed), until it answers.
 */
export function fleetDomainXmls(
  own: { hostId: string; libvirt: () => Promise<LibvirtConnection> },
  hostUris: Record<string, string>,
  /** Every configured host (LIVEMERGE_HOSTS): one without a URI makes every read refuse. */
  hosts: readonly string[] = [],
): FleetDomains {
  const others = Object.entries(hostUris)
    .filter(([id]) => id !== own.hostId)
    .map(([hostId, uri]) => ({ hostId, uri, libvirt: libvirtProvider(uri, { events: false }) }));
  const all = [{ hostId: own.hostId, uri: 'this host', libvirt: own.libvirt }, ...others];
  const unreadable = hosts.filter((h) => h !== own.hostId && hostUris[h] === undefined);
  /** One read of every host; `lost`: domains that left a host during it and that no host listed. */
  const readOnce = async (): Promise<{
    found: DomainXmls[];
    lost: Array<{ uuid: string; host: string }>;
  }> => {
    const vanished: Array<{ uuid: string; host: string }> = [];
    const perHost = await Promise.all(
      all.map(async (h) => {
        const gone: string[] = [];
        try {
          const xmls = await withTimeout(
            (async () => readDomainXmls(await h.libvirt(), gone))(),
            HOST_READ_TIMEOUT_MS,
          );
          vanished.push(...gone.map((uuid) => ({ uuid, host: h.hostId })));
          return xmls.map((d) => ({ ...d, host: h.hostId }));
        } catch (err) {
          const why = err instanceof Error ? err.message : String(err);
          throw new Error(`host ${h.hostId} (${h.uri}) did not answer: ${why}`, { cause: err });
        }
      }),
    );
    const found = perHost.flat();
    return { found, lost: vanished.filter((v) => !found.some((d) => d.uuid === v.uuid)) };
  };
  const read = async (): Promise<DomainXmls[]> => {
    if (unreadable.length > 0)
      throw new Error(
        `host(s) ${unreadable.join(', ')} are configured (LIVEMERGE_HOSTS) without a libvirt URI ` +
          `(LIVEMERGE_HOST_URIS): their domains cannot be read`,
      );
    // A domain that left one host while the hosts were read may be on none of the lists (a migration):
    // that read proves nothing, and the next one, which starts after it left, sees it where it went (or
    // nowhere, when it was undefined). A fleet where domains keep coming and going gets a few tries.
    let last: Array<{ uuid: string; host: string }> = [];
    for (let round = 0; round < FLEET_READ_ROUNDS; round++) {
      const { found, lost } = await readOnce();
      if (lost.length === 0) return found;
      last = lost;
    }
    throw new Error(
      `domain(s) ${last.map((v) => `${v.uuid} (left host ${v.host})`).join(', ')} vanished while the ` +
        `hosts were read, ${FLEET_READ_ROUNDS} times (a migration?): read again`,
    );
  };
  // Concurrent checks (a guard per merge) share one read that started after each of them asked.
  return Object.assign(sharedFreshReads(read), {
    close: async () => {
      await Promise.all(others.map((o) => o.libvirt.close()));
    },
  });
}
