// Faults on two hosts (DESIGN.md "Hosts", the naming): the storage role is host A's agent on the
// system libvirtd; the VM runs on host B, a simulated host with a libvirtd of its own (sim-host.ts). The cells are
// the single-host matrix's (harness.ts), with every check of it: data byte for byte, each committed volume
// deleted exactly once after verifyMerged, audit, reconcile with nothing to do, invariant 4.
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SimHostOptions } from '../../src/devstack/sim-host';
import { startSimHost, stopSimHost } from '../../src/devstack/sim-host';
import { STORAGE_TASK_QUEUE, hostTaskQueue } from '../../src/common/task-queues';
import { ProcessStack, until } from '../helpers/process-stack';
import type { Cell, FaultContext } from './harness';
import { cellName, cellTimeoutMs, faultContext, runCell } from './harness';

const CELLS: Cell[] = [
  { fault: 'storage-kill', stage: 'deletion' },
  { fault: 'host-kill', stage: 'copy' },
  { fault: 'libvirtd-restart', stage: 'ready' },
];

/** The task queues of mergeOnHost and of the deletion (recordAndDelete) in the merge since `since`. */
async function queuesOfLastMerge(stack: ProcessStack, since: Date) {
  const out = { mergeOnHost: [] as string[], recordAndDelete: [] as string[] };
  for await (const wf of stack.client.workflow.list({
    query: `WorkflowType = "mergeDisk" AND StartTime >= "${since.toISOString()}"`,
  })) {
    const history = await stack.client.workflow.getHandle(wf.workflowId, wf.runId).fetchHistory();
    for (const e of history.events ?? []) {
      const a = e.activityTaskScheduledEventAttributes;
      const type = a?.activityType?.name;
      if (type === 'mergeOnHost' || type === 'recordAndDelete') out[type].push(a?.taskQueue?.name ?? '');
    }
  }
  return out;
}

describe('faults on two hosts: the VM on a host of its own, the storage role on another', () => {
  let ctx: FaultContext | undefined;
  let dir = '';
  let sim: SimHostOptions | undefined;
  beforeAll(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'lm-hosts-'));
    await fs.chmod(dir, 0o755);
    sim = { dir: path.join(dir, 'b'), index: 131 };
    const host = await startSimHost(sim);
    const stack = await ProcessStack.start({ hostId: 'two-b', storageHostId: 'two-a', vmHostUri: host.uri });
    ctx = faultContext(stack, console.log, sim);
  });
  afterAll(async () => {
    await ctx?.libvirt.close();
    await ctx?.stack.stop();
    if (sim) await stopSimHost(sim.dir);
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  for (const cell of CELLS) {
    it(cellName(cell), { timeout: cellTimeoutMs(cell) }, async () => {
      try {
        const since = new Date();
        const r = await runCell(ctx!, cell);
        expect(r.outcome).toBe('completed');
        // The job ran on the VM's host, the deletion on the storage role of the other.
        // The list reads the visibility store, which follows the workflows asynchronously.
        const queues = await until(
          'the merge in the visibility store',
          async () => {
            const q = await queuesOfLastMerge(ctx!.stack, since);
            return q.mergeOnHost.length > 0 && q;
          },
          10_000,
          200,
        );
        expect(new Set(queues.mergeOnHost)).toEqual(new Set([hostTaskQueue('two-b')]));
        expect(new Set(queues.recordAndDelete)).toEqual(new Set([STORAGE_TASK_QUEUE]));
      } catch (err) {
        console.error(ctx!.stack.allLogs());
        throw err;
      }
    });
  }
});
