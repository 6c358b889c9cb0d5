import { describe, expect, it } from 'vitest';
import { ENGINE_TASK_QUEUE } from '../../src/common/task-queues';
import { listHostVms } from '../../src/workflows/smoke';
import { createStackVm, useStack } from '../helpers/stack';
import { uniqueId } from '../helpers/temporal';

describe('smoke: engine worker → host agent → libvirtd', () => {
  it("a real workflow lists the host's VMs through a real host agent and finds the fixture VM", async () => {
    const s = await useStack();
    const { vm } = await createStackVm(s, { disks: 1, start: true });
    const result = await s.client.workflow.execute(listHostVms, {
      taskQueue: ENGINE_TASK_QUEUE,
      workflowId: uniqueId('smoke'),
      args: [{ hostId: s.hostId }],
    });
    expect(result.hostId).toBe(s.hostId);
    expect(result.vms).toContainEqual({ name: vm.name, uuid: vm.uuid, state: 'running' });
  });

  it('fails fast, not hangs, when the host has no agent', async () => {
    const s = await useStack();
    const err = await s.client.workflow
      .execute(listHostVms, {
        taskQueue: ENGINE_TASK_QUEUE,
        workflowId: uniqueId('smoke-absent'),
        args: [{ hostId: 'no-such-host' }],
      })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect(String((err as Error & { cause?: Error }).cause?.cause)).toMatch(/ScheduleToStart|timed out/i);
  });
});
