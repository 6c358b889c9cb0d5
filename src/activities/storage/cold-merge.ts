import { CancelledFailure, Context } from '@temporalio/activity';
import { ColdMergeError, coldCommit, coldPull } from '../../merge/cold';
import { QemuImgError } from '../../qemu/qemu-img';
import type { StorageActivities } from '../contracts';
import { nonRetryable } from '../failures';
import type { StorageActivityDeps } from './deps';
import { openDomain } from './deps';

/**
 * A shut-off VM's merge with qemu-img (commit -b then rebase -u of top's child, bitmaps merged by hand;
 * or a safe rebase for forward). Idempotent: each step reads the qcow2 headers first and skips what
 * they show done; committing again rewrites identical data. qemu-img's image locks keep the VM from
 * starting meanwhile, and a VM that started first makes it fail with ImageInUse, nothing changed.
 * Cancellable: qemu-img is stopped (and its exit awaited); a partial commit only wrote into base what
 * the layers above override, a partial safe rebase only what top already showed, so the chain reads
 * as before.
 */
export function makeColdMerge(deps: StorageActivityDeps): StorageActivities['coldMerge'] {
  return async ({
    storageDomainId,
    imageId,
    direction,
    plan,
    baseVolumeId,
    topVolumeId,
    bandwidthBytesPerSec,
  }) => {
    const ctx = Context.current();
    const sd = await openDomain(deps, storageDomainId);
    const ids = plan.chain.map((v) => v.volumeId);
    const req = {
      dir: sd.imageDir(imageId),
      chain: plan.chain.map((v) => ({ file: v.volumeId, format: v.format })),
      baseIndex: ids.indexOf(baseVolumeId),
      topIndex: ids.indexOf(topVolumeId),
      ...(bandwidthBytesPerSec ? { rateLimitBytesPerSec: bandwidthBytesPerSec } : {}),
    };
    const beat = setInterval(() => ctx.heartbeat(), 1000);
    try {
      if (direction === 'backward') await coldCommit(req, { signal: ctx.cancellationSignal });
      else await coldPull(req, { signal: ctx.cancellationSignal });
    } catch (err) {
      // execFile has killed qemu-img and seen it exit before it rejects.
      if (ctx.cancellationSignal.aborted)
        throw new CancelledFailure(`cold merge of image ${imageId} stopped: qemu-img killed`);
      if (err instanceof QemuImgError && /lock/i.test(err.stderr))
        throw nonRetryable(
          'ImageInUse',
          `image ${imageId} is in use (did the VM start?): ${err.stderr.trim()}`,
        );
      if (err instanceof ColdMergeError) throw nonRetryable('ChainMismatch', err.message, { code: err.code });
      throw err;
    } finally {
      clearInterval(beat);
    }
  };
}
