// How fast does a merge notice that QEMU finished a block job? For each iteration: a TCG VM with one
// disk, two live snapshots, 8 MiB in each layer; removeSnapshot of the older one (intermediate commit,
// COMPLETED) and then of the newer one (active commit, READY + pivot). The host unit (mergeOnHost) acts on
// the event itself: after READY it pivots at once, in the same process. Measured from the libvirt event,
// seen by this process on its own connection: READY → the job's end after the pivot (libvirt's COMPLETED
// event of the active commit), and the event → the host unit's completion and the workflow's next step in
// the history (the activity scheduled after it: recordAndDelete, recordMerge before lean v3, verifyMerged
// when the host unit could not verify). Jobs are throttled to ~0.5 s so that they finish after the host
// unit subscribed, as any real merge does. The anchor, in the same VM after the removals: an overlay taken
// by this process, the same throttled active commit, and this process pivoting on the READY event it sees
// (READY → COMPLETED with no livemerge in between); the difference is what the host unit adds to noticing
// READY.
//
// Usage: npx livemerge dev up && npx tsx bench/notice-latency.ts [iterations=5]
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { testVmXml } from '../src/cli/dev/vm-xml';
import { ENGINE_TASK_QUEUE } from '../src/common/task-queues';
import { loadConfig, temporalConnectionOptions } from '../src/config';
import { BlockJobStatus, DomainUndefineFlags, LibvirtConnection, hmpQemuIo } from '../src/libvirt';
import { SnapshotCreateFlags } from '../src/libvirt/constants';
import type { BlockJobEvent } from '../src/libvirt';
import { StorageDomain } from '../src/storage/storage-domain';
import { apiCommit } from './api-commit';
import { eventMs } from './history-events';

const MiB = 1 << 20;

/** When the host unit completed, and when the workflow then scheduled its next activity. */
async function stepTimes(client: Client, workflowId: string): Promise<{ unitDone: number; next: number }> {
  const events = (await client.workflow.getHandle(workflowId).fetchHistory()).events ?? [];
  const unit = events.find(
    (x) => x.activityTaskScheduledEventAttributes?.activityType?.name === 'mergeOnHost',
  );
  if (!unit) throw new Error(`${workflowId}: no mergeOnHost scheduled`);
  const doneAt = events.findIndex(
    (x) => x.activityTaskCompletedEventAttributes?.scheduledEventId?.toString() === unit.eventId?.toString(),
  );
  const next = events.slice(doneAt + 1).find((x) => x.activityTaskScheduledEventAttributes);
  if (doneAt < 0 || !next) throw new Error(`${workflowId}: no mergeOnHost completion or no step after it`);
  return { unitDone: eventMs(events[doneAt]!), next: eventMs(next) };
}

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
}

async function main(): Promise<void> {
  const iterations = Number(process.argv[2] ?? 5);
  const config = loadConfig();
  const connection = await Connection.connect(temporalConnectionOptions(config));
  const client = new Client({ connection, namespace: config.temporalNamespace });
  const conn = await LibvirtConnection.open(config.libvirtUri);
  const sd = await StorageDomain.create(config.storageRoot, randomUUID());
  const events: Array<BlockJobEvent & { at: number }> = [];
  conn.onBlockJob((e) => events.push({ ...e, at: Date.now() }));
  const completedToUnit: number[] = [];
  const completedToNext: number[] = [];
  const readyToPivoted: number[] = [];
  const readyToNext: number[] = [];
  const anchorReadyToPivoted: number[] = [];
  const mergeSeconds: number[] = [];
  // The anchor's overlays: QEMU (another user) opens them, so the directory is not mkdtemp's 0700.
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'lm-notice-'));
  await fs.chmod(tmp, 0o755);

  try {
    for (let i = 0; i < iterations; i++) {
      const base = await sd.createImage({ format: 'qcow2', capacity: 64 * MiB });
      const dom = await conn.defineXml(testVmXml(`lm-bench-${randomUUID().slice(0, 8)}`, [base]));
      try {
        await dom.create();
        const snapshot = async () => {
          const snapshotId = randomUUID();
          await client.workflow.execute('createSnapshot', {
            taskQueue: ENGINE_TASK_QUEUE,
            workflowId: `create-snapshot:${dom.uuid}:${snapshotId}`,
            args: [{ vmId: dom.uuid, snapshotId }],
          });
          await hmpQemuIo(dom, 'virtio-disk0', `write -P 0x${(0x41 + i).toString(16)} 0 8M`);
          return snapshotId;
        };
        const remove = async (snapshotId: string) => {
          const t0 = Date.now();
          await client.workflow.execute('removeSnapshot', {
            taskQueue: ENGINE_TASK_QUEUE,
            workflowId: `remove-snapshot:${dom.uuid}:${snapshotId}`,
            // ~0.5 s per job: long enough that the job finishes after the wait began, as any real merge does
            // (an 8 MiB job unthrottled is READY before the waiting activity is even scheduled).
            args: [{ vmId: dom.uuid, snapshotId, bandwidthBytesPerSec: 16 * MiB }],
          });
          mergeSeconds.push((Date.now() - t0) / 1000);
        };
        const older = await snapshot();
        const newer = await snapshot();
        const mergeId = `merge-disk:${dom.uuid}:${base.imageId}`;

        await remove(older);
        const jobEvents = (status: number) =>
          events.filter((e) => e.domainUuid === dom.uuid && e.status === status);
        const completed = jobEvents(BlockJobStatus.COMPLETED).at(-1)!.at;
        const t1 = await stepTimes(client, mergeId);
        completedToUnit.push(t1.unitDone - completed);
        completedToNext.push(t1.next - completed);

        await remove(newer);
        const ready = jobEvents(BlockJobStatus.READY).at(-1)!.at;
        // The active commit's own COMPLETED event comes once the pivot switched the disk to base.
        const pivoted = jobEvents(BlockJobStatus.COMPLETED).at(-1)!.at;
        readyToPivoted.push(pivoted - ready);
        readyToNext.push((await stepTimes(client, mergeId)).next - ready);

        // The anchor: an overlay this process takes and commits back itself, pivoting on READY.
        const overlay = path.join(tmp, `anchor-${i}.qcow2`);
        await dom.snapshotCreateXml(
          `<domainsnapshot><disks><disk name='vda' snapshot='external' type='file'>` +
            `<driver type='qcow2'/><source file='${overlay}'/></disk></disks></domainsnapshot>`,
          SnapshotCreateFlags.DISK_ONLY | SnapshotCreateFlags.NO_METADATA | SnapshotCreateFlags.ATOMIC,
        );
        await hmpQemuIo(dom, 'virtio-disk0', `write -P 0x${(0x61 + i).toString(16)} 0 8M`);
        await apiCommit(conn, dom, null, null, { active: true, bandwidthBytesPerSec: 16 * MiB });
        // Timed on the same listener as livemerge's rows.
        anchorReadyToPivoted.push(
          jobEvents(BlockJobStatus.COMPLETED).at(-1)!.at - jobEvents(BlockJobStatus.READY).at(-1)!.at,
        );
      } finally {
        await dom.destroy().catch(() => undefined);
        await dom.undefine(DomainUndefineFlags.SNAPSHOTS_METADATA).catch(() => undefined);
        dom.free();
      }
    }
  } finally {
    // The benchmark's own storage domain (its base images) and the anchor's overlays.
    await fs.rm(sd.dir, { recursive: true, force: true });
    await fs.rm(tmp, { recursive: true, force: true });
  }
  await conn.close();
  await connection.close();

  const row = (name: string, xs: number[], unit: string) =>
    `| ${name} | ${xs.length} | ${percentile(xs, 50).toFixed(unit === 's' ? 2 : 0)} | ${percentile(xs, 95).toFixed(unit === 's' ? 2 : 0)} | ${Math.max(...xs).toFixed(unit === 's' ? 2 : 0)} | ${unit} |`;
  console.log('| measure | n | p50 | p95 | max | unit |\n| --- | --- | --- | --- | --- | --- |');
  console.log(
    row('READY event → pivot done on the host (COMPLETED event after the pivot)', readyToPivoted, 'ms'),
  );
  console.log(
    row('anchor: READY event → pivot done, this process pivoting on the event', anchorReadyToPivoted, 'ms'),
  );
  console.log(row('READY event → next step scheduled (pivot, verify, report, engine)', readyToNext, 'ms'));
  console.log(
    row(
      'COMPLETED event → host unit completed (intermediate commit, verify included)',
      completedToUnit,
      'ms',
    ),
  );
  console.log(row('COMPLETED event → next step scheduled (intermediate commit)', completedToNext, 'ms'));
  console.log(row('removeSnapshot wall time, 8 MiB layer (start → result)', mergeSeconds, 's'));
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
