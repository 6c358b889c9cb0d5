import { SnapshotCreateFlags } from '../../libvirt/constants';
import type { HostActivities } from '../contracts';
import { noBreakpoint } from '../breakpoints';
import { nonRetryable } from '../failures';
import type { HostActivityDeps } from './deps';
import { escapeXml } from '../../common/xml';
import { setDiskSource } from './disk-xml';
import { describe, isActive, withVm } from './vm';

const FLAGS =
  SnapshotCreateFlags.DISK_ONLY |
  SnapshotCreateFlags.NO_METADATA |
  SnapshotCreateFlags.ATOMIC |
  SnapshotCreateFlags.REUSE_EXT;

/**
 * One external disk-only snapshot of every listed disk at once (ATOMIC), onto leaves the storage role
 * created (REUSE_EXT). Idempotent: disks whose source already is the new leaf were snapshotted.
 */
export function makeSnapshotDisks(deps: HostActivityDeps): HostActivities['snapshotDisks'] {
  const breakpoint = deps.breakpoint ?? noBreakpoint;
  return async (input) =>
    withVm(await deps.libvirt(), input.vmId, async (dom) => {
      const vm = await describe(deps, dom);
      if (!isActive(vm.state)) throw nonRetryable('VmNotRunning', `VM ${input.vmId} is ${vm.state}`);
      const done = input.disks.filter((d) =>
        vm.disks.some((v) => v.target === d.target && v.path === d.newLeafPath),
      );
      if (done.length === input.disks.length) return { status: 'already-taken' as const };
      if (done.length > 0) throw new Error(`only ${done.map((d) => d.target).join(', ')} already switched`);
      const disks = vm.disks.map((v) => {
        const d = input.disks.find((x) => x.target === v.target);
        return d
          ? `<disk name='${escapeXml(d.target)}' snapshot='external' type='file'>` +
              `<driver type='${escapeXml(d.newLeafFormat)}'/><source file='${escapeXml(d.newLeafPath)}'/></disk>`
          : `<disk name='${escapeXml(v.target)}' snapshot='no'/>`;
      });
      await dom.snapshotCreateXml(`<domainsnapshot><disks>${disks.join('')}</disks></domainsnapshot>`, FLAGS);
      await breakpoint('snapshotDisks-taken', { cancellable: false });
      return { status: 'taken' as const };
    });
}

/**
 * The read-modify-write of each VM's persistent definition in this agent, one at a time: the cold merges
 * of two disks of a VM run in parallel, and a definition written from XML read before the other disk's
 * change was written would undo that change (a lost update: its merge then fails verification).
 */
const definitionWrites = new Map<string, Promise<unknown>>();
function oneAtATime<T>(vmId: string, fn: () => Promise<T>): Promise<T> {
  const run = (definitionWrites.get(vmId) ?? Promise.resolve()).then(fn, fn);
  const tail = run.catch(() => undefined);
  definitionWrites.set(vmId, tail);
  void tail.then(() => {
    if (definitionWrites.get(vmId) === tail) definitionWrites.delete(vmId);
  });
  return run;
}

/** A shut-off VM's persistent definition pointed at new disk sources. Idempotent: unchanged XML is not redefined. */
export function makeSetDiskSources(deps: HostActivityDeps): HostActivities['setDiskSources'] {
  return (input) => oneAtATime(input.vmId, () => setDiskSources(deps, input));
}

async function setDiskSources(
  deps: HostActivityDeps,
  input: Parameters<HostActivities['setDiskSources']>[0],
): ReturnType<HostActivities['setDiskSources']> {
  const conn = await deps.libvirt();
  return withVm(conn, input.vmId, async (dom) => {
    if (isActive(await describe(deps, dom).then((v) => v.state)))
      throw nonRetryable('VmNotRunning', `VM ${input.vmId} runs: its disks change only through libvirt jobs`);
    let xml = await dom.xml({ inactive: true, secure: true });
    let changed = false;
    for (const d of input.disks) {
      const next = setDiskSource(xml, d.target, d.path, d.format);
      if (next !== null) {
        xml = next;
        changed = true;
      }
    }
    if (changed) (await conn.defineXml(xml)).free();
    return { changed };
  });
}
