import { Connection } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import type { TemporalConnectionOptions } from '../config';

/** True when the Temporal frontend answers and the namespace exists. */
export async function temporalHealthy(
  endpoint: TemporalConnectionOptions,
  namespace: string,
): Promise<boolean> {
  let connection: Connection | undefined;
  try {
    connection = await Connection.connect({ ...endpoint, connectTimeout: 1000 });
    await connection.workflowService.describeNamespace({ namespace });
    return true;
  } catch {
    return false;
  } finally {
    await connection?.close();
  }
}

/** The identities (`<pid>@<host>`) of the pollers seen on a task queue (a running worker polls continuously). */
export async function pollerIdentities(
  connection: Connection,
  namespace: string,
  taskQueue: string,
  kind: 'workflow' | 'activity',
): Promise<string[]> {
  const res = await connection.workflowService.describeTaskQueue({
    namespace,
    taskQueue: { name: taskQueue, kind: temporal.api.enums.v1.TaskQueueKind.TASK_QUEUE_KIND_NORMAL },
    taskQueueType:
      kind === 'workflow'
        ? temporal.api.enums.v1.TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW
        : temporal.api.enums.v1.TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
  });
  return (res.pollers ?? []).map((p) => p.identity ?? '');
}

/** Number of pollers seen on a task queue. */
export async function pollerCount(
  connection: Connection,
  namespace: string,
  taskQueue: string,
  kind: 'workflow' | 'activity',
): Promise<number> {
  return (await pollerIdentities(connection, namespace, taskQueue, kind)).length;
}

export async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
