import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ENGINE_TASK_QUEUE } from '../../src/common/task-queues';
import type { reconcile as ReconcileWorkflow } from '../../src/workflows/reconcile';
import { exists, writeThroughGuest } from '../helpers/data';
import { checkImage } from '../helpers/invariants';
import { createStackVm, useStack } from '../helpers/stack';
import { uniqueId } from '../helpers/temporal';
import { createSnapshot, removeSnapshot } from '../helpers/workflows';

describe('reconcile', () => {
  it('deletes ILLEGAL volumes no chain references, leaves the rest, reports agreement', async () => {
    const s = await useStack();
    const { vm, disks } = await createStackVm(s, { disks: 1 });
    const imageId = disks[0]!.imageId;
    await writeThroughGuest(vm.domain, 0, { byte: 0x41, offset: 0, length: 65536 });
    const s1 = await createSnapshot(s, vm.uuid);
    await createSnapshot(s, vm.uuid);
    await removeSnapshot(s, { vmId: vm.uuid, snapshotId: s1.snapshotId });
    expect(await checkImage(s.sd, imageId, vm.domain)).toEqual({ orphans: [], disagreements: [] });

    // What a crash between "record" and "delete" leaves behind: an ILLEGAL volume nothing references,
    // and a data file whose metadata was never written.
    const chain = await s.sd.readChain(imageId);
    const stray = await s.sd.createVolume({ imageId, parentId: chain[chain.length - 1]!.volumeId });
    await s.sd.setLegality(imageId, stray.volumeId, 'ILLEGAL');
    const bare = path.join(s.sd.imageDir(imageId), randomUUID());
    await fs.writeFile(bare, Buffer.alloc(4096));
    expect((await checkImage(s.sd, imageId, vm.domain)).orphans).toHaveLength(3);

    const result = await s.client.workflow.execute<typeof ReconcileWorkflow>('reconcile', {
      taskQueue: ENGINE_TASK_QUEUE,
      workflowId: uniqueId('reconcile'),
      args: [{ storageDomainId: s.sd.id }],
    });
    expect(result.deleted.map((d) => d.volumeId).sort()).toEqual(
      [stray.volumeId, path.basename(bare)].sort(),
    );
    expect(result.reports.find((r) => r.imageId === imageId)?.ok).toBe(true);
    expect(await exists(stray.path)).toBe(false);
    expect(await exists(bare)).toBe(false);
    expect(await checkImage(s.sd, imageId, vm.domain)).toEqual({ orphans: [], disagreements: [] });
    for (const v of chain) expect(await exists(v.path)).toBe(true);

    // Nothing left to do: a second run deletes nothing.
    const again = await s.client.workflow.execute<typeof ReconcileWorkflow>('reconcile', {
      taskQueue: ENGINE_TASK_QUEUE,
      workflowId: uniqueId('reconcile'),
      args: [{ storageDomainId: s.sd.id }],
    });
    expect(again.deleted).toEqual([]);
  });
});
