// Activity proxies, one set per queue. Retries are unbounded where a crash of the agent, libvirtd or the
// server must end in a resumed merge; the non-retryable failure types end the workflow instead.
import { ActivityCancellationType, proxyActivities, proxyLocalActivities } from '@temporalio/workflow';
import type {
  BackupActivities,
  EngineActivities,
  HostActivities,
  StorageActivities,
} from '../activities/contracts';
import { ENGINE_TASK_QUEUE, STORAGE_TASK_QUEUE, hostTaskQueue } from '../common/task-queues';
import { FailureType } from '../schemas/progress';

/** Every livemerge failure type names a cause that retrying cannot fix. */
const NON_RETRYABLE: string[] = FailureType.options.filter((t) => t !== 'Cancelled');
/**
 * Every activity is heartbeated by its worker while it runs (src/workers/liveness-interceptor.ts): an
 * agent that dies mid-activity is noticed within this timeout and the activity retried on a live agent,
 * not after its whole startToCloseTimeout.
 */
const LIVENESS = '10s';
const RETRY = {
  initialInterval: '500ms',
  backoffCoefficient: 2,
  maximumInterval: '10s',
  nonRetryableErrorTypes: NON_RETRYABLE,
} as const;

export function hostActivities(hostId: string) {
  const taskQueue = hostTaskQueue(hostId);
  return {
    short: proxyActivities<HostActivities>({
      taskQueue,
      startToCloseTimeout: '2m',
      heartbeatTimeout: LIVENESS,
      retry: RETRY,
    }),
    /** Waiting for a block job: one long activity; a missed heartbeat (agent crash) retries within seconds. */
    wait: proxyActivities<HostActivities>({
      taskQueue,
      startToCloseTimeout: '7d',
      heartbeatTimeout: '5s',
      retry: RETRY,
    }),
    /**
     * Host calls that may still be running in QEMU when a cancellation comes (the live merge unit, the
     * snapshot call): the workflow waits for the host to finish or refuse before it compensates, so no
     * compensation races a running operation.
     */
    settled: proxyActivities<HostActivities>({
      taskQueue,
      startToCloseTimeout: '7d',
      heartbeatTimeout: '5s',
      retry: RETRY,
      cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
    }),
  };
}

/** For finding a VM: an agent that does not pick the task up within seconds is taken as absent. */
export function probeHost(hostId: string) {
  return proxyActivities<HostActivities>({
    taskQueue: hostTaskQueue(hostId),
    scheduleToStartTimeout: '5s',
    startToCloseTimeout: '30s',
    retry: { maximumAttempts: 1 },
  });
}

export const storage = proxyActivities<StorageActivities>({
  taskQueue: STORAGE_TASK_QUEUE,
  startToCloseTimeout: '10m',
  heartbeatTimeout: LIVENESS,
  retry: RETRY,
});

export const storageLong = proxyActivities<StorageActivities>({
  taskQueue: STORAGE_TASK_QUEUE,
  startToCloseTimeout: '7d',
  heartbeatTimeout: '10s',
  retry: RETRY,
});

/** Storage work a cancellation must wait for (a cold copy stops qemu-img; a volume being created). */
export const storageSettled = proxyActivities<StorageActivities>({
  taskQueue: STORAGE_TASK_QUEUE,
  startToCloseTimeout: '7d',
  heartbeatTimeout: '10s',
  retry: RETRY,
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
});

export const engine = proxyActivities<EngineActivities>({
  taskQueue: ENGINE_TASK_QUEUE,
  startToCloseTimeout: '30s',
  heartbeatTimeout: LIVENESS,
  retry: RETRY,
});

/**
 * The same engine steps as local activities: they run in the engine worker that runs the workflow, so
 * each is one marker event instead of an activity task's three events and a workflow task's three.
 */
export const engineLocal = proxyLocalActivities<EngineActivities>({
  startToCloseTimeout: '30s',
  retry: RETRY,
});

/** The backup repository's work, on the storage role (it reads the storage domain and writes the repository). */
export const backups = proxyActivities<BackupActivities>({
  taskQueue: STORAGE_TASK_QUEUE,
  startToCloseTimeout: '10m',
  heartbeatTimeout: LIVENESS,
  retry: RETRY,
});

/** A copy runs as long as its data takes; a cancellation waits for it to stop (its daemon killed, .part removed). */
export const backupCopies = proxyActivities<BackupActivities>({
  taskQueue: STORAGE_TASK_QUEUE,
  startToCloseTimeout: '7d',
  heartbeatTimeout: '10s',
  retry: RETRY,
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
});
