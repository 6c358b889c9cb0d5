import type { NativeConnection, WorkerOptions } from '@temporalio/worker';
import { Worker } from '@temporalio/worker';
import { ENGINE_TASK_QUEUE } from '../common/task-queues';
import type { DeploymentVersion } from '../config';
import { holdInterceptorsFromEnv } from '../testing/holds';
import { livenessInterceptors } from './liveness-interceptor';
import { deploymentOptions } from './versioning';
import { logContextInterceptors } from './log-context';
import { engineWorkflowBundle } from './workflow-bundle';

export interface EngineWorkerOptions {
  connection: NativeConnection;
  namespace: string;
  /** A bundle made by the caller (tests build it once per file); default: engineWorkflowBundle(). */
  workflowBundle?: WorkerOptions['workflowBundle'];
  activities?: object;
  /** This build's deployment version (every workflow PINNED, versioning.ts); undefined: unversioned. */
  deployment?: DeploymentVersion | undefined;
}

/** The engine: runs every workflow, and the engine-side activities, on `livemerge-engine`. */
export async function createEngineWorker(opts: EngineWorkerOptions): Promise<Worker> {
  return await Worker.create({
    connection: opts.connection,
    namespace: opts.namespace,
    taskQueue: ENGINE_TASK_QUEUE,
    workflowBundle: opts.workflowBundle ?? (await engineWorkflowBundle()),
    activities: opts.activities ?? {},
    // The workflow interceptors are in the bundle (workflow-bundle.ts).
    interceptors: { activity: [livenessInterceptors, logContextInterceptors, ...holdInterceptorsFromEnv()] },
    ...deploymentOptions(opts.deployment),
  });
}
