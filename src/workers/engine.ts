import type { NativeConnection, WorkerOptions } from '@temporalio/worker';
import { Worker } from '@temporalio/worker';
import { ENGINE_TASK_QUEUE } from '../common/task-queues';
import type { DeploymentVersion } from '../config';
import { holdInterceptorsFromEnv } from '../testing/holds';
import { livenessInterceptors } from './liveness-interceptor';
import { deploymentOptions } from './versioning';
import { logContextInterceptors } from './log-context';

/**
 * Evaluated once in the reused V8 context and shared (frozen) by every workflow, instead of once per
 * workflow: zod holds no per-workflow state, and building it again for each workflow was about a tenth of
 * the workflow thread's CPU (issue 13). Tests bundle with it too.
 */
export const PRELOADED_WORKFLOW_MODULES = ['zod'];

export interface EngineWorkerOptions {
  connection: NativeConnection;
  namespace: string;
  /** A pre-built bundle (tests build it once per file); default: bundle src/workflows at start. */
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
    ...(opts.workflowBundle
      ? { workflowBundle: opts.workflowBundle }
      : {
          workflowsPath: require.resolve('../workflows'),
          bundlerOptions: { preloadModules: PRELOADED_WORKFLOW_MODULES },
        }),
    activities: opts.activities ?? {},
    interceptors: {
      activity: [livenessInterceptors, logContextInterceptors, ...holdInterceptorsFromEnv()],
      // A pre-built bundle carries its own (test/helpers/temporal.ts bundles the same module).
      ...(opts.workflowBundle ? {} : { workflowModules: [require.resolve('../workflows/log-context')] }),
    },
    ...deploymentOptions(opts.deployment),
  });
}
