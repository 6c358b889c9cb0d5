// The Worker Deployment calls behind `livemerge deployment …` (imported only by those commands' actions).
import type { Client } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import type { Config } from '../config';
import { OperationFailed } from './output';
import { withTemporal } from './workflows';

const { RoutingConfigUpdateState, VersionDrainageStatus, WorkerDeploymentVersionStatus } =
  temporal.api.enums.v1;

export interface DeploymentVersionView {
  buildId: string;
  status: string;
  /** DRAINING while pinned workflows are open on it, DRAINED once none is; null when not known. */
  drainage: string | null;
}

export interface DeploymentView {
  deploymentName: string;
  current: string | null;
  ramping: string | null;
  rampingPercentage: number | null;
  routingUpdate: string;
  versions: DeploymentVersionView[];
}

function enumName(e: Record<string, unknown>, value: number | null | undefined, prefix: string): string {
  const name = Object.keys(e).find((k) => e[k] === (value ?? 0));
  return name ? name.replace(prefix, '') : String(value);
}

async function describeWith(client: Client, deploymentName: string): Promise<DeploymentView> {
  let res;
  try {
    res = await client.workflowService.describeWorkerDeployment({
      namespace: client.options.namespace,
      deploymentName,
    });
  } catch (err) {
    throw new OperationFailed(
      `deployment ${deploymentName}: ${err instanceof Error ? err.message : String(err)}`,
      { cause: err },
    );
  }
  const info = res.workerDeploymentInfo;
  const rc = info?.routingConfig;
  return {
    deploymentName,
    current: rc?.currentDeploymentVersion?.buildId || null,
    ramping: rc?.rampingDeploymentVersion?.buildId || null,
    rampingPercentage: rc?.rampingDeploymentVersion ? (rc.rampingVersionPercentage ?? 0) : null,
    routingUpdate: enumName(
      RoutingConfigUpdateState,
      info?.routingConfigUpdateState,
      'ROUTING_CONFIG_UPDATE_STATE_',
    ),
    versions: (info?.versionSummaries ?? []).map((v) => ({
      buildId: v.deploymentVersion?.buildId ?? '',
      status: enumName(WorkerDeploymentVersionStatus, v.status, 'WORKER_DEPLOYMENT_VERSION_STATUS_'),
      drainage: v.drainageInfo?.status
        ? enumName(VersionDrainageStatus, v.drainageInfo.status, 'VERSION_DRAINAGE_STATUS_')
        : v.drainageStatus
          ? enumName(VersionDrainageStatus, v.drainageStatus, 'VERSION_DRAINAGE_STATUS_')
          : null,
    })),
  };
}

export async function describeDeployment(config: Config, deploymentName: string): Promise<DeploymentView> {
  return await withTemporal(config, (client) => describeWith(client, deploymentName));
}

export function formatDeployment(d: DeploymentView): string {
  const lines = [
    `deployment ${d.deploymentName}: current ${d.current ?? '(none: unversioned workers)'}` +
      (d.ramping ? `, ramping ${d.ramping} at ${d.rampingPercentage}%` : '') +
      (d.routingUpdate === 'IN_PROGRESS' ? ' (routing change propagating)' : ''),
    ...d.versions.map((v) => `  ${v.buildId}: ${v.status}${v.drainage ? `, ${v.drainage}` : ''}`),
  ];
  return lines.join('\n') + '\n';
}

export interface SetCurrentOutput {
  deploymentName: string;
  current: string | null;
  previous: string | null;
}

/** How long set-current waits for the routing change to reach every task queue of the deployment. */
const PROPAGATION_TIMEOUT_MS = 60_000;

export async function setCurrentVersion(
  config: Config,
  req: { deploymentName: string; buildId: string; ignoreMissingTaskQueues: boolean; allowNoPollers: boolean },
): Promise<SetCurrentOutput> {
  return await withTemporal(config, async (client) => {
    let res;
    try {
      res = await client.workflowService.setWorkerDeploymentCurrentVersion({
        namespace: client.options.namespace,
        deploymentName: req.deploymentName,
        buildId: req.buildId,
        ignoreMissingTaskQueues: req.ignoreMissingTaskQueues,
        allowNoPollers: req.allowNoPollers,
        identity: `livemerge-cli@${process.pid}`,
      });
    } catch (err) {
      // e.g. NotFound: no worker of that build has polled yet; FailedPrecondition: missing task queues.
      throw new OperationFailed(
        `deployment ${req.deploymentName}: build ${req.buildId || '(unversioned)'} cannot be made current: ` +
          (err instanceof Error ? err.message : String(err)),
        { cause: err },
      );
    }
    // The change reaches the task queues asynchronously: return once new merges do start on the build.
    const deadline = Date.now() + PROPAGATION_TIMEOUT_MS;
    let view = await describeWith(client, req.deploymentName);
    while (view.routingUpdate === 'IN_PROGRESS' && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
      view = await describeWith(client, req.deploymentName);
    }
    if (view.routingUpdate === 'IN_PROGRESS')
      throw new OperationFailed(
        `deployment ${req.deploymentName}: build ${req.buildId || '(unversioned)'} is current, but the routing change ` +
          `has not reached every task queue after ${PROPAGATION_TIMEOUT_MS / 1000} s`,
      );
    return {
      deploymentName: req.deploymentName,
      current: view.current,
      previous: res.previousDeploymentVersion?.buildId || null,
    };
  });
}
