import { workflowInfo } from '@temporalio/workflow';
import type { AuditEvent, LocateVmResult } from '../activities/contracts';
import { engine, probeHost } from './activities';
import { fail } from './failures';
import type { ProgressTracker } from './progress';

/**
 * The VM's host: the one given, or the configured host whose agent knows the VM. A host whose agent does
 * not answer within seconds counts as not having it; the first host that runs the VM wins at once.
 */
export async function locateHost(vmId: string, hostId?: string): Promise<LocateVmResult> {
  const hosts = hostId ? [hostId] : await engine.configuredHosts();
  const answers: LocateVmResult[] = [];
  await new Promise<void>((resolve) => {
    for (const h of hosts)
      probeHost(h)
        .locateVm({ vmId })
        .catch((): LocateVmResult => ({ found: false, hostId: h, vmId }))
        .then((a) => {
          answers.push(a);
          if ((a.found && (a.state === 'running' || a.state === 'paused')) || answers.length === hosts.length)
            resolve();
        })
        .catch(() => undefined);
    if (hosts.length === 0) resolve();
  });
  const found = answers.filter((a) => a.found);
  if (found.length === 0)
    fail('VmNotFound', `VM ${vmId} is not defined on any of the hosts ${hosts.join(', ')}`);
  return found.find((a) => a.state === 'running' || a.state === 'paused') ?? found[0]!;
}

/** One audit event per outcome of this run (the event id makes a retried write a no-op). */
export async function audit(
  outcome: AuditEvent['outcome'],
  vmId: string,
  hostId: string | null,
  detail: Record<string, unknown>,
): Promise<void> {
  const info = workflowInfo();
  await engine.audit({
    eventId: `${info.workflowId}/${info.runId}/${outcome}`,
    outcome,
    workflowType: info.workflowType,
    workflowId: info.workflowId,
    runId: info.runId,
    vmId,
    hostId,
    detail,
  });
}

/** Runs input validation; a rejected input ends the stage as `failed` before any side effect. */
export function validated<T>(tracker: ProgressTracker, parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    tracker.stage('failed');
    throw err;
  }
}
