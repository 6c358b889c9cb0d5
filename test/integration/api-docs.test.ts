// docs/api.md's removeSnapshot examples, run exactly as documented (placeholders substituted) with the
// installed `temporal` CLI against the run's Temporal server, on a real VM with a real snapshot.
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { WorkflowNotFoundError } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DOCS_FILE, extractExample, flag, shellWords, substitute } from '../../scripts/gen-api-docs';
import { ENGINE_TASK_QUEUE } from '../../src/common/task-queues';
import { temporalCliPath } from '../../src/devstack/temporal-server';
import { parseDomainDiskChains } from '../../src/inspect/domain-xml';
import { RemoveSnapshotProgress } from '../../src/schemas/progress';
import { RemoveSnapshotResult } from '../../src/schemas/results';
import { dumpGuestView, exists, sameContent } from '../helpers/data';
import { NAMESPACE } from '../helpers/temporal';
import type { Stack, VmDisk } from '../helpers/stack';
import { useStack } from '../helpers/stack';
import type { TestVm } from '../helpers/vm-fixture';
import { createTempDir } from '../helpers/vm-fixture';
import { vmWithSnapshot } from '../helpers/workflows';

/** What `temporal workflow result --output json` prints. */
interface CliResult {
  status: string;
  result?: unknown;
  closeEvent: {
    eventType: string;
    workflowExecutionFailedEventAttributes?: {
      failure: { message: string; applicationFailureInfo?: { type?: string; nonRetryable?: boolean } };
    };
  };
}

interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs one documented `temporal ...` command line, with the installed CLI, without a shell. */
function runDocumented(exampleId: string, markdown: string, values: Record<string, string>): Promise<CliRun> {
  const words = substitute(shellWords(extractExample(markdown, exampleId)), values);
  expect(words[0]).toBe('temporal');
  // Only the command line decides where it goes: no TEMPORAL_* settings from the environment.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('TEMPORAL_')));
  return new Promise((resolve) => {
    execFile(temporalCliPath(), words.slice(1), { env, timeout: 100_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }),
    );
  });
}

/** The workflow id the documented start command uses. */
function documentedWorkflowId(markdown: string, values: Record<string, string>): string {
  const id = flag(
    substitute(shellWords(extractExample(markdown, 'removeSnapshot.start')), values),
    '--workflow-id',
  );
  if (!id) throw new Error('the documented start command has no --workflow-id');
  return id;
}

/** The files, metadata and domain definitions of a disk: what "untouched" compares. */
async function diskState(s: Stack, vm: TestVm, disk: VmDisk): Promise<string> {
  const files = (await fs.readdir(s.sd.imageDir(disk.imageId))).sort();
  const meta = (await s.sd.listVolumes(disk.imageId)).map((v) => JSON.stringify(v)).sort();
  return JSON.stringify({
    files,
    meta,
    xml: await vm.domain.xml(),
    inactive: await vm.domain.xml({ inactive: true }),
  });
}

describe('docs/api.md: removeSnapshot through the temporal CLI', () => {
  let s: Stack;
  let vm: TestVm;
  let disk: VmDisk;
  let snapshotId: string;
  let docs: string;
  let values: (over: Record<string, string>) => Record<string, string>;

  beforeAll(async () => {
    s = await useStack();
    docs = await fs.readFile(DOCS_FILE, 'utf8');
    ({ vm, disk, snapshotId } = await vmWithSnapshot(s));
    values = (over) => ({ address: s.address, namespace: NAMESPACE, vmId: vm.uuid, snapshotId, ...over });
  });
  afterAll(async () => {
    await vm?.cleanup();
  });

  it('refuses an invalid input (InvalidRequest, non-retryable, FAILED) and a malformed one, changing nothing', async () => {
    const before = await diskState(s, vm, disk);

    // A non-canonical (upper-case) snapshot id: the CLI starts the workflow, which refuses the input.
    const invalid = values({ snapshotId: randomUUID().toUpperCase() });
    const workflowId = documentedWorkflowId(docs, invalid);
    const started = await runDocumented('removeSnapshot.start', docs, invalid);
    expect(started, started.stderr).toMatchObject({ code: 0 });
    expect(started.stdout).toContain(workflowId);
    const result = await runDocumented('removeSnapshot.result', docs, invalid);
    expect(result.code, result.stderr).toBe(1);
    const out = JSON.parse(result.stdout) as CliResult;
    expect(out.status).toBe('FAILED');
    expect(out.closeEvent.eventType).toBe('EVENT_TYPE_WORKFLOW_EXECUTION_FAILED');
    expect(
      out.closeEvent.workflowExecutionFailedEventAttributes?.failure.applicationFailureInfo,
    ).toMatchObject({
      type: 'InvalidRequest',
      nonRetryable: true,
    });
    expect(out.closeEvent.workflowExecutionFailedEventAttributes?.failure.message).toMatch(/snapshotId/);

    // The same through the SDK: one run, FAILED, refused before any activity (no side effect) was scheduled.
    const handle = s.client.workflow.getHandle(workflowId);
    const described = await handle.describe();
    expect(described).toMatchObject({ type: 'removeSnapshot', taskQueue: ENGINE_TASK_QUEUE });
    expect(described.status.name).toBe('FAILED');
    const history = await handle.fetchHistory();
    expect(history.events?.some((e) => e.activityTaskScheduledEventAttributes)).toBe(false);
    expect(history.events?.filter((e) => e.workflowTaskFailedEventAttributes)).toEqual([]);

    // Malformed JSON: the CLI itself refuses it, and nothing is started.
    const malformed = values({ snapshotId: `${randomUUID()}"` });
    const refused = await runDocumented('removeSnapshot.start', docs, malformed);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/not valid JSON/);
    await expect(
      s.client.workflow.getHandle(documentedWorkflowId(docs, malformed)).describe(),
    ).rejects.toBeInstanceOf(WorkflowNotFoundError);

    expect(await diskState(s, vm, disk)).toBe(before);
    const audit = await s.auditLog.read({ vmId: vm.uuid });
    expect(audit.filter((e) => e.workflowType !== 'createSnapshot')).toEqual([]);
  });

  it('removes the snapshot when started exactly as documented, keeping every byte', async () => {
    const tmp = await createTempDir();
    const chain = await s.sd.readChain(disk.imageId);
    expect(chain.map((v) => v.snapshotId)).toEqual([snapshotId, null]);
    const [frozen, leaf] = chain as [(typeof chain)[number], (typeof chain)[number]];
    const before = await dumpGuestView(leaf.path, 'qcow2', path.join(tmp.path, 'before.raw'));
    const v = values({});
    const workflowId = documentedWorkflowId(docs, v);
    expect(workflowId).toBe(`remove-snapshot:${vm.uuid}:${snapshotId}`);

    const started = await runDocumented('removeSnapshot.start', docs, v);
    expect(started, started.stderr).toMatchObject({ code: 0 });
    expect(started.stdout).toContain(workflowId);

    // `temporal workflow result` waits for the workflow to close.
    const result = await runDocumented('removeSnapshot.result', docs, v);
    expect(result, result.stderr).toMatchObject({ code: 0 });
    const out = JSON.parse(result.stdout) as CliResult;
    expect(out.status).toBe('COMPLETED');
    const removed = RemoveSnapshotResult.parse(out.result);
    expect(removed).toEqual({
      vmId: vm.uuid,
      snapshotId,
      hostId: s.hostId,
      removedVolumeIds: [leaf.volumeId],
      disks: [{ target: 'vda', imageId: disk.imageId, status: 'merged' }],
    });

    // The documented query answers with the documented schema.
    const query = await runDocumented('removeSnapshot.query', docs, v);
    expect(query, query.stderr).toMatchObject({ code: 0 });
    const answer = (JSON.parse(query.stdout) as { queryResult: unknown[] }).queryResult;
    expect(answer).toHaveLength(1);
    const progress = RemoveSnapshotProgress.parse(answer[0]);
    expect(progress).toMatchObject({ stage: 'done', hostId: s.hostId, removedVolumeIds: [leaf.volumeId] });
    expect(progress.disks).toEqual([
      expect.objectContaining({ stage: 'done', mode: 'live', imageId: disk.imageId, target: 'vda' }),
    ]);

    // The search attributes the docs list.
    const described = await s.client.workflow.getHandle(workflowId).describe();
    expect(described).toMatchObject({ type: 'removeSnapshot', taskQueue: ENGINE_TASK_QUEUE });
    expect(described.searchAttributes).toMatchObject({
      LivemergeVmId: [vm.uuid],
      LivemergeHostId: [s.hostId],
      LivemergeStage: ['done'],
    });

    // The snapshot is gone: its volume took over the leaf's data and is the VM's leaf; every byte is there.
    expect(await exists(leaf.path)).toBe(false);
    const after = await s.sd.readChain(disk.imageId);
    expect(after.map((x) => [x.volumeId, x.snapshotId])).toEqual([[frozen.volumeId, null]]);
    const live = parseDomainDiskChains(await vm.domain.xml())[0]!;
    expect(live.chain.map((e) => e.path)).toEqual([frozen.path]);
    expect(await sameContent({ path: before, format: 'raw' }, { path: frozen.path, format: 'qcow2' })).toBe(
      true,
    );
  });

  it('a removal started with the documented search attributes does not upsert them itself', async () => {
    const other = await vmWithSnapshot(s);
    try {
      const v = { ...values({}), vmId: other.vm.uuid, snapshotId: other.snapshotId, hostId: s.hostId };
      const started = await runDocumented('removeSnapshot.startWithSearchAttributes', docs, v);
      expect(started, started.stderr).toMatchObject({ code: 0 });
      const result = await runDocumented('removeSnapshot.result', docs, v);
      expect(result, result.stderr).toMatchObject({ code: 0 });
      expect((JSON.parse(result.stdout) as CliResult).status).toBe('COMPLETED');
      const handle = s.client.workflow.getHandle(documentedWorkflowId(docs, v));
      // Its upserts: the SDK's for the patch marker (TemporalChangeVersion) and its end; none of the VM
      // or the host, which the start carried (the temporal CLI's typed Keyword values).
      const upserts = ((await handle.fetchHistory()).events ?? []).flatMap((e) => {
        const fields = e.upsertWorkflowSearchAttributesEventAttributes?.searchAttributes?.indexedFields;
        return fields ? [Object.keys(fields).sort()] : [];
      });
      expect(upserts).toEqual([['TemporalChangeVersion'], ['LivemergeStage']]);
      expect((await handle.describe()).searchAttributes).toMatchObject({
        LivemergeVmId: [other.vm.uuid],
        LivemergeHostId: [s.hostId],
        LivemergeStage: ['done'],
      });
    } finally {
      await other.vm.cleanup();
    }
  });
});
