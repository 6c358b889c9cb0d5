// The hosts of the local dev stack: host 1 is this machine's system libvirtd, hosts 2..N are sim hosts
// (src/devstack/sim-host.ts) under <dataDir>/hosts/<n>/. `dev up` records them in <dataDir>/dev-hosts.json
// so `dev status`, `dev down` and `vm create --host` know them.
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from '../config';
import { formatHostUris } from '../config';
import { simHostUri } from './sim-host';

export interface DevHost {
  id: string;
  /** libvirt URI of the host (config.libvirtUri for host 1). */
  uri: string;
  /** Whether its agent holds the storage role. */
  storage: boolean;
  /** The sim host's dir (absent for host 1, the system libvirtd). */
  dir?: string;
}

export const MAX_DEV_HOSTS = 9;

export function devHostsFile(dataDir: string): string {
  return path.join(dataDir, 'dev-hosts.json');
}

export function simHostDir(dataDir: string, n: number): string {
  return path.join(dataDir, 'hosts', String(n));
}

/** The hosts of an `n`-host stack, the storage role on `storageHost` (default the first). */
export function planDevHosts(config: Config, n: number, storageHost?: string): DevHost[] {
  if (!Number.isInteger(n) || n < 1 || n > MAX_DEV_HOSTS)
    throw new Error(`the number of hosts must be an integer from 1 to ${MAX_DEV_HOSTS}, got ${n}`);
  const hosts: DevHost[] = [{ id: config.hostId, uri: config.libvirtUri, storage: false }];
  for (let i = 2; i <= n; i++) {
    const dir = simHostDir(config.dataDir, i);
    hosts.push({ id: `${config.hostId}-h${i}`, uri: simHostUri(dir), storage: false, dir });
  }
  const storage = hosts.find((h) => h.id === (storageHost ?? config.hostId));
  if (!storage)
    throw new Error(
      `storage host ${JSON.stringify(storageHost)} is not one of the hosts: ${hosts.map((h) => h.id).join(', ')}`,
    );
  storage.storage = true;
  return hosts;
}

export function readDevHosts(dataDir: string): DevHost[] | undefined {
  let text: string;
  try {
    text = fs.readFileSync(devHostsFile(dataDir), 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  return JSON.parse(text) as DevHost[];
}

export function writeDevHosts(dataDir: string, hosts: DevHost[]): void {
  fs.mkdirSync(dataDir, { recursive: true });
  const file = devHostsFile(dataDir);
  fs.writeFileSync(file + '.tmp', JSON.stringify(hosts, null, 2) + '\n');
  fs.renameSync(file + '.tmp', file);
}

export function removeDevHosts(dataDir: string): void {
  fs.rmSync(devHostsFile(dataDir), { force: true });
}

/** The environment every worker of the stack gets: the host list and each host's URI. */
export function hostsEnv(hosts: DevHost[]): Record<string, string> {
  return {
    LIVEMERGE_HOSTS: hosts.map((h) => h.id).join(','),
    LIVEMERGE_HOST_URIS: formatHostUris(Object.fromEntries(hosts.map((h) => [h.id, h.uri]))),
  };
}
