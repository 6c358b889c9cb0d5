// Cold forward merge (VM shut off): the data of chain[baseIndex .. topIndex-1] is pulled into
// chain[topIndex]; those volumes leave the chain and top's new parent is base's old parent
// (none when base is the root).
//
//   1. bitmaps: for each valid bitmap B of top, walk top-1, top-2, ... down to base (stop at the
//      first volume without B) and qemu-img bitmap --merge B -b <dir/layer> -F qcow2 -f qcow2 <dir/top> B
//   2. qemu-img rebase -q -f qcow2 -b <parent file> -F <parent fmt> <dir/top>   (safe mode)
//      qemu-img rebase -q -f qcow2 -b '' <dir/top>                              (base was the root)
//
// Bitmaps: libvirt implements no bitmap handling for a pull (seeds/004, Krempa). Here top's bitmaps
// stay where they are (the pulled data lands in top, so top's bitmap must also cover the pulled
// volumes' periods): step 1 ORs the pulled volumes' bitmaps into top's, mirroring the commit rule
// with top as the target. A bitmap of a pulled volume that top does not have is dropped with it.
// The safe rebase also writes through top, so top's recording bitmaps additionally get the copied
// clusters marked: a superset, never a missed change.
//
// The rebase is last: top's header naming the new parent proves the whole pull is done.
import { applyBitmapPlan, type BitmapOutcome } from './bitmap-merge';
import { planBitmapMerge, type BitmapLayer } from './bitmap-plan';
import { listBitmaps } from './bitmaps';
import { chainForm, validateRequest, vol, volPath, type ChainVolume, type ColdMergeRequest } from './chain';
import { runQemuImg, type RunOptions } from '../../qemu/qemu-img';
import { alreadyDone, type ColdMergeResult, type ColdMergeState, type StepReport } from './result';

export type ColdPullRequest = ColdMergeRequest;

function newParent(req: ColdPullRequest): ChainVolume | null {
  return req.baseIndex > 0 ? vol(req, req.baseIndex - 1) : null;
}

function chainAfter(req: ColdPullRequest): ChainVolume[] {
  return [...req.chain.slice(0, req.baseIndex), ...req.chain.slice(req.topIndex)];
}

const parentName = (p: ChainVolume | null): string => (p ? p.file : 'no backing file');

/**
 * Reads every header of the chain (read-only):
 * - headers equal the requested chain -> 'pending';
 * - headers equal the chain without base..top-1 (top backs onto base's old parent, or has no
 *   backing when base was the root) -> 'done';
 * - anything else -> ChainMismatch (nothing is touched).
 */
export async function coldPullState(req: ColdPullRequest, opts: RunOptions = {}): Promise<ColdMergeState> {
  validateRequest(req);
  const top = vol(req, req.topIndex);
  if ((await chainForm(req, chainAfter(req), opts)) === 'after') {
    return { status: 'done', detail: `${top.file} already has ${parentName(newParent(req))}` };
  }
  return { status: 'pending', detail: `${top.file} still backs onto ${vol(req, req.topIndex - 1).file}` };
}

/** Step 1. Repeatable: merges are ORs into top's existing bitmaps; nothing is created. */
export async function mergePullBitmaps(
  req: ColdPullRequest,
  opts: RunOptions = {},
): Promise<{ report: StepReport; bitmaps: BitmapOutcome[] }> {
  validateRequest(req);
  await chainForm(req, null, opts); // only from the 'before' form
  const top = vol(req, req.topIndex);
  const topBitmaps = await listBitmaps(volPath(req, req.topIndex), 'qcow2', opts);
  if (topBitmaps.length === 0) {
    return {
      report: { step: 'merge-bitmaps', status: 'skipped', detail: `${top.file} has no bitmaps` },
      bitmaps: [],
    };
  }
  const walk: BitmapLayer[] = [];
  for (let i = req.topIndex - 1; i >= req.baseIndex; i--) {
    const v = vol(req, i);
    walk.push({ file: v.file, bitmaps: await listBitmaps(volPath(req, i), v.format, opts) });
  }
  const plan = planBitmapMerge({
    target: { file: top.file, format: 'qcow2', bitmaps: topBitmaps },
    wanted: topBitmaps,
    walk,
  });
  const bitmaps = await applyBitmapPlan(req.dir, top.file, plan, opts);
  const describe = (b: BitmapOutcome): string =>
    `${b.name}: ${b.status === 'merged' ? `from [${b.sources.join(', ')}]` : (b.reason ?? 'skipped')}`;
  return {
    report: {
      step: 'merge-bitmaps',
      status: bitmaps.some((b) => b.sources.length > 0) ? 'ran' : 'skipped',
      detail: bitmaps.map(describe).join('; '),
    },
    bitmaps,
  };
}

/**
 * Step 2. Safe mode: the clusters where the old and the new backing views differ are copied into
 * top first and the header changes last, so an interrupted rebase leaves top's guest view as it was
 * and simply runs again. Skipped when the headers already show the 'after' form.
 */
export async function rebaseTopSafe(req: ColdPullRequest, opts: RunOptions = {}): Promise<StepReport> {
  validateRequest(req);
  const top = vol(req, req.topIndex);
  const parent = newParent(req);
  if ((await chainForm(req, chainAfter(req), opts)) === 'after') {
    return { step: 'rebase-top', status: 'skipped', detail: `${top.file} already has ${parentName(parent)}` };
  }
  const backing = parent ? ['-b', parent.file, '-F', parent.format] : ['-b', ''];
  await runQemuImg(['rebase', '-q', '-f', 'qcow2', ...backing, volPath(req, req.topIndex)], opts);
  return { step: 'rebase-top', status: 'ran', detail: `${top.file} now has ${parentName(parent)}` };
}

export async function coldPull(req: ColdPullRequest, opts: RunOptions = {}): Promise<ColdMergeResult> {
  const state = await coldPullState(req, opts);
  const removed = req.chain.slice(req.baseIndex, req.topIndex);
  const newChain = chainAfter(req);
  if (state.status === 'done')
    return alreadyDone(state.detail, ['merge-bitmaps', 'rebase-top'], removed, newChain);
  // Step 1 — a re-run ORs the same sources into top's bitmaps again: no change.
  const b = await mergePullBitmaps(req, opts);
  // Step 2 — a re-run reads top's header: already naming the new parent => skipped (state 'done').
  const rebase = await rebaseTopSafe(req, opts);
  return { alreadyDone: false, steps: [b.report, rebase], bitmaps: b.bitmaps, removed, newChain };
}
