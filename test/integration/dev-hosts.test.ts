// Sim hosts (src/devstack/sim-host.ts) and `livemerge dev up --hosts 2` as a user runs them: real libvirtds in
// private mount namespaces, real agents, a temp data dir, free ports.
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../src/config';
import { isAlive } from '../../src/devstack/processes';
import { parseHostUris } from '../../src/config';
import { namespaceMembers, simHostPid, startSimHost, stopSimHost } from '../../src/devstack/sim-host';
import { LibvirtConnection } from '../../src/libvirt';
import { pollUntil } from '../helpers/poll';
import { freePort, processesIn, processesMentioning, processesMounting } from '../helpers/procs';
import { qemuImgCreate, testVmXml, uniqueVmName } from '../helpers/vm-fixture';

const exec = promisify(execFile);

async function hostUuidOf(uri: string): Promise<string> {
  const { stdout } = await exec('virsh', ['-c', uri, 'capabilities']);
  const m = /<host>\s*<uuid>([^<]+)<\/uuid>/.exec(stdout);
  if (!m) throw new Error(`no <host><uuid> in the capabilities of ${uri}`);
  return m[1]!;
}

describe('sim host', () => {
  const cleanups: Array<() => Promise<unknown>> = [];
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c().catch((e: unknown) => console.warn('cleanup:', e));
  });

  it('has its own host UUID and domains, survives a restart, and stop leaves no process or mount', async () => {
    const root = await fs.mkdtemp(path.join(os.tmpdir(), 'lm-sim-'));
    await fs.chmod(root, 0o755);
    const dir = path.join(root, 'h');
    cleanups.push(() => fs.rm(root, { recursive: true, force: true }));
    cleanups.push(() => stopSimHost(dir));

    const host = await startSimHost({ dir, index: 7 });
    expect(host.uri).toBe(`qemu+unix:///system?socket=${dir}/sock/libvirt-sock`);
    expect(await hostUuidOf(host.uri)).toBe(host.hostUuid);
    expect(await hostUuidOf('qemu:///system')).not.toBe(host.hostUuid);
    const ns = (await fs.readFile(path.join(dir, 'ns-mnt'), 'utf8')).trim();
    expect(ns).not.toBe(await fs.readlink('/proc/self/ns/mnt'));
    // Idempotent: the same daemon.
    const pid = simHostPid(dir);
    expect((await startSimHost({ dir, index: 7 })).hostUuid).toBe(host.hostUuid);
    expect(simHostPid(dir)).toBe(pid);

    // A TCG domain on it, with a disk, is not on the system libvirtd.
    const disk = path.join(root, 'disk.qcow2');
    await qemuImgCreate(disk, { size: '16M' });
    const name = uniqueVmName();
    const conn = await LibvirtConnection.open(host.uri, { events: false });
    const system = await LibvirtConnection.open('qemu:///system', { events: false });
    try {
      const dom = await conn.defineXml(testVmXml(name, [{ path: disk, format: 'qcow2' }]));
      await dom.create();
      expect(await dom.isActive()).toBe(true);
      dom.free();
      expect(await system.findByName(name)).toBeNull();
    } finally {
      await conn.close();
      await system.close();
    }
    const qemu = (await processesMentioning(`guest=${name}`))[0];
    expect(qemu).toBeDefined();
    expect(namespaceMembers(dir)).toContain(qemu);

    // libvirtd dies with the domain running: start brings a libvirtd back into the same namespace, which
    // finds the domain running, as after a libvirtd restart on a real host.
    process.kill(pid!, 'SIGKILL');
    await pollUntil(() => !isAlive(pid!), 10_000, 'the killed libvirtd to be gone');
    expect(await startSimHost({ dir, index: 7 })).toEqual(host);
    expect(simHostPid(dir)).not.toBe(pid);
    expect((await fs.readFile(path.join(dir, 'ns-mnt'), 'utf8')).trim()).toBe(ns);
    const { stdout: running } = await exec('virsh', ['-c', host.uri, 'list', '--name']);
    expect(running.trim()).toBe(name);

    // libvirtd dies again, its QEMU stays: stop still leaves nothing.
    const pid2 = simHostPid(dir)!;
    process.kill(pid2, 'SIGKILL');
    await pollUntil(() => !isAlive(pid2), 10_000, 'the killed libvirtd to be gone');
    expect(isAlive(qemu!)).toBe(true);
    expect(await stopSimHost(dir)).toBe(true);
    expect(isAlive(qemu!)).toBe(false);
    expect(await processesIn(ns)).toEqual([]);
    expect(await processesMounting(dir)).toEqual([]);
    expect(await stopSimHost(dir)).toBe(false);

    // A restart keeps its host UUID and its (now shut off) domain definition; stop destroys a running domain.
    const again = await startSimHost({ dir, index: 7 });
    expect(again.hostUuid).toBe(host.hostUuid);
    expect(await hostUuidOf(again.uri)).toBe(host.hostUuid);
    await exec('virsh', ['-c', again.uri, 'start', name]);
    const ns2 = (await fs.readFile(path.join(dir, 'ns-mnt'), 'utf8')).trim();
    const qemu2 = (await processesMentioning(`guest=${name}`))[0];
    expect(qemu2).toBeDefined();
    expect(await stopSimHost(dir)).toBe(true);
    expect(isAlive(qemu2!)).toBe(false);
    expect(await processesIn(ns2)).toEqual([]);
    expect(await processesMounting(dir)).toEqual([]);
  });

  it('refuses a dir whose socket path is too long for a unix socket', async () => {
    await expect(startSimHost({ dir: path.join('/tmp', 'x'.repeat(100)), index: 1 })).rejects.toThrow(
      /too long.*at most 107/,
    );
  });
});

describe('dev up --hosts 2', () => {
  const cleanups: Array<() => Promise<unknown>> = [];
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c().catch((e: unknown) => console.warn('cleanup:', e));
  });

  it('starts a sim host with its own agent; vm create|list --host reach it; down leaves nothing', async () => {
    const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'lm-devh-'));
    await fs.chmod(dataDir, 0o755);
    const grpc = await freePort();
    const ui = await freePort();
    const hostId = `devh-${grpc}`;
    const env = {
      ...process.env,
      LIVEMERGE_DATA_DIR: dataDir,
      TEMPORAL_ADDRESS: `127.0.0.1:${grpc}`,
      LIVEMERGE_UI_PORT: String(ui),
      LIVEMERGE_HOST_ID: hostId,
    };
    const cli = (...args: string[]) =>
      exec(process.execPath, [path.join(REPO_ROOT, 'bin/livemerge.cjs'), ...args], { env });
    cleanups.push(() => fs.rm(dataDir, { recursive: true, force: true }));
    cleanups.push(() => stopSimHost(path.join(dataDir, 'hosts', '2')));
    cleanups.push(() => cli('dev', 'down'));

    const up = await cli('dev', 'up', '--hosts', '2');
    expect(up.stdout).toMatch(new RegExp(`host ${hostId}-h2: libvirtd started`));
    expect(up.stdout).toMatch(/dev stack healthy in [\d.]+ s/);
    const hosts = JSON.parse(await fs.readFile(path.join(dataDir, 'dev-hosts.json'), 'utf8')) as Array<{
      id: string;
      uri: string;
      storage: boolean;
      dir?: string;
    }>;
    const simDir = path.join(dataDir, 'hosts', '2');
    const simUri = `qemu+unix:///system?socket=${simDir}/sock/libvirt-sock`;
    expect(hosts).toEqual([
      { id: hostId, uri: 'qemu:///system', storage: true },
      { id: `${hostId}-h2`, uri: simUri, storage: false, dir: simDir },
    ]);

    // Every agent and the engine were given the host list and URIs.
    for (const part of ['engine', `host-${hostId}`, `host-${hostId}-h2`]) {
      const { pid } = JSON.parse(await fs.readFile(path.join(dataDir, 'pids', `${part}.json`), 'utf8')) as {
        pid: number;
      };
      const environ = new Map(
        (await fs.readFile(`/proc/${pid}/environ`, 'utf8'))
          .split('\0')
          .filter(Boolean)
          .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
      );
      expect(environ.get('LIVEMERGE_HOSTS')).toBe(`${hostId},${hostId}-h2`);
      expect(Object.entries(parseHostUris(environ.get('LIVEMERGE_HOST_URIS')!))).toEqual([
        [hostId, 'qemu:///system'],
        [`${hostId}-h2`, simUri],
      ]);
      if (part === `host-${hostId}-h2`) expect(environ.get('LIBVIRT_DEFAULT_URI')).toBe(simUri);
    }

    const status = JSON.parse((await cli('dev', 'status', '--json')).stdout) as Array<{
      part: string;
      state: string;
    }>;
    expect(
      [
        'temporal',
        'engine worker',
        `libvirtd ${hostId}-h2`,
        `host-${hostId} worker`,
        `host-${hostId}-h2 worker`,
      ].map((part) => status.find((p) => p.part === part)?.state),
    ).toEqual(['running', 'running', 'running', 'running', 'running']);

    // A VM created on host 2 is listed by host 2's agent, not by host 1's.
    const name = uniqueVmName();
    const created = JSON.parse(
      (await cli('vm', 'create', '--name', name, '--host', `${hostId}-h2`, '--size', '16M', '--json')).stdout,
    ) as { hostId: string };
    expect(created.hostId).toBe(`${hostId}-h2`);
    const onH2 = JSON.parse((await cli('vm', 'list', '--host', `${hostId}-h2`, '--json')).stdout) as {
      hostId: string;
      vms: Array<{ name: string; state: string }>;
    };
    expect(onH2.hostId).toBe(`${hostId}-h2`);
    expect(onH2.vms).toEqual([expect.objectContaining({ name, state: 'running' })]);
    const onH1 = JSON.parse((await cli('vm', 'list', '--json')).stdout) as { vms: Array<{ name: string }> };
    expect(onH1.vms.map((v) => v.name)).not.toContain(name);

    // A different host list while it runs is refused, and changes nothing.
    const refused = await cli('dev', 'up', '--hosts', '3').then(
      () => null,
      (e: { code?: number; stderr?: string }) => e,
    );
    expect(refused?.code).toBe(2);
    expect(refused?.stderr).toMatch(/dev down` first/);
    expect(await fs.stat(path.join(dataDir, 'hosts', '3')).catch(() => null)).toBeNull();

    const ns = (await fs.readFile(path.join(simDir, 'ns-mnt'), 'utf8')).trim();
    const qemu = await processesMentioning(`guest=${name}`);
    expect(qemu).toHaveLength(1);
    const ours = await processesMentioning(dataDir);
    const down = await cli('dev', 'down');
    expect(down.stdout).toMatch(new RegExp(`host ${hostId}-h2: libvirtd stopped`));
    expect(down.stdout).toMatch(/libvirtd: not started by dev up, left alone/);
    expect(await processesMentioning(dataDir)).toEqual([]);
    for (const pid of [...ours, ...qemu]) expect(isAlive(pid)).toBe(false);
    expect(await processesIn(ns)).toEqual([]);
    expect(await processesMounting(simDir)).toEqual([]);
    expect(await fs.stat(path.join(dataDir, 'dev-hosts.json')).catch(() => null)).toBeNull();
    await exec('virsh', ['-q', '-c', 'qemu:///system', 'list']);
  });
});
