// Another language (issue #11, item 4): the Python example of docs/api.md (examples/python/remove_snapshot.py,
// PyPI temporalio from .tools/venv) run as a user's service would run it, a child process that knows only
// the Temporal settings of the environment, against real engine and host workers on the run's server (the
// cluster with mTLS in this stage). It starts removeSnapshot by type name with a JSON input, answers
// progress from the query while the merge is held before its pivot, gets the result, and gets
// InvalidRequest as a typed failure for a bad input.
import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { DOCS_FILE, PYTHON_EXAMPLE_FILE, extractPythonExample } from '../../scripts/gen-api-docs';
import { ENGINE_TASK_QUEUE } from '../../src/common/task-queues';
import { REPO_ROOT } from '../../src/config';
import { parseDomainDiskChains } from '../../src/inspect/domain-xml';
import { RemoveSnapshotProgress } from '../../src/schemas/progress';
import { RemoveSnapshotResult } from '../../src/schemas/results';
import { dumpGuestView, exists, hasPattern, sameContent } from '../helpers/data';
import { pollUntil } from '../helpers/poll';
import type { Stack, VmDisk } from '../helpers/stack';
import { useStack } from '../helpers/stack';
import { NAMESPACE, temporalEnv } from '../helpers/temporal';
import type { TestVm } from '../helpers/vm-fixture';
import { createTempDir } from '../helpers/vm-fixture';
import { vmWithSnapshot } from '../helpers/workflows';

const PYTHON = path.join(REPO_ROOT, '.tools', 'venv', 'bin', 'python');

/** One line of the example's stdout. */
type Line =
  | { progress: unknown }
  | { result: unknown }
  | { failure: { type: string; message: string; nonRetryable: boolean; details: unknown[] } };

interface PythonRun {
  child: ChildProcess;
  /** Every stdout line so far, parsed. */
  lines: Line[];
  stderr: () => string;
  exit: Promise<number>;
}

/** Starts the example; the child sees the run's Temporal settings and the file's namespace, nothing else. */
function runPython(args: string[], temporalSettings: Record<string, string> = temporalEnv()): PythonRun {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('TEMPORAL_')));
  const child = spawn(PYTHON, [PYTHON_EXAMPLE_FILE, ...args], {
    env: { ...env, ...temporalSettings, TEMPORAL_NAMESPACE: NAMESPACE },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: Line[] = [];
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    out += chunk;
    let nl: number;
    while ((nl = out.indexOf('\n')) >= 0) {
      lines.push(JSON.parse(out.slice(0, nl)) as Line);
      out = out.slice(nl + 1);
    }
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
  const exit = new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`remove_snapshot.py did not exit in 120 s; stderr:\n${err}`));
    }, 120_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      // Killed by a signal: say which, with what it printed (a bare `null` tells nothing).
      if (code === null)
        reject(
          new Error(`remove_snapshot.py ended by ${signal}; lines ${JSON.stringify(lines)}; stderr:\n${err}`),
        );
      else resolve(code);
    });
  });
  return { child, lines, stderr: () => err, exit };
}

const progressOf = (lines: Line[]) =>
  lines.flatMap((l) => ('progress' in l ? [RemoveSnapshotProgress.parse(l.progress)] : []));

describe('the Python client (examples/python/remove_snapshot.py, PyPI temporalio)', () => {
  let s: Stack;
  let vm: TestVm;
  let disk: VmDisk;
  let snapshotId: string;

  beforeAll(async () => {
    s = await useStack({ holds: true });
    ({ vm, disk, snapshotId } = await vmWithSnapshot(s));
  });
  afterAll(async () => {
    s?.holds?.releaseAll();
    await vm?.cleanup();
  });

  it('is the program docs/api.md shows', async () => {
    expect(extractPythonExample(await fs.readFile(DOCS_FILE, 'utf8'))).toBe(
      await fs.readFile(PYTHON_EXAMPLE_FILE, 'utf8'),
    );
  });

  it('removes the snapshot: progress answered mid-merge, the result, every byte kept', async () => {
    const tmp = await createTempDir();
    const chain = await s.sd.readChain(disk.imageId);
    expect(chain.map((v) => v.snapshotId)).toEqual([snapshotId, null]);
    const [frozen, leaf] = chain as [(typeof chain)[number], (typeof chain)[number]];
    const before = await dumpGuestView(leaf.path, 'qcow2', path.join(tmp.path, 'before.raw'));

    // Held before the pivot: the active commit is READY, and the Python client's query must say so.
    s.holds!.hold('pivot');
    const run = runPython([vm.uuid, snapshotId]);
    await s.holds!.waitHeld('pivot');
    const ready = await pollUntil(
      () => progressOf(run.lines).find((p) => p.disks.some((d) => d.stage === 'ready')),
      60_000,
      'the Python client to print progress in stage ready',
      50,
    ).catch((err: unknown) => {
      throw new Error(`${String(err)}; its lines: ${JSON.stringify(run.lines)}; stderr: ${run.stderr()}`);
    });
    expect(ready).toMatchObject({ stage: 'ready', hostId: s.hostId, removedVolumeIds: [] });
    expect(ready.disks).toEqual([
      expect.objectContaining({ stage: 'ready', mode: 'live', imageId: disk.imageId, target: 'vda' }),
    ]);
    s.holds!.release('pivot');

    expect(await run.exit, run.stderr()).toBe(0);
    const last = run.lines.at(-1);
    expect(last && 'result' in last, JSON.stringify(run.lines)).toBe(true);
    const result = RemoveSnapshotResult.parse((last as { result: unknown }).result);
    expect(result).toEqual({
      vmId: vm.uuid,
      snapshotId,
      hostId: s.hostId,
      removedVolumeIds: [leaf.volumeId],
      disks: [{ target: 'vda', imageId: disk.imageId, status: 'merged' }],
    });
    // The query after the close answers too: the last progress line is the finished merge.
    expect(progressOf(run.lines).at(-1)).toMatchObject({ stage: 'done', removedVolumeIds: [leaf.volumeId] });

    // Started by type name, on the engine's queue, under the documented workflow id.
    const described = await s.client.workflow
      .getHandle(`remove-snapshot:${vm.uuid}:${snapshotId}`)
      .describe();
    expect(described).toMatchObject({ type: 'removeSnapshot', taskQueue: ENGINE_TASK_QUEUE });
    expect(described.status.name).toBe('COMPLETED');

    // On disk: the snapshot's volume took over the leaf's data and is the VM's only layer.
    expect(await exists(leaf.path)).toBe(false);
    const after = await s.sd.readChain(disk.imageId);
    expect(after.map((x) => [x.volumeId, x.snapshotId])).toEqual([[frozen.volumeId, null]]);
    expect(parseDomainDiskChains(await vm.domain.xml())[0]!.chain.map((e) => e.path)).toEqual([frozen.path]);
    expect(await sameContent({ path: before, format: 'raw' }, { path: frozen.path, format: 'qcow2' })).toBe(
      true,
    );
    expect(await hasPattern(frozen.path, 'qcow2', { byte: 0x42, offset: 2 << 16, length: 4 << 16 })).toBe(
      true,
    );
    expect(await hasPattern(frozen.path, 'qcow2', { byte: 0x41, offset: 0, length: 2 << 16 })).toBe(true);
  });

  it('gets InvalidRequest as a typed, non-retryable failure for a bad input, changing nothing', async () => {
    const files = async () => (await fs.readdir(s.sd.imageDir(disk.imageId))).sort();
    const filesBefore = await files();
    const metaBefore = await s.sd.listVolumes(disk.imageId);
    // Not a canonical lower-case UUID: the client sends it as given, the workflow refuses it.
    const badSnapshotId = randomUUID().toUpperCase();
    const run = runPython([vm.uuid, badSnapshotId]);
    expect(await run.exit, run.stderr()).toBe(1);
    const last = run.lines.at(-1);
    expect(last && 'failure' in last, JSON.stringify(run.lines)).toBe(true);
    const { failure } = last as Extract<Line, { failure: unknown }>;
    expect(failure).toMatchObject({ type: 'InvalidRequest', nonRetryable: true });
    expect(failure.message).toMatch(/snapshotId/);
    expect(failure.details).toEqual([{ issues: [expect.stringMatching(/^snapshotId: /) as unknown] }]);

    const handle = s.client.workflow.getHandle(`remove-snapshot:${vm.uuid}:${badSnapshotId}`);
    expect((await handle.describe()).status.name).toBe('FAILED');
    const history = await handle.fetchHistory();
    expect(history.events?.some((e) => e.activityTaskScheduledEventAttributes)).toBe(false);
    expect(await files()).toEqual(filesBefore);
    expect(await s.sd.listVolumes(disk.imageId)).toEqual(metaBefore);
  });

  // On the cluster (mTLS required), the certificate is what lets the client in: the same program with the
  // address alone, or with the CA but no client certificate, is refused and starts nothing.
  it.runIf(inject('temporalTls') !== undefined)(
    'is refused by the mTLS cluster without the client certificate from the environment',
    async () => {
      const full = temporalEnv();
      const id = randomUUID();
      const variants: Array<Record<string, string>> = [
        { TEMPORAL_ADDRESS: full.TEMPORAL_ADDRESS! },
        {
          TEMPORAL_ADDRESS: full.TEMPORAL_ADDRESS!,
          TEMPORAL_TLS_CA: full.TEMPORAL_TLS_CA!,
          TEMPORAL_TLS_SERVER_NAME: full.TEMPORAL_TLS_SERVER_NAME!,
        },
      ];
      for (const settings of variants) {
        const run = runPython([vm.uuid, id], settings);
        expect(await run.exit).not.toBe(0);
        expect(run.lines).toEqual([]);
        expect(run.stderr()).toMatch(
          /RuntimeError|Failed client connect|transport error|certificate|handshake/i,
        );
      }
      await expect(
        s.client.workflow.getHandle(`remove-snapshot:${vm.uuid}:${id}`).describe(),
      ).rejects.toThrow(/not found/i);
    },
  );
});
