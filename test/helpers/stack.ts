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
import { LibvirtConnection, readDomainXmls } from '../../src/libvirt';
import { StorageDomain } from '../../src/storage/storage-domain';
import type { StoredVolume } from '../../src/storage/storage-domain';
import { createEngineWorker } from '../../src/workers/engine';
import { createHostWorkers } from '../../src/workers/host';
import { Holds } from './holds';
import type { TemporalHarness } from './temporal';
import { NAMESPACE, atFileEnd, runWorkers, temporal, workflowBundle } from './temporal';
import type { TestVm } from './vm-fixture';
import { createTestVm } from './vm-fixture';

const exec = promisify(execFile);

export interface Stack extends TemporalHarness {
  hostId: string;
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
}

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
          hosts: [...(opts.extraHosts ?? []), hostId],
          locateTimeoutSeconds: opts.locateTimeoutSeconds ?? loadConfig({}).locateTimeoutSeconds,
        }),
      }),
    ];
    if (opts.hostAgent ?? true)
      workers.push(
        ...(await createHostWorkers({
          connection: t.nativeConnection,
          namespace: NAMESPACE,
          hostId,
          storageRoot,
          storage: true,
          libvirt: () => Promise.resolve(conn),
          domainXmls: async () => (await readDomainXmls(conn)).map((d) => ({ ...d, host: hostId })),
        })),
      );
    const running = runWorkers(workers);
    atFileEnd(async () => {
      if (process.env.LIVEMERGE_RECORD_HISTORIES)
        await recordHistories(t, process.env.LIVEMERGE_RECORD_HISTORIES);
      await running.stop();
    });
    return { ...t, hostId, storageRoot, sd, auditLog, conn, workers: running, holds };
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
  opts: { disks?: number; format?: 'raw' | 'qcow2'; capacity?: number; start?: boolean } = {},
): Promise<{ vm: TestVm; disks: VmDisk[] }> {
  const disks: VmDisk[] = [];
  for (let i = 0; i < (opts.disks ?? 1); i++) {
    const base = await s.sd.createImage({
      format: opts.format ?? 'qcow2',
      capacity: opts.capacity ?? 64 << 20,
    });
    disks.push({ target: `vd${String.fromCharCode(97 + i)}`, imageId: base.imageId, base });
  }
  const vm = await createTestVm(s.conn, {
    disks: disks.map((d) => ({ path: d.base.path, format: d.base.format })),
    start: opts.start ?? true,
  });
  return { vm, disks };
}
