import type { NativeConnection } from '@temporalio/worker';
import { Worker } from '@temporalio/worker';
import { createHostActivities } from '../activities/host';
import { createBackupActivities, createStorageActivities } from '../activities/storage';
import { STORAGE_TASK_QUEUE, hostTaskQueue } from '../common/task-queues';
import type { DeploymentVersion } from '../config';
import type { LibvirtConnection } from '../libvirt';
import { breakpointFromEnv, holdInterceptorsFromEnv } from '../testing/holds';
import type { DomainXmls } from '../libvirt';
import { livenessInterceptors } from './liveness-interceptor';
import { deploymentOptions } from './versioning';
import { logContextInterceptors } from './log-context';

export interface HostAgentOptions {
  connection: NativeConnection;
  namespace: string;
  hostId: string;
  storageRoot: string;
  libvirt: () => Promise<LibvirtConnection>;
  /** Every configured host's domains (fleetDomainXmls): what the cross-host checks read. */
  domainXmls: () => Promise<DomainXmls[]>;
  /** Also take the storage role (`livemerge-storage`). */
  storage: boolean;
  jobPollMs?: number;
  /** The engine's deployment version, so pinned merges' activities come to this build (versioning.ts). */
  deployment?: DeploymentVersion | undefined;
}

/** A host agent: libvirt work on `livemerge-host-<id>`, and with the storage role, `livemerge-storage`. */
export async function createHostWorkers(opts: HostAgentOptions): Promise<Worker[]> {
  const breakpoint = breakpointFromEnv();
  const workers = [
    await Worker.create({
      connection: opts.connection,
      namespace: opts.namespace,
      taskQueue: hostTaskQueue(opts.hostId),
      activities: createHostActivities({ ...opts, ...(breakpoint ? { breakpoint } : {}) }),
      interceptors: {
        activity: [livenessInterceptors, logContextInterceptors, ...holdInterceptorsFromEnv()],
      },
      ...deploymentOptions(opts.deployment),
    }),
  ];
  if (opts.storage)
    workers.push(
      await Worker.create({
        connection: opts.connection,
        namespace: opts.namespace,
        taskQueue: STORAGE_TASK_QUEUE,
        activities: storageRoleActivities({
          storageRoot: opts.storageRoot,
          domainXmls: opts.domainXmls,
          ...(breakpoint ? { breakpoint } : {}),
        }),
        interceptors: {
          activity: [livenessInterceptors, logContextInterceptors, ...holdInterceptorsFromEnv()],
        },
        ...deploymentOptions(opts.deployment),
      }),
    );
  return workers;
}

/** The storage role: the storage domains' metadata, cold merges and deletion, and the backup repository. */
function storageRoleActivities(deps: Parameters<typeof createStorageActivities>[0]): object {
  return { ...createStorageActivities(deps), ...createBackupActivities(deps) };
}
