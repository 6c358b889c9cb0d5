// Processes and ports as the dev-stack tests look at them: through /proc, as an operator would.
import fs from 'node:fs/promises';
import net from 'node:net';
import { isAlive } from '../../src/devstack/processes';

/** A TCP port on 127.0.0.1 that nothing listens on right now. */
export async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', resolve);
  });
  const { port } = srv.address() as net.AddressInfo;
  await new Promise((r) => srv.close(r));
  return port;
}

/** Every live process for which `read(pid)` (a /proc file's text, '' when unreadable) satisfies `test`. */
async function processesWhere(read: (pid: string) => Promise<string>, test: (text: string) => boolean) {
  const pids: number[] = [];
  for (const e of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const text = await read(e).catch(() => '');
    if (test(text) && isAlive(Number(e))) pids.push(Number(e));
  }
  return pids;
}

/** Pids of every process whose command line mentions `needle`. */
export const processesMentioning = (needle: string): Promise<number[]> =>
  processesWhere(
    (p) => fs.readFile(`/proc/${p}/cmdline`, 'utf8'),
    (t) => t.includes(needle),
  );

/** Every live process in mount namespace `ns` (e.g. "mnt:[4026532177]"). */
export const processesIn = (ns: string): Promise<number[]> =>
  processesWhere(
    (p) => fs.readlink(`/proc/${p}/ns/mnt`),
    (t) => t === ns,
  );

/** Every live process that sees a mount of something under `dir` (any namespace). */
export const processesMounting = (dir: string): Promise<number[]> =>
  processesWhere(
    (p) => fs.readFile(`/proc/${p}/mountinfo`, 'utf8'),
    (t) => t.includes(dir),
  );
