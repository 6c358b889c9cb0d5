import { patched, sleep, workflowInfo } from '@temporalio/workflow';
import type { AuditEvent, DescribeVmResult, LocateVmInput, LocateVmResult } from '../activities/contracts';
import { engine, engineLocal, hostActivities, probeHost } from './activities';
import { fail } from './failures';
import { lean } from './lean';
import type { ProgressTracker } from './progress';

/** Workflows started before finding a VM waited for silent hosts took a silent host for "not there". */
const LOCATE_WAITS_PATCH = 'livemerge-locate-waits-for-silent-hosts';
const LOCATE_RETRY_MAX_MS = 10_000;

/** The engine's own steps (configuration, audit): local activities in lean histories. */
export const engineSteps = (): typeof engine => (lean() ? engineLocal : engine);

const isRunning = (a: LocateVmResult): boolean => a.found && (a.state === 'running' || a.state === 'paused');

/**
 * The VM's host: the one given, or the configured host whose agent knows the VM. The first host that
 * runs the VM wins at once. A host that does not answer (agent down, libvirtd down) is not "absent": the
 * silent hosts are asked again until they answer, so a stale shut-off definition on one host is never
 * taken while the VM may run on a silent one; "not found" only when every host answered no. After the
 * engine's locate timeout (LIVEMERGE_LOCATE_TIMEOUT) it fails HostUnreachable.
 */
export async function locateHost(
  vmId: string,
  hostId?: string,
  also: Omit<LocateVmInput, 'vmId'> = {},
): Promise<LocateVmResult> {
  const hosts = hostId ? [hostId] : await engineSteps().configuredHosts();
  const answers = await askHosts(
    hosts,
    (h) => probeHost(h).locateVm({ vmId, ...also }),
    (as) => as.some(isRunning),
    {
      what: `VM ${vmId}`,
      describe: (a) => `${a.hostId} ${a.found ? a.state : 'does not have it'}`,
    },
  );
  const running = answers.find(isRunning);
  if (running) return running;
  const found = answers.filter((a) => a.found);
  if (found.length === 0)
    fail('VmNotFound', `VM ${vmId} is not defined on any of the hosts ${hosts.join(', ')}`);
  return found[0]!;
}

/**
 * Asks every host, in parallel, until `enough` of the answers are in or every host answered. A host that
 * does not answer (agent down, libvirtd down) is not "absent": the silent ones are asked again (1 s doubling
 * to 10 s) until they answer; after the engine's locate timeout it fails HostUnreachable.
 */
export async function askHosts<A>(
  hosts: string[],
  ask: (hostId: string) => Promise<A>,
  enough: (answers: A[]) => boolean,
  report: { what: string; describe: (a: A) => string },
): Promise<A[]> {
  const answers: A[] = [];
  let pending = hosts;
  let timeoutMs: number | undefined;
  const since = Date.now();
  for (let delay = 1000; ; delay = Math.min(2 * delay, LOCATE_RETRY_MAX_MS)) {
    const round = await askOnce(pending, ask, (more) => enough([...answers, ...more]));
    answers.push(...round.answers);
    if (enough(answers)) return answers;
    if (round.silent.length === 0 || !patched(LOCATE_WAITS_PATCH)) return answers;
    timeoutMs ??= (await engineSteps().locatePolicy()).timeoutSeconds * 1000;
    if (Date.now() - since >= timeoutMs)
      fail(
        'HostUnreachable',
        `${report.what}: host(s) ${round.silent.join(', ')} did not answer within ${timeoutMs / 1000} s ` +
          `(the others: ${answers.map(report.describe).join(', ') || 'none'})`,
        { silent: round.silent, answers },
      );
    await sleep(delay);
    pending = round.silent;
  }
}

/** Asks each host once, in parallel; returns early when the answers so far are enough. */
async function askOnce<A>(
  hosts: string[],
  ask: (hostId: string) => Promise<A>,
  enough: (answers: A[]) => boolean,
): Promise<{ answers: A[]; silent: string[] }> {
  const answers: A[] = [];
  const silent: string[] = [];
  await new Promise<void>((resolve) => {
    const settle = () => {
      if (enough(answers) || answers.length + silent.length === hosts.length) resolve();
    };
    for (const h of hosts)
      ask(h)
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
  await engineSteps().audit({
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

/**
 * The VM's host and its disks: in lean histories the host that has it describes it in the same probe
 * (with `chains`, each disk's metadata chain too).
 */
export async function locateAndDescribe(
  vmId: string,
  hostId?: string,
  onLocated?: (located: LocateVmResult) => void,
  chains = false,
): Promise<{ located: LocateVmResult; vm: DescribeVmResult }> {
  const located = await locateHost(
    vmId,
    hostId,
    lean() ? { describe: true, ...(chains ? { chains } : {}) } : {},
  );
  onLocated?.(located);
  const vm = located.description ?? (await hostActivities(located.hostId).short.describeVm({ vmId }));
  return { located, vm };
}

/**
 * The VM's host, its run state and its disks, every one in a storage domain (else InvalidRequest, before any
 * change): what an operation on all of a VM's disks (a snapshot, a backup) starts from.
 */
export async function inspectWholeVm(
  tracker: ProgressTracker,
  vmId: string,
  hostId: string | undefined,
): Promise<{ hostId: string; mode: 'live' | 'cold'; vm: DescribeVmResult }> {
  tracker.stage('inspecting');
  const { located, vm } = await locateAndDescribe(vmId, hostId);
  const mode = vm.state === 'running' || vm.state === 'paused' ? 'live' : 'cold';
  tracker.host(located.hostId, mode);
  const foreign = vm.disks.filter((d) => !d.volume);
  if (foreign.length > 0 || vm.disks.length === 0)
    fail(
      'InvalidRequest',
      `VM ${vmId} has disks outside any storage domain: ${foreign.map((d) => d.path).join(', ')}`,
    );
  return { hostId: located.hostId, mode, vm };
}
