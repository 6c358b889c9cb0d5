// The backups' persistent dirty bitmaps on the VM's disks (DESIGN "Backups", steps 1 and 6). A running
// VM's bitmaps change through libvirt (its QEMU has the images open); a shut-off VM's through qemu-img
// on the files, which nothing else opens then.
import { qcow2Chain } from '../../inspect/qcow2-chain';
import { addBitmaps, removeBitmap } from '../../libvirt/checkpoints';
import { addBitmap, listBitmaps } from '../../merge/cold/bitmaps';
import { runQemuImg } from '../../qemu/qemu-img';
import type { HostActivities } from '../contracts';
import { nonRetryable } from '../failures';
import type { HostActivityDeps } from './deps';
import { describe, isActive, withVm } from './vm';

/** The granularity of a backup bitmap: QEMU's default for a 64 KiB-cluster qcow2, what libvirt picks. */
const GRANULARITY = 64 * 1024;

/**
 * Bitmap `bitmap` starts recording on the leaf of each of `targets` (the other disks get none).
 * Idempotent: a leaf that already has it counts as done.
 */
export function makeAddBackupBitmap(deps: HostActivityDeps): HostActivities['addBackupBitmap'] {
  return async (input) =>
    withVm(await deps.libvirt(), input.vmId, async (dom) => {
      const vm = await describe(deps, dom);
      const unknown = input.targets.filter((t) => !vm.disks.some((d) => d.target === t));
      if (unknown.length > 0)
        throw nonRetryable('InvalidRequest', `VM ${input.vmId} has no disk ${unknown.join(', ')}`);
      if (input.targets.length === 0) return { status: 'already-added' as const };
      if (isActive(vm.state)) {
        const all = vm.disks.map((d) => d.target);
        return { status: await addBitmaps(dom, input.bitmap, all, input.targets) };
      }
      let added = false;
      for (const d of vm.disks.filter((x) => input.targets.includes(x.target))) {
        if ((await listBitmaps(d.path)).some((b) => b.name === input.bitmap)) continue;
        await addBitmap(d.path, input.bitmap, GRANULARITY);
        added = true;
      }
      return { status: added ? ('added' as const) : ('already-added' as const) };
    });
}

/**
 * Each of `bitmaps` removed from every image of every disk's chain. Idempotent: a chain without a
 * bitmap has nothing to remove.
 */
export function makeRemoveBackupBitmaps(deps: HostActivityDeps): HostActivities['removeBackupBitmaps'] {
  return async (input) =>
    withVm(await deps.libvirt(), input.vmId, async (dom) => {
      const vm = await describe(deps, dom);
      const removed: Array<{ target: string; bitmap: string }> = [];
      const all = vm.disks.map((d) => d.target);
      for (const d of vm.disks.filter((x) => x.volume !== null)) {
        const chain = await qcow2Chain(d.path);
        // A raw leaf holds no bitmap, and libvirt's removal would look for one in its chain.
        if (chain[0]?.format !== 'qcow2') continue;
        for (const bitmap of input.bitmaps) {
          if (isActive(vm.state)) {
            if ((await removeBitmap(dom, bitmap, d.target, all)) === 'removed')
              removed.push({ target: d.target, bitmap });
            continue;
          }
          const holders = chain.filter((e) => (e.bitmaps ?? []).some((x) => x.name === bitmap));
          for (const e of holders)
            await runQemuImg(['bitmap', '--remove', '-f', 'qcow2', e.filename, bitmap]);
          if (holders.length > 0) removed.push({ target: d.target, bitmap });
        }
      }
      return { removed };
    });
}
