import { patched, sleep, workflowInfo } from '@temporalio/workflow';
import type { AuditEvent, LocateVmResult } from '../activities/contracts';
import { engine, probeHost } from './activities';
import { fail } from './failures';
import type { ProgressTracker } from './progress';

/** Workflows started before finding a VM waited for silent hosts took a silent host for "not there". */
const LOCATE_WAITS_PATCH = 'livemerge-locate-waits-for-silent-hosts';
const LOCATE_RETRY_MAX_MS = 10_000;

const isRunning = (a: LocateVmResult): boolean => a.found && (a.state === 'running' || a.state === 'paused');

/**
 * The VM's host: the one given, or the configured host whose agent knows the VM. The first host that
 * runs the VM wins at once. A host that does not answer (agent down, libvirtd down) is not "absent": the
 * silent hosts are asked again until they answer, so a stale shut-off definition on one host is never
 * taken while the VM may run on a silent one; "not found" only when every host answered no. After the
 * engine's locate timeout (LIVEMERGE_LOCATE_TIMEOUT) it fails HostUnreachable.
 */
export async function locateHost(vmId: string, hostId?: string): Promise<LocateVmResult> {
  const hosts = hostId ? [hostId] : await engine.configuredHosts();
  const answers: LocateVmResult[] = [];
  let pending = hosts;
  let timeoutMs: number | undefined;
  const since = Date.now();
  for (let delay = 1000; ; delay = Math.min(2 * delay, LOCATE_RETRY_MAX_MS)) {
    const round = await probeHosts(vmId, pending);
    answers.push(...round.answers);
    const running = answers.find(isRunning);
    if (running) return running;
    if (round.silent.length === 0 || !patched(LOCATE_WAITS_PATCH)) break;
    timeoutMs ??= (await engine.locatePolicy()).timeoutSeconds * 1000;
    if (Date.now() - since >= timeoutMs)
      fail(
        'HostUnreachable',
        `VM ${vmId}: host(s) ${round.silent.join(', ')} did not answer within ${timeoutMs / 1000} s ` +
          `(the others: ${answers.map((a) => `${a.hostId} ${a.found ? a.state : 'does not have it'}`).join(', ') || 'none'})`,
        { silent: round.silent, answers },
      );
    await sleep(delay);
    pending = round.silent;
  }
  const found = answers.filter((a) => a.found);
  if (found.length === 0)
    fail('VmNotFound', `VM ${vmId} is not defined on any of the hosts ${hosts.join(', ')}`);
  return found[0]!;
}

/** Asks each host once, in parallel; returns early when one runs the VM. */
async function probeHosts(
  vmId: string,
  hosts: string[],
): Promise<{ answers: LocateVmResult[]; silent: string[] }> {
  const answers: LocateVmResult[] = [];
  const silent: string[] = [];
  await new Promise<void>((resolve) => {
    const settle = () => {
      if (answers.some(isRunning) || answers.length + silent.length === hosts.length) resolve();
    };
    for (const h of hosts)
      probeHost(h)
        .locateVm({ vmId })
        .then(
          (a) => answers.push(a),
          () => silent.push(h),
        )
        .then(settle)
        .catch(() => undefined);
    if (hosts.length === 0) resolve();
  });
  return { answers, silent };
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
