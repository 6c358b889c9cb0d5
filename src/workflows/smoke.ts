import { proxyActivities } from '@temporalio/workflow';
import type { HostActivities } from '../activities/contracts';
import { hostTaskQueue } from '../common/task-queues';

/** Smoke check of the whole stack: engine worker → host agent → libvirtd. */
export async function listHostVms(input: {
  hostId: string;
}): Promise<Awaited<ReturnType<HostActivities['listVms']>>> {
  const { listVms } = proxyActivities<HostActivities>({
    taskQueue: hostTaskQueue(input.hostId),
    // A host agent that is not running must fail the smoke test quickly, not hang it.
    scheduleToStartTimeout: '10s',
    startToCloseTimeout: '30s',
    retry: { maximumAttempts: 2 },
  });
  return await listVms();
}
