// How fast is a backup? In one run, on a TCG VM with one 1 GiB qcow2 disk holding 512 MiB of data:
// - full: backupVm (mode full, into a repository) end to end and its copyBackupDisk activity alone (started →
//   completed in the workflow history), side by side with `qemu-img convert -O qcow2` of the same frozen
//   image (the disk's base while a snapshot is on it), alone and with the fsync the backup's copy also does;
// - incremental: 1 % of the blocks changed (10 MiB in 160 scattered 64 KiB guest writes), then backupVm
//   (mode auto: incremental against the backup before it), end to end and its copy activity, against the full's.
// Each iteration is one of each; medians are printed, with every run, and where the last ones spent their time.
// The full backups and the converts alternate, so neither has the page cache to itself.
//
// Self-contained: it starts its own Temporal dev server (the project's CLI), an engine worker and a host agent
// with the storage role in this process, a storage domain and a repository in a temp dir, on the system libvirtd.
//
// Usage: npx tsx bench/backup.ts [iterations=3]
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Client } from '@temporalio/client';
import { defineSearchAttributeKey } from '@temporalio/common';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import type { Worker } from '@temporalio/worker';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { createEngineActivities } from '../src/activities/engine';
import { AuditLog } from '../src/audit/audit-log';
import { testVmXml } from '../src/cli/dev/vm-xml';
import { ENGINE_TASK_QUEUE } from '../src/common/task-queues';
import { loadConfig } from '../src/config';
import { SEARCH_ATTRIBUTES } from '../src/common/search-attributes';
import { temporalCliPath } from '../src/devstack/temporal-server';
import { parseDomainDiskChains } from '../src/inspect/domain-xml';
import { DomainUndefineFlags, LibvirtConnection, hmpQemuIo } from '../src/libvirt';
import type { BackupVmResult } from '../src/schemas/results';
import { StorageDomain } from '../src/storage/storage-domain';
import { createEngineWorker } from '../src/workers/engine';
import { createHostWorkers } from '../src/workers/host';
import { fleetDomainXmls } from '../src/workers/libvirt-provider';
import { eventMs } from './history-events';

const exec = promisify(execFile);
const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

/** started → completed of every `type` activity of a workflow (its own run, without queueing), in ms. */
async function activityMs(client: Client, workflowId: string, type: string): Promise<number[]> {
  const events = (await client.workflow.getHandle(workflowId).fetchHistory()).events ?? [];
  const byId = (id: unknown) => events.find((e) => String(e.eventId) === String(id));
  return events
    .filter((e) => e.activityTaskCompletedEventAttributes)
    .flatMap((done) => {
      const a = done.activityTaskCompletedEventAttributes!;
      const scheduled = byId(a.scheduledEventId);
      const name = scheduled?.activityTaskScheduledEventAttributes?.activityType?.name;
      const started = byId(a.startedEventId);
      return name === type && started ? [eventMs(done) - eventMs(started)] : [];
    });
}

async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; value: T }> {
  const t0 = performance.now();
  const value = await fn();
  return { ms: performance.now() - t0, value };
}

async function fsyncFile(file: string): Promise<void> {
  const fh = await fs.open(file, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const secs = (ms: number): string => (ms / 1000).toFixed(2);

async function main(): Promise<void> {
  const iterations = Number(process.argv[2] ?? 3);
  Runtime.install({ logger: new DefaultLogger('ERROR') });
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'lm-bench-backup-'));
  await fs.chmod(dir, 0o755);
  const cleanups: Array<() => Promise<unknown>> = [() => fs.rm(dir, { recursive: true, force: true })];
  try {
    const env = await TestWorkflowEnvironment.createLocal({
      server: {
        executable: { type: 'existing-path', path: temporalCliPath() },
        searchAttributes: SEARCH_ATTRIBUTES.map((name) => defineSearchAttributeKey(name, 'KEYWORD')),
        extraArgs: ['--log-level', 'error'],
      },
    });
    cleanups.unshift(() => env.teardown());
    const client = env.client;
    const storageRoot = path.join(dir, 'storage');
    const sd = await StorageDomain.create(storageRoot, randomUUID());
    const conn = await LibvirtConnection.open();
    cleanups.unshift(() => conn.close());
    const hostId = `bench-${randomUUID().slice(0, 8)}`;
    const fleet = fleetDomainXmls({ hostId, libvirt: () => Promise.resolve(conn) }, { [hostId]: conn.uri }, [
      hostId,
    ]);
    cleanups.unshift(async () => fleet.close());
    const workers: Worker[] = [
      await createEngineWorker({
        connection: env.nativeConnection,
        namespace: env.namespace ?? 'default',
        activities: createEngineActivities({
          auditLog: new AuditLog(path.join(dir, 'audit.jsonl')),
          hosts: [hostId],
          locateTimeoutSeconds: loadConfig({}).locateTimeoutSeconds,
        }),
      }),
      ...(await createHostWorkers({
        connection: env.nativeConnection,
        namespace: env.namespace ?? 'default',
        hostId,
        storageRoot,
        storage: true,
        libvirt: () => Promise.resolve(conn),
        domainXmls: fleet,
      })),
    ];
    const runs = workers.map((w) => w.run());
    cleanups.unshift(async () => {
      for (const w of workers) if (w.getState() === 'RUNNING') w.shutdown();
      await Promise.all(runs);
    });

    const base = await sd.createImage({ format: 'qcow2', capacity: GiB });
    const dom = await conn.defineXml(testVmXml(`lm-bench-${randomUUID().slice(0, 8)}`, [base]));
    cleanups.unshift(async () => {
      await dom.destroy().catch(() => undefined);
      await dom
        .undefine(DomainUndefineFlags.SNAPSHOTS_METADATA | DomainUndefineFlags.CHECKPOINTS_METADATA)
        .catch(() => undefined);
      dom.free();
    });
    await dom.create();
    const repo = path.join(dir, 'repo');
    const converted = path.join(dir, 'converted');
    await fs.mkdir(repo);
    await fs.mkdir(converted);

    // 512 MiB of data: every other 8 MiB of the 1 GiB, each chunk its own byte.
    for (let i = 0; i < 64; i++)
      await hmpQemuIo(
        dom,
        'virtio-disk0',
        `write -P 0x${(0x10 + i).toString(16)} ${i * 16 * MiB} ${8 * MiB}`,
      );
    await hmpQemuIo(dom, 'virtio-disk0', 'flush');

    const backup = async (mode: 'full' | 'auto') => {
      const backupId = randomUUID();
      const workflowId = `backup:${dom.uuid}:${backupId}`;
      const run = await timed(() =>
        client.workflow.execute('backupVm', {
          taskQueue: ENGINE_TASK_QUEUE,
          workflowId,
          args: [{ vmId: dom.uuid, backupId, mode, repository: repo }],
        }),
      );
      const [copyMs] = await activityMs(client, workflowId, 'copyBackupDisk');
      return { e2eMs: run.ms, copyMs: copyMs!, result: run.value as BackupVmResult };
    };
    const snapshot = async (): Promise<string> => {
      const snapshotId = randomUUID();
      await client.workflow.execute('createSnapshot', {
        taskQueue: ENGINE_TASK_QUEUE,
        workflowId: `create-snapshot:${dom.uuid}:${snapshotId}`,
        args: [{ vmId: dom.uuid, snapshotId }],
      });
      return snapshotId;
    };
    const removeSnapshot = async (snapshotId: string): Promise<void> => {
      await client.workflow.execute('removeSnapshot', {
        taskQueue: ENGINE_TASK_QUEUE,
        workflowId: `remove-snapshot:${dom.uuid}:${snapshotId}`,
        args: [{ vmId: dom.uuid, snapshotId }],
      });
    };

    const full = { e2e: [] as number[], copy: [] as number[], bytes: 0 };
    let fullLast: string | undefined;
    const convert = { alone: [] as number[], synced: [] as number[], bytes: 0 };
    for (let i = 0; i < iterations; i++) {
      const b = await backup('full');
      full.e2e.push(b.e2eMs);
      full.copy.push(b.copyMs);
      full.bytes = b.result.disks[0]!.copiedBytes;
      fullLast = b.result.backupId;

      // The same frozen image: the base, read-only under a snapshot (as the backup's copy reads it).
      const snapshotId = await snapshot();
      const chain = parseDomainDiskChains(await dom.xml()).find((d) => d.device === 'disk')!.chain;
      const frozen = chain[1]!.path!;
      const out = path.join(converted, `${i}.qcow2`);
      const c = await timed(() => exec('qemu-img', ['convert', '-f', 'qcow2', '-O', 'qcow2', frozen, out]));
      const s = await timed(() => fsyncFile(out));
      convert.alone.push(c.ms);
      convert.synced.push(c.ms + s.ms);
      const { stdout } = await exec('qemu-img', ['info', '--output=json', out]);
      convert.bytes = (JSON.parse(stdout) as { 'actual-size': number })['actual-size'];
      await removeSnapshot(snapshotId);
      await fs.rm(out);
    }

    // 1 % of the blocks: 160 × 64 KiB, spread over the whole disk (a prime stride of granules), other
    // granules in each round; each incremental is relative to the backup before it.
    const granules = GiB / (64 * KiB);
    const incs: Array<Awaited<ReturnType<typeof backup>>> = [];
    for (let j = 0; j < iterations; j++) {
      for (let k = 0; k < 160; k++) {
        const g = (k * 101 + 7 + j * 13) % granules;
        const byte = (0x80 + ((k + j) % 64)).toString(16);
        await hmpQemuIo(dom, 'virtio-disk0', `write -P 0x${byte} ${g * 64 * KiB} 64k`);
      }
      await hmpQemuIo(dom, 'virtio-disk0', 'flush');
      const b = await backup('auto');
      const x = b.result.disks[0]!;
      if (x.mode !== 'incremental') throw new Error(`the incremental was a ${x.mode} backup: ${x.reason}`);
      incs.push(b);
    }
    const d = incs[0]!.result.disks[0]!;
    const inc = { e2eMs: median(incs.map((b) => b.e2eMs)), copyMs: median(incs.map((b) => b.copyMs)) };

    // The fixed steps inside an incremental's copy, each timed alone on the last incremental's file: what
    // copyBackupDisk runs besides the block job (create the .part, check it, map what it holds itself).
    const lastFile = incs[incs.length - 1]!.result.disks[0]!.file;
    const fixed: Record<string, number[]> = {
      'qemu-img create (the .part)': [],
      'qemu-img check': [],
      'qemu-img map': [],
    };
    for (let r = 0; r < 5; r++) {
      const scratch = path.join(dir, `fixed-${r}.qcow2`);
      fixed['qemu-img create (the .part)']!.push(
        (
          await timed(() =>
            exec('qemu-img', [
              'create',
              '-q',
              '-f',
              'qcow2',
              '-o',
              'cluster_size=65536',
              scratch,
              String(GiB),
            ]),
          )
        ).ms,
      );
      await fs.rm(scratch);
      fixed['qemu-img check']!.push(
        (await timed(() => exec('qemu-img', ['check', '-q', '-f', 'qcow2', lastFile]))).ms,
      );
      fixed['qemu-img map']!.push(
        (await timed(() => exec('qemu-img', ['map', '--output=json', '-f', 'qcow2', lastFile]))).ms,
      );
    }

    const f = { e2e: median(full.e2e), copy: median(full.copy) };
    const cv = { alone: median(convert.alone), synced: median(convert.synced) };
    console.log(
      `1 GiB qcow2 disk, 512 MiB of data; full copied ${(full.bytes / MiB).toFixed(0)} MiB, ` +
        `qemu-img convert wrote ${(convert.bytes / MiB).toFixed(0)} MiB; incremental changed ` +
        `${(d.changedBytes / MiB).toFixed(2)} MiB in ${d.extents} extents, copied ${(d.copiedBytes / MiB).toFixed(2)} MiB`,
    );
    console.log(
      `n = ${iterations} full backups, converts and incrementals (medians; every run in ms below)\n`,
    );
    console.log('| measure | s | rate | vs |');
    console.log('| --- | --- | --- | --- |');
    const rate = (ms: number) => `${((512 * MiB) / MiB / (ms / 1000)).toFixed(0)} MiB/s`;
    console.log(
      `| qemu-img convert -O qcow2 of the frozen image | ${secs(cv.alone)} | ${rate(cv.alone)} | 1.00× |`,
    );
    console.log(`| … and fsync of its output | ${secs(cv.synced)} | ${rate(cv.synced)} | |`);
    console.log(
      `| full backup: copyBackupDisk activity (started → completed) | ${secs(f.copy)} | ${rate(f.copy)} | ` +
        `${(cv.alone / f.copy).toFixed(2)}× convert, ${(cv.synced / f.copy).toFixed(2)}× convert+fsync |`,
    );
    console.log(
      `| full backup: backupVm end to end | ${secs(f.e2e)} | ${rate(f.e2e)} | ` +
        `${(cv.alone / f.e2e).toFixed(2)}× convert, ${(cv.synced / f.e2e).toFixed(2)}× convert+fsync |`,
    );
    console.log(
      `| incremental (1 %): copyBackupDisk activity | ${secs(inc.copyMs)} | | ${(inc.copyMs / f.copy).toFixed(3)}× the full's copy |`,
    );
    console.log(
      `| incremental (1 %): backupVm end to end | ${secs(inc.e2eMs)} | | ${(inc.e2eMs / f.e2e).toFixed(3)}× the full's end to end |`,
    );
    const ms = (xs: number[]) => xs.map((x) => x.toFixed(0)).join(', ');
    console.log(
      `\nruns (ms): full e2e ${ms(full.e2e)}; full copy ${ms(full.copy)}; convert ${ms(convert.alone)}; ` +
        `convert+fsync ${ms(convert.synced)}; incremental e2e ${ms(incs.map((b) => b.e2eMs))}, ` +
        `copy ${ms(incs.map((b) => b.copyMs))}`,
    );
    console.log(
      `inside the copy, each alone (median of 5, ms): ${Object.entries(fixed)
        .map(([k, v]) => `${k} ${median(v).toFixed(0)}`)
        .join(', ')}`,
    );
    await printStages(client, fullLast!, dom.uuid, 'last full');
    await printStages(client, incs[incs.length - 1]!.result.backupId, dom.uuid, 'last incremental');
  } finally {
    for (const c of cleanups) await c().catch((e: unknown) => console.error('cleanup:', e));
  }
}

/** Where an end to end goes: each activity's and child workflow's span (scheduled/initiated → closed). */
async function printStages(client: Client, backupId: string, vmId: string, what: string): Promise<void> {
  const events = (await client.workflow.getHandle(`backup:${vmId}:${backupId}`).fetchHistory()).events ?? [];
  const byId = (id: unknown) => events.find((e) => String(e.eventId) === String(id));
  const parts: string[] = [];
  for (const e of events) {
    const a = e.activityTaskCompletedEventAttributes;
    const c = e.childWorkflowExecutionCompletedEventAttributes;
    const from = a ? byId(a.scheduledEventId) : c ? byId(c.initiatedEventId) : undefined;
    if (!from) continue;
    const name = a
      ? from.activityTaskScheduledEventAttributes?.activityType?.name
      : from.startChildWorkflowExecutionInitiatedEventAttributes?.workflowType?.name;
    parts.push(`${name} ${eventMs(e) - eventMs(from)}`);
  }
  console.log(`${what} backupVm spans (ms): ${parts.join(', ')}`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
