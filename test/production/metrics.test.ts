// Metrics and logs of real worker processes (docs/operations.md): the engine and two host agents, each
// `node bin/livemerge.cjs worker ...` with LIVEMERGE_METRICS_ADDRESS, on the run's Temporal server; Debian's
// Prometheus scrapes them every second; a live merge runs, and Prometheus's HTTP API must then show that
// merge's counters (and a failed removal's), its duration, its committed bytes, the notice latency and the
// SDK's own metrics. The agent's log of the merge is one JSON object per line with the workflow's ids and
// the VM.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { ENGINE_TASK_QUEUE } from '../../src/common/task-queues';
import { LibvirtConnection } from '../../src/libvirt';
import { StorageDomain } from '../../src/storage/storage-domain';
import type { RemoveSnapshotResult } from '../../src/workflows/remove-snapshot';
import { writeThroughGuest } from '../helpers/data';
import { pollUntil } from '../helpers/poll';
import { ProcessStack } from '../helpers/process-stack';
import { freePort } from '../helpers/procs';
import { NAMESPACE, atFileEnd, temporalEnv } from '../helpers/temporal';
import { createTestVm } from '../helpers/vm-fixture';

const PROMETHEUS = '/usr/bin/prometheus';
const MiB = 1 << 20;
const PARTS = ['engine', 'host', 'storage'] as const;
type WorkerPart = (typeof PARTS)[number];

let stack: ProcessStack;
let promUrl = '';

/** Debian's Prometheus on a free port, scraping every worker every second; stopped when the file ends. */
async function startPrometheus(dir: string, targets: Record<WorkerPart, string>): Promise<string> {
  const port = await freePort();
  const config = [
    'global:',
    '  scrape_interval: 1s',
    '  scrape_timeout: 1s',
    'scrape_configs:',
    ...PARTS.flatMap((p) => [
      `  - job_name: livemerge-${p}`,
      '    static_configs:',
      `      - targets: ['${targets[p]}']`,
    ]),
  ].join('\n');
  await fsp.writeFile(path.join(dir, 'prometheus.yml'), `${config}\n`);
  const log = fs.openSync(path.join(dir, 'prometheus.log'), 'a');
  const child: ChildProcess = spawn(
    PROMETHEUS,
    [
      `--config.file=${path.join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${path.join(dir, 'tsdb')}`,
      `--web.listen-address=127.0.0.1:${port}`,
    ],
    { cwd: dir, stdio: ['ignore', log, log] },
  );
  fs.closeSync(log);
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    child.once('error', () => resolve());
  });
  atFileEnd(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  });
  const url = `http://127.0.0.1:${port}`;
  await pollUntil(
    async () => {
      if (child.exitCode !== null || child.signalCode !== null)
        throw new Error(`prometheus exited: ${await fsp.readFile(path.join(dir, 'prometheus.log'), 'utf8')}`);
      return await fetch(`${url}/-/ready`).then(
        (r) => r.ok,
        () => false,
      );
    },
    60_000,
    'prometheus to be ready',
    100,
  );
  return url;
}

interface Sample {
  metric: Record<string, string>;
  value: [number, string];
}

/** An instant query through Prometheus's HTTP API. */
async function query(expr: string): Promise<Sample[]> {
  const res = await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(expr)}`);
  const body = (await res.json()) as { status: string; error?: string; data?: { result: Sample[] } };
  if (body.status !== 'success') throw new Error(`query ${expr}: ${body.error ?? res.status}`);
  return body.data?.result ?? [];
}

/** Polls Prometheus until `expr` has a sample for which `ok` holds (scrapes come every second). */
async function untilSample(expr: string, ok: (v: number) => boolean = (v) => v > 0): Promise<Sample> {
  return await pollUntil(
    async () => (await query(expr)).find((s) => ok(Number(s.value[1]))),
    30_000,
    `prometheus to show ${expr}`,
    250,
  );
}

beforeAll(async () => {
  if (!fs.existsSync(PROMETHEUS)) throw new Error(`${PROMETHEUS} is missing: run 'bash scripts/setup.sh'`);
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'lm-metrics-'));
  atFileEnd(() => fsp.rm(dir, { recursive: true, force: true }));
  const suffix = randomUUID().slice(0, 8);
  const targets = {} as Record<WorkerPart, string>;
  for (const p of PARTS) targets[p] = `127.0.0.1:${await freePort()}`;
  stack = await ProcessStack.start({
    externalTemporal: temporalEnv(),
    namespace: NAMESPACE,
    workerEnv: Object.fromEntries(PARTS.map((p) => [p, { LIVEMERGE_METRICS_ADDRESS: targets[p] }])),
    hostId: `metrics-a-${suffix}`,
    storageHostId: `metrics-b-${suffix}`,
  });
  atFileEnd(() => stack.stop());
  promUrl = await startPrometheus(dir, targets);
});

/** Every line the agent wrote, each a JSON object (JSON.parse throws on any other). */
function hostRecords(): Record<string, unknown>[] {
  return fs
    .readFileSync(stack.logFile('host'), 'utf8')
    .split('\n')
    .filter((l) => l !== '' && !l.startsWith('===== ')) // the stack's own start markers
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

describe('metrics and logs of the worker processes', () => {
  it("Prometheus finds a live merge's counters, duration, bytes and notice latency; the agent logs JSON", async () => {
    try {
      const conn = await LibvirtConnection.open();
      atFileEnd(() => conn.close());
      const sd = await StorageDomain.create(stack.storageRoot, randomUUID());
      const base = await sd.createImage({ format: 'qcow2', capacity: 64 * MiB });
      const vm = await createTestVm(conn, { disks: [{ path: base.path, format: base.format }] });
      await writeThroughGuest(vm.domain, 0, { byte: 0x41, offset: 0, length: 4 * MiB });
      const snapshotId = randomUUID();
      await stack.client.workflow.execute('createSnapshot', {
        taskQueue: ENGINE_TASK_QUEUE,
        workflowId: `create-snapshot:${vm.uuid}:${snapshotId}`,
        args: [{ vmId: vm.uuid, snapshotId }],
      });
      await writeThroughGuest(vm.domain, 0, { byte: 0x42, offset: 4 * MiB, length: 8 * MiB });
      // An active commit (the snapshot's child is the leaf), throttled to ~1 s so the agent sees the job.
      const removal = `remove-snapshot:${vm.uuid}:${snapshotId}`;
      const result = (await stack.client.workflow.execute('removeSnapshot', {
        taskQueue: ENGINE_TASK_QUEUE,
        workflowId: removal,
        args: [{ vmId: vm.uuid, snapshotId, bandwidthBytesPerSec: 8 * MiB }],
      })) as RemoveSnapshotResult;
      expect(result.removedVolumeIds).toHaveLength(1);
      const mergeId = `merge-disk:${vm.uuid}:${base.imageId}`;

      // livemerge's own, from workflow code on the engine: this namespace saw exactly this removal.
      const ns = `namespace="${NAMESPACE}"`;
      const labels = 'kind="active",mode="live",direction="backward",outcome="completed"';
      for (const type of ['removeSnapshot', 'mergeDisk']) {
        const merges = await untilSample(`livemerge_merges_total{${ns},workflowType="${type}",${labels}}`);
        expect(Number(merges.value[1])).toBe(1);
        expect(merges.metric.job).toBe('livemerge-engine');
        const count = await untilSample(
          `livemerge_merge_duration_seconds_count{${ns},workflowType="${type}",${labels}}`,
        );
        expect(Number(count.value[1])).toBe(1);
        const sum = await untilSample(
          `livemerge_merge_duration_seconds_sum{${ns},workflowType="${type}",${labels}}`,
        );
        expect(Number(sum.value[1])).toBeGreaterThan(0.5); // the throttled copy alone takes ~1 s
      }
      // A failed removal (no disk has the snapshot) is counted with what it knew: nothing about a disk.
      const missing = randomUUID();
      await expect(
        stack.client.workflow.execute('removeSnapshot', {
          taskQueue: ENGINE_TASK_QUEUE,
          workflowId: `remove-snapshot:${vm.uuid}:${missing}`,
          args: [{ vmId: vm.uuid, snapshotId: missing }],
        }),
      ).rejects.toThrow();
      const failed = await untilSample(
        `livemerge_merges_total{${ns},workflowType="removeSnapshot",kind="unknown",mode="unknown",outcome="failed"}`,
      );
      expect(Number(failed.value[1])).toBe(1);
      // From the host unit on the VM's agent.
      const bytes = await untilSample(`livemerge_bytes_committed_total{${ns},jobKind="active-commit"}`);
      expect(bytes.metric.job).toBe('livemerge-host');
      expect(Number(bytes.value[1])).toBeGreaterThan(0);
      // The notice latency is measured from libvirt's READY event; the fallback poll can find READY first
      // (libvirt updates the live XML before its event reaches us), and then there is nothing to measure.
      // The unit logs which it was; the bytes above were counted after, so their scrape decides absence.
      const endings = hostRecords().filter(
        (r) => r.message === 'mergeOnHost: job ended' && r.workflowId === mergeId,
      );
      expect(endings).toHaveLength(1); // one attempt: a retry would log (and maybe measure) again
      const [ended] = endings;
      expect(ended?.event).toBe('ready');
      expect(['event', 'poll']).toContain(ended?.noticedBy);
      const readyLatency = `livemerge_notice_latency_milliseconds_count{${ns},event="ready"}`;
      if (ended?.noticedBy === 'event') {
        const latency = await untilSample(readyLatency);
        expect(latency.metric.job).toBe('livemerge-host');
        expect(Number(latency.value[1])).toBe(1);
      } else expect(await query(readyLatency)).toEqual([]);
      // The SDK's own: the workflow completions on the engine, the activity on the agent.
      await untilSample(`temporal_workflow_completed{${ns},workflow_type="removeSnapshot"}`);
      await untilSample(`temporal_activity_execution_latency_count{${ns},activity_type="mergeOnHost"}`);

      // Logs: every line the agent wrote is a JSON object; the unit's own lines name the merge and the VM.
      const job = hostRecords().find((r) => r.message === 'mergeOnHost: job' && r.workflowId === mergeId);
      expect(job).toMatchObject({
        level: 'INFO',
        workflowId: mergeId,
        vmId: vm.uuid,
        activityType: 'mergeOnHost',
      });
      expect(job?.runId).toEqual(expect.any(String));
      expect(Date.parse(String(job?.time))).toBeGreaterThan(0);
    } catch (err) {
      console.error(stack.allLogs());
      throw err;
    }
  });
});
