// A whole livemerge stack for one test file: a storage domain in a temp dir, the engine worker and a host
// agent with the storage role, all on the run's real Temporal dev server and the real libvirtd.
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Worker } from '@temporalio/worker';
import { promisify } from 'node:util';
import { createEngineActivities } from '../../src/activities/engine';
import { temporalCliPath } from '../../src/devstack/temporal-server';
import { AuditLog } from '../../src/audit/audit-log';
import { loadConfig } from '../../src/config';
import { LibvirtConnection } from '../../src/libvirt';
import { fleetDomainXmls } from '../../src/workers/libvirt-provider';
import { StorageDomain } from '../../src/storage/storage-domain';
import type { StoredVolume } from '../../src/storage/storage-domain';
import { createEngineWorker } from '../../src/workers/engine';
import { createHostWorkers } from '../../src/workers/host';
import { startSimHost, stopSimHost } from '../../src/devstack/sim-host';
import { Holds } from './holds';
import type { TemporalHarness } from './temporal';
import { NAMESPACE, atFileEnd, runWorkers, temporal, workflowBundle } from './temporal';
import type { TestVm } from './vm-fixture';
import { createTestVm } from './vm-fixture';

const exec = promisify(execFile);

/** A host of the stack: the system libvirtd (the first) or a simulated host (src/devstack/sim-host.ts). */
export interface StackHost {
  hostId: string;
  uri: string;
  conn: LibvirtConnection;
  /** The simulated host's dir and index (startSimHost); undefined for the system libvirtd. */
  simDir?: string;
  simIndex?: number;
}

export interface Stack extends TemporalHarness {
  /** The first host: system libvirtd, storage role. */
  hostId: string;
  /** Every host with an agent, the first host first. */
  hosts: StackHost[];
  storageRoot: string;
  sd: StorageDomain;
  auditLog: AuditLog;
  conn: LibvirtConnection;
  workers: { stop: () => Promise<void> };
  /** The breakpoints of this file's workers (StackOptions.holds). */
  holds: Holds | undefined;
}

export interface StackOptions {
  /** Start the host agent (default true); tests of absent agents start none. */
  hostAgent?: boolean;
  /** More configured hosts (LIVEMERGE_HOSTS) the engine asks, whose agents never answer. */
  extraHosts?: string[];
  /** Breakpoints (src/testing/holds.ts) in this file's workers. */
  holds?: boolean;
  /** The engine's locate timeout (LIVEMERGE_LOCATE_TIMEOUT); default its own. */
  locateTimeoutSeconds?: number;
  /** Simulated hosts, each a real libvirtd of its own with its own agent (no storage role). */
  simHosts?: number;
}

/** Migration/display port ranges of test sim hosts: clear of the dev stack's (sim-host.ts simHostPorts). */
const TEST_SIM_HOST_INDEX = 120;

let stack: Promise<Stack> | undefined;

/** The file's stack, started once; stopped, and its temp dir removed, when the file ends. */
export function useStack(opts: StackOptions = {}): Promise<Stack> {
  stack ??= (async () => {
    const t = await temporal();
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'lm-stack-'));
    atFileEnd(() => fs.rm(dir, { recursive: true, force: true }));
    await fs.chmod(dir, 0o755);
    const storageRoot = path.join(dir, 'storage');
    const sd = await StorageDomain.create(storageRoot, randomUUID());
    const auditLog = new AuditLog(path.join(dir, 'audit.jsonl'));
    const conn = await LibvirtConnection.open();
    atFileEnd(() => conn.close());
    const hostId = `test-${randomUUID().slice(0, 8)}`;
    const hosts: StackHost[] = [{ hostId, uri: conn.uri, conn }];
    for (let i = 1; i <= (opts.simHosts ?? 0); i++) {
      const simDir = path.join(dir, `h${i + 1}`);
      atFileEnd(async () => {
        await stopSimHost(simDir);
      });
      const simIndex = TEST_SIM_HOST_INDEX + i;
      const sim = await startSimHost({ dir: simDir, index: simIndex });
      const simConn = await LibvirtConnection.open(sim.uri);
      atFileEnd(() => simConn.close());
      hosts.push({ hostId: `${hostId}-h${i + 1}`, uri: sim.uri, conn: simConn, simDir, simIndex });
    }
    // Every agent reads every host's domains as `worker host` does from LIVEMERGE_HOST_URIS.
    const hostUris = Object.fromEntries(hosts.map((h) => [h.hostId, h.uri]));
    const fleetOf = (h: StackHost) => {
      const fleet = fleetDomainXmls(
        { hostId: h.hostId, libvirt: () => Promise.resolve(h.conn) },
        hostUris,
        Object.keys(hostUris),
      );
      atFileEnd(() => fleet.close());
      return fleet;
    };
    // The workers read LIVEMERGE_HOLD_DIR when they are made (each test file is a process of its own).
    const holds = opts.holds ? new Holds(path.join(dir, 'holds')) : undefined;
    if (holds) process.env.LIVEMERGE_HOLD_DIR = holds.dir;
    const workers: Worker[] = [
      await createEngineWorker({
        connection: t.nativeConnection,
        namespace: NAMESPACE,
        workflowBundle: await workflowBundle(),
        activities: createEngineActivities({
          auditLog,
          hosts: [...(opts.extraHosts ?? []), ...hosts.map((h) => h.hostId)],
          locateTimeoutSeconds: opts.locateTimeoutSeconds ?? loadConfig({}).locateTimeoutSeconds,
        }),
      }),
    ];
    if (opts.hostAgent ?? true)
      for (const [i, h] of hosts.entries())
        workers.push(
          ...(await createHostWorkers({
            connection: t.nativeConnection,
            namespace: NAMESPACE,
            hostId: h.hostId,
            storageRoot,
            storage: i === 0,
            libvirt: () => Promise.resolve(h.conn),
            domainXmls: fleetOf(h),
          })),
        );
    const running = runWorkers(workers);
    atFileEnd(async () => {
      if (process.env.LIVEMERGE_RECORD_HISTORIES)
        await recordHistories(t, process.env.LIVEMERGE_RECORD_HISTORIES);
      await running.stop();
    });
    return { ...t, hostId, hosts, storageRoot, sd, auditLog, conn, workers: running, holds };
  })();
  return stack;
}

/**
 * Saves every closed workflow's history of this file's namespace (LIVEMERGE_RECORD_HISTORIES=<dir>):
 * how test/fixtures/histories is made for the replay test.
 */
async function recordHistories(t: TemporalHarness, dir: string): Promise<void> {
  await fs.mkdir(dir, { recursive: true });
  for await (const wf of t.client.workflow.list({ query: 'ExecutionStatus != "Running"' })) {
    // The CLI's JSON export is the format Worker.runReplayHistories documents.
    const { stdout } = await exec(
      temporalCliPath(),
      [
        'workflow',
        'show',
        '--output',
        'json',
        '--address',
        t.address,
        '--namespace',
        NAMESPACE,
        '--workflow-id',
        wf.workflowId,
        '--run-id',
        wf.runId,
      ],
      { maxBuffer: 64 << 20 },
    );
    const name = `${wf.type}-${wf.status.name.toLowerCase()}-${wf.runId.slice(-12)}.json`;
    await fs.writeFile(path.join(dir, name), stdout);
  }
}

export interface VmDisk {
  target: string;
  imageId: string;
  base: StoredVolume;
}

/** A TCG VM whose disks are images of the stack's storage domain (removed when the test ends). */
export async function createStackVm(
  s: Stack,
  opts: {
    disks?: number;
    format?: 'raw' | 'qcow2';
    capacity?: number;
    start?: boolean;
    /** The host to define it on (default the first). */
    hostId?: string;
  } = {},
): Promise<{ vm: TestVm; disks: VmDisk[] }> {
  const disks: VmDisk[] = [];
  for (let i = 0; i < (opts.disks ?? 1); i++) {
    const base = await s.sd.createImage({
      format: opts.format ?? 'qcow2',
      capacity: opts.capacity ?? 64 << 20,
    });
    disks.push({ target: `vd${String.fromCharCode(97 + i)}`, imageId: base.imageId, base });
  }
  const host = s.hosts.find((h) => h.hostId === (opts.hostId ?? s.hostId));
  if (!host) throw new Error(`no host ${opts.hostId} in this stack`);
  const vm = await createTestVm(host.conn, {
    disks: disks.map((d) => ({ path: d.base.path, format: d.base.format })),
    start: opts.start ?? true,
  });
  return { vm, disks };
}
