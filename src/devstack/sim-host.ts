// A simulated hypervisor host on this machine: a libvirtd (and virtlogd) of its own in a private mount
// namespace, with private libvirt state, config, logs and cache bound over the fixed directories libvirt's
// QEMU driver was built with, its own host UUID, socket, and migration/display port ranges (docs/hosts.md).
//
// Layout of a host dir:
//   etc/ lib/ run/ log/ cache/   bound over /etc/libvirt, /var/lib/libvirt, /run/libvirt, /var/log/libvirt,
//                                /var/cache/libvirt inside the namespace
//   sock/libvirt-sock            its socket (unix_sock_dir), reachable from outside the namespace
//   host-uuid                    its host_uuid, kept across restarts
//   libvirtd.pid virtlogd.pid    the daemons' own pid files
//   ns-mnt ns-uts                the namespace's ids (readlink /proc/<pid>/ns/...), while it exists
//   start                        the script run inside the namespace
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { daemonPid, delay, isAlive, signal } from './processes';

const exec = promisify(execFile);

export interface SimHostOptions {
  dir: string;
  /** 1-based host number; picks distinct migration/display port ranges */
  index: number;
  hostUuid?: string;
}

export interface SimHost {
  dir: string;
  uri: string;
  socket: string;
  hostUuid: string;
}

/** Longest path a unix socket address holds (sun_path is 108 bytes with its NUL). */
const MAX_SOCKET_PATH = 107;
const START_TIMEOUT_MS = 30_000;
const STOP_GRACE_MS = 10_000;
/** The directories libvirt's QEMU driver is built with, and the host dir's subdirectory bound over each. */
const BINDS: ReadonlyArray<[string, string]> = [
  ['run', '/run/libvirt'],
  ['lib', '/var/lib/libvirt'],
  ['etc', '/etc/libvirt'],
  ['log', '/var/log/libvirt'],
  ['cache', '/var/cache/libvirt'],
];
/** qemu.conf keys this module owns in a sim host's copy. */
const MANAGED_QEMU_KEYS = [
  'cgroup_controllers',
  'namespaces',
  'migration_port_min',
  'migration_port_max',
  'remote_display_port_min',
  'remote_display_port_max',
];

export function simHostSocket(dir: string): string {
  return path.join(path.resolve(dir), 'sock', 'libvirt-sock');
}

export function simHostUri(dir: string): string {
  return `qemu+unix:///system?socket=${simHostSocket(dir)}`;
}

/** The qemu.conf port ranges of host `index`: the defaults (49152, 5900) moved by index*100. */
export function simHostPorts(index: number) {
  if (!Number.isInteger(index) || index < 1 || index > 160)
    throw new RangeError(`sim host index must be an integer from 1 to 160, got ${index}`);
  const migration = 49152 + index * 100;
  const display = 5900 + index * 100;
  return {
    migrationPortMin: migration,
    migrationPortMax: migration + 63,
    remoteDisplayPortMin: display,
    remoteDisplayPortMax: display + 99,
  };
}

/** The pid of the sim host's libvirtd when it runs. */
export function simHostPid(dir: string): number | undefined {
  return simDaemonPid(path.resolve(dir), 'libvirtd');
}

export function simHostRunning(dir: string): boolean {
  return simHostPid(dir) !== undefined;
}

/** Starts (or finds running) a libvirtd of its own in a private mount namespace; idempotent. */
export async function startSimHost(opts: SimHostOptions): Promise<SimHost> {
  const dir = path.resolve(opts.dir);
  const socket = simHostSocket(dir);
  if (socket.length > MAX_SOCKET_PATH)
    throw new Error(
      `sim host dir ${dir} is too long: its socket ${socket} has ${socket.length} characters, ` +
        `a unix socket path at most ${MAX_SOCKET_PATH}; choose a shorter dir`,
    );
  const ports = simHostPorts(opts.index);
  const uri = simHostUri(dir);
  const uuidFile = path.join(dir, 'host-uuid');
  const kept = readTrimmed(uuidFile);
  const hostUuid = opts.hostUuid ?? kept ?? randomUUID();
  const libvirtd = simDaemonPid(dir, 'libvirtd');

  if (libvirtd !== undefined && kept !== undefined && kept !== hostUuid)
    throw new Error(`sim host ${dir} runs with host UUID ${kept}, not ${hostUuid}: stop it first`);

  for (const sub of [...BINDS.map(([s]) => s), 'sock'])
    fs.mkdirSync(path.join(dir, sub), { recursive: true });
  fs.mkdirSync(path.join(dir, 'lib', 'qemu'), { recursive: true });
  fs.writeFileSync(uuidFile, hostUuid + '\n');
  writeConfig(dir, hostUuid, ports);

  if (libvirtd === undefined) {
    const members = namespaceMembers(dir);
    const virtlogd = simDaemonPid(dir, 'virtlogd') !== undefined;
    const script = writeStartScript(dir);
    const run =
      members.length > 0
        ? // The namespace outlived its libvirtd (its virtlogd or a QEMU still runs): start libvirtd in it again,
          // so it finds its running domains, as after a libvirtd restart on a real host.
          exec('nsenter', [
            `--mount=/proc/${members[0]}/ns/mnt`,
            `--uts=/proc/${members[0]}/ns/uts`,
            script,
            'enter',
            virtlogd ? 'keep' : 'start',
          ])
        : exec('unshare', ['--mount', '--uts', '--propagation', 'private', script, 'new', 'start']);
    try {
      await run;
    } catch (err) {
      const e = err as { stderr?: string; message: string };
      throw new Error(
        `sim host ${dir}: starting libvirtd failed: ${(e.stderr ?? '').trim() || e.message}; ` +
          `see ${path.join(dir, 'log', 'libvirtd.log')}`,
      );
    }
  }
  await waitForSocket(dir, uri);
  return { dir, uri, socket, hostUuid };
}

/**
 * Destroys every domain still running on it (so no qemu process remains), then stops its libvirtd and
 * virtlogd (pid files in dir) and waits until they are gone; no-op when not running. Leaves no process,
 * mount or namespace.
 */
export async function stopSimHost(dir: string): Promise<boolean> {
  dir = path.resolve(dir);
  let did = false;
  const libvirtd = simDaemonPid(dir, 'libvirtd');
  if (libvirtd !== undefined) {
    const uri = simHostUri(dir);
    const names = await virsh(uri, ['list', '--name']).then(
      (out) =>
        out
          .split('\n')
          .map((s) => s.trim())
          .filter(Boolean),
      () => [] as string[],
    );
    for (const name of names) await virsh(uri, ['destroy', name]).catch(() => undefined);
    did = true;
  }
  for (const name of ['libvirtd', 'virtlogd'] as const) {
    const pid = simDaemonPid(dir, name);
    if (pid === undefined) continue;
    await terminate([pid]);
    fs.rmSync(path.join(dir, `${name}.pid`), { force: true });
    did = true;
  }
  // Whatever still holds the namespace (a QEMU whose libvirtd died first, a hook's child): it is this
  // host's alone, so it goes too; the namespace, and its mounts, end with its last process.
  const rest = namespaceMembers(dir);
  if (rest.length > 0) {
    await terminate(rest);
    did = true;
  }
  const deadline = Date.now() + STOP_GRACE_MS;
  for (;;) {
    const left = namespaceMembers(dir);
    if (left.length === 0) break;
    if (Date.now() > deadline)
      throw new Error(`sim host ${dir}: processes ${left.join(', ')} are still in its namespace`);
    await terminate(left);
  }
  // A namespace id is an inode number, reused once the namespace is gone: never match a stale one later
  // (nor a stale pid file).
  for (const f of ['ns-mnt', 'ns-uts', 'libvirtd.pid', 'virtlogd.pid'])
    fs.rmSync(path.join(dir, f), { force: true });
  return did;
}

/** Pids of every process in the host's namespace (mount or UTS), from the ids recorded at start. */
export function namespaceMembers(dir: string): number[] {
  dir = path.resolve(dir);
  const mnt = readTrimmed(path.join(dir, 'ns-mnt'));
  const uts = readTrimmed(path.join(dir, 'ns-uts'));
  if (mnt === undefined && uts === undefined) return [];
  const own = { mnt: nsOf('self', 'mnt'), uts: nsOf('self', 'uts') };
  // Never the namespaces this process lives in (a recorded id equal to ours would be a stale file).
  const wantMnt = mnt !== undefined && mnt !== own.mnt ? mnt : undefined;
  const wantUts = uts !== undefined && uts !== own.uts ? uts : undefined;
  const pids: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    if (
      (wantMnt !== undefined && nsOf(entry, 'mnt') === wantMnt) ||
      (wantUts !== undefined && nsOf(entry, 'uts') === wantUts)
    )
      if (isAlive(Number(entry))) pids.push(Number(entry));
  }
  return pids;
}

function writeConfig(dir: string, hostUuid: string, ports: ReturnType<typeof simHostPorts>): void {
  const etc = path.join(dir, 'etc');
  // First start: the system's config files, without its domain definitions or autostarted networks
  // (both daemons share the network namespace: only one may own a bridge).
  if (!fs.existsSync(path.join(etc, 'qemu.conf'))) {
    fs.cpSync('/etc/libvirt', etc, {
      recursive: true,
      preserveTimestamps: true,
      filter: (src) => {
        const rel = path.relative('/etc/libvirt', src);
        if (rel === 'hooks' || rel.startsWith('hooks/')) return false;
        if (path.dirname(rel) === 'qemu' && src.endsWith('.xml')) return false;
        if (rel === 'qemu/autostart' || rel.startsWith('qemu/autostart/')) return false;
        return !rel.startsWith('qemu/networks/autostart/');
      },
    });
    fs.mkdirSync(path.join(etc, 'qemu'), { recursive: true });
  }
  // Hooks follow the system's on every start.
  fs.rmSync(path.join(etc, 'hooks'), { recursive: true, force: true });
  if (fs.existsSync('/etc/libvirt/hooks'))
    fs.cpSync('/etc/libvirt/hooks', path.join(etc, 'hooks'), { recursive: true, preserveTimestamps: true });

  fs.writeFileSync(
    path.join(etc, 'libvirtd.conf'),
    [
      '# Written by livemerge (src/devstack/sim-host.ts) on every start.',
      `unix_sock_dir = "${path.join(dir, 'sock')}"`,
      `host_uuid = "${hostUuid}"`,
      'log_outputs = "3:file:/var/log/libvirt/libvirtd.log"',
      '',
    ].join('\n'),
  );
  const qemuConf = path.join(etc, 'qemu.conf');
  const kept = fs
    .readFileSync(qemuConf, 'utf8')
    .split('\n')
    .filter((l) => !MANAGED_QEMU_KEYS.some((k) => new RegExp(`^\\s*${k}\\s*=`).test(l)))
    .filter((l) => !l.startsWith('# livemerge sim host:'));
  while (kept.length > 0 && kept[kept.length - 1] === '') kept.pop();
  fs.writeFileSync(
    qemuConf,
    [
      ...kept,
      '',
      '# livemerge sim host: no cgroups (two daemons would give two domains of the same name one cgroup),',
      '# livemerge sim host: no per-domain mount namespace (its QEMUs stay in the host namespace),',
      '# livemerge sim host: port ranges of its own.',
      'cgroup_controllers = [ ]',
      'namespaces = [ ]',
      `migration_port_min = ${ports.migrationPortMin}`,
      `migration_port_max = ${ports.migrationPortMax}`,
      `remote_display_port_min = ${ports.remoteDisplayPortMin}`,
      `remote_display_port_max = ${ports.remoteDisplayPortMax}`,
      '',
    ].join('\n'),
  );
}

/** The script run inside the namespace: `start new|enter start|keep` (new: bind the dirs first). */
function writeStartScript(dir: string): string {
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const script = path.join(dir, 'start');
  fs.writeFileSync(
    script,
    [
      '#!/bin/bash',
      '# Written by livemerge (src/devstack/sim-host.ts): run by unshare (new) or nsenter (enter).',
      'set -euo pipefail',
      `dir=${q(dir)}`,
      'if [ "$1" = new ]; then',
      '  mount --make-rprivate /',
      ...BINDS.map(([sub, target]) => `  mkdir -p ${q(target)} && mount --bind "$dir/${sub}" ${q(target)}`),
      '  readlink /proc/self/ns/mnt > "$dir/ns-mnt"',
      '  readlink /proc/self/ns/uts > "$dir/ns-uts"',
      'fi',
      'mkdir -p /run/libvirt/qemu',
      'if [ "$2" = start ]; then virtlogd -d -p "$dir/virtlogd.pid"; fi',
      'exec libvirtd -d --pid-file "$dir/libvirtd.pid"',
      '',
    ].join('\n'),
    { mode: 0o755 },
  );
  return script;
}

async function waitForSocket(dir: string, uri: string): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  let last = '';
  for (;;) {
    try {
      await virsh(uri, ['uri']);
      return;
    } catch (err) {
      last = ((err as { stderr?: string }).stderr ?? String(err)).trim();
    }
    if (Date.now() > deadline || simDaemonPid(dir, 'libvirtd') === undefined)
      throw new Error(
        `sim host ${dir}: libvirtd does not answer on ${uri} (${last}); see ${path.join(dir, 'log', 'libvirtd.log')}`,
      );
    await delay(50);
  }
}

async function virsh(uri: string, args: string[]): Promise<string> {
  const { stdout } = await exec('virsh', ['-q', '-c', uri, ...args], { timeout: 10_000 });
  return stdout;
}

/** The pid in dir/<name>.pid when that process runs and is that daemon. */
function simDaemonPid(dir: string, name: 'libvirtd' | 'virtlogd'): number | undefined {
  return daemonPid(path.join(dir, `${name}.pid`), name);
}

/** SIGTERM, then SIGKILL after the grace time; resolves when every one is gone. */
async function terminate(pids: number[]): Promise<void> {
  for (const pid of pids) signal(pid, 'SIGTERM');
  const deadline = Date.now() + STOP_GRACE_MS;
  while (pids.some((p) => isAlive(p)) && Date.now() < deadline) await delay(50);
  for (const pid of pids.filter((p) => isAlive(p))) signal(pid, 'SIGKILL');
  while (pids.some((p) => isAlive(p))) await delay(20);
}

function nsOf(pid: string, kind: 'mnt' | 'uts'): string | undefined {
  try {
    return fs.readlinkSync(`/proc/${pid}/ns/${kind}`);
  } catch {
    return undefined;
  }
}

function readTrimmed(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}
