// Cold backward merge (VM shut off): the data of chain[baseIndex+1 .. topIndex] is committed into
// chain[baseIndex]; those volumes leave the chain. Base keeps its format (a raw base stays raw).
//
//   1. qemu-img commit -q -f qcow2 -b <dir/base> -d <dir/top>
//   2. bitmaps (seeds/004), qcow2 base only: for each valid bitmap B of top:
//        qemu-img bitmap --add -g <G> --enable -f qcow2 <dir/base> B       (if base lacks B)
//        qemu-img bitmap --enable -f qcow2 <dir/base> B                    (if base's B is disabled)
//        for L = top, top-1, ... > base, stopping at the first L without B:
//          qemu-img bitmap --merge B -b <dir/L> -F qcow2 -f qcow2 <dir/base> B
//   3. top's child, if any: qemu-img rebase -q -u -f qcow2 -b <base file> -F <base fmt> <dir/child>
//
// The rebase runs LAST on purpose (the brief listed it before the bitmaps): it is the one switch
// that takes the committed volumes out of the chain. Until it has run, steps 1 and 2 may repeat
// freely; once it has run, the child's header alone proves everything before it is done, so a
// crash right after it loses no bitmap and a caller that re-reads the chain before deleting the
// committed volumes can trust what it sees.
import { applyBitmapPlan, type BitmapOutcome } from './bitmap-merge';
import { planBitmapMerge, type BitmapLayer } from './bitmap-plan';
import { listBitmaps, toPersistentBitmaps, type PersistentBitmap } from './bitmaps';
import {
  chainForm,
  readVolume,
  validateRequest,
  vol,
  volPath,
  type ChainVolume,
  type ColdMergeRequest,
} from './chain';
import { runQemuImg, type RunOptions } from '../../qemu/qemu-img';
import { alreadyDone, type ColdMergeResult, type ColdMergeState, type StepReport } from './result';

export type ColdCommitRequest = ColdMergeRequest;

function childIndex(req: ColdCommitRequest): number | null {
  return req.topIndex + 1 < req.chain.length ? req.topIndex + 1 : null;
}

/** The chain after the commit, or null when top is the leaf (then no header records the commit). */
function chainAfter(req: ColdCommitRequest): ChainVolume[] | null {
  if (childIndex(req) === null) return null;
  return [...req.chain.slice(0, req.baseIndex + 1), ...req.chain.slice(req.topIndex + 1)];
}

/**
 * Reads every header of the chain (read-only) and says whether the commit is complete:
 * - headers equal the requested chain -> 'pending' (steps 1 and 2 are repeatable; 3 not yet done);
 * - top has a child and the headers equal the chain without base+1..top -> 'done';
 * - anything else -> ChainMismatch (nothing is touched).
 * When top is the leaf no header changes, so the state stays 'pending' while top exists.
 */
export async function coldCommitState(
  req: ColdCommitRequest,
  opts: RunOptions = {},
): Promise<ColdMergeState> {
  validateRequest(req);
  const form = await chainForm(req, chainAfter(req), opts);
  if (form === 'after') {
    const child = vol(req, req.topIndex + 1);
    return { status: 'done', detail: `${child.file} already backs onto ${vol(req, req.baseIndex).file}` };
  }
  return {
    status: 'pending',
    detail:
      childIndex(req) === null
        ? 'top is the leaf: commit and bitmap merge (re-)run'
        : `${vol(req, req.topIndex + 1).file} still backs onto ${vol(req, req.topIndex).file}`,
  };
}

/**
 * Step 1. Repeatable: with -b (which implies -d, passed anyway) neither top nor the volumes between
 * are modified, so another commit writes the very same data into base again.
 */
export async function commitData(req: ColdCommitRequest, opts: RunOptions = {}): Promise<StepReport> {
  validateRequest(req);
  await chainForm(req, null, opts); // only from the 'before' form
  const args = [
    'commit',
    '-q',
    '-f',
    'qcow2',
    '-b',
    volPath(req, req.baseIndex),
    '-d',
    ...(req.rateLimitBytesPerSec ? ['-r', String(req.rateLimitBytesPerSec)] : []),
    volPath(req, req.topIndex),
  ];
  await runQemuImg(args, opts);
  const [top, base] = [vol(req, req.topIndex), vol(req, req.baseIndex)];
  return { step: 'commit', status: 'ran', detail: `${top.file} committed into ${base.file}` };
}

/**
 * Step 2. Repeatable: a bitmap already created in base is found by the next run and not added
 * again, enabling is idempotent, and a merge is a bitwise OR.
 */
export async function mergeCommitBitmaps(
  req: ColdCommitRequest,
  opts: RunOptions = {},
): Promise<{ report: StepReport; bitmaps: BitmapOutcome[] }> {
  validateRequest(req);
  await chainForm(req, null, opts);
  const base = vol(req, req.baseIndex);
  const top = vol(req, req.topIndex);
  const walk: BitmapLayer[] = [];
  for (let i = req.topIndex; i > req.baseIndex; i--) {
    walk.push({ file: vol(req, i).file, bitmaps: await listBitmaps(volPath(req, i), 'qcow2', opts) });
  }
  const topBitmaps = walk[0]?.bitmaps ?? [];
  if (topBitmaps.length === 0) {
    return {
      report: { step: 'merge-bitmaps', status: 'skipped', detail: `${top.file} has no bitmaps` },
      bitmaps: [],
    };
  }
  const leafIndex = req.chain.length - 1;
  const active = leafIndex === req.topIndex ? topBitmaps : await activeBitmaps(req, leafIndex, opts);
  const plan = planBitmapMerge({
    target: {
      file: base.file,
      format: base.format,
      bitmaps: await listBitmaps(volPath(req, req.baseIndex), base.format, opts),
    },
    wanted: topBitmaps,
    walk,
    active,
  });
  const bitmaps = await applyBitmapPlan(req.dir, base.file, plan, opts);
  const merged = bitmaps.filter((b) => b.status === 'merged').length;
  const skipped = bitmaps.filter((b) => b.status === 'skipped').map((b) => `${b.name}: ${b.reason ?? ''}`);
  return {
    report: {
      step: 'merge-bitmaps',
      status: merged > 0 ? 'ran' : 'skipped',
      detail: [`${merged}/${bitmaps.length} bitmap(s) merged into ${base.file}`, ...skipped].join('; '),
    },
    bitmaps,
  };
}

// Granularity of a bitmap created in base: that of the bitmap in the active layer (seeds/004).
async function activeBitmaps(
  req: ColdCommitRequest,
  leafIndex: number,
  opts: RunOptions,
): Promise<PersistentBitmap[] | undefined> {
  const leaf = await readVolume(req, leafIndex, opts);
  return leaf ? toPersistentBitmaps(leaf.bitmaps) : undefined;
}

/** Step 3. Header-only (-u). Skipped when the headers already show the 'after' form. */
export async function rebaseChildOntoBase(
  req: ColdCommitRequest,
  opts: RunOptions = {},
): Promise<StepReport> {
  validateRequest(req);
  const ci = childIndex(req);
  if (ci === null) {
    return { step: 'rebase-child', status: 'skipped', detail: 'top is the leaf: base becomes the new leaf' };
  }
  const base = vol(req, req.baseIndex);
  const child = vol(req, ci);
  if ((await chainForm(req, chainAfter(req), opts)) === 'after') {
    return {
      step: 'rebase-child',
      status: 'skipped',
      detail: `${child.file} already backs onto ${base.file}`,
    };
  }
  await runQemuImg(
    ['rebase', '-q', '-u', '-f', 'qcow2', '-b', base.file, '-F', base.format, volPath(req, ci)],
    opts,
  );
  return { step: 'rebase-child', status: 'ran', detail: `${child.file} now backs onto ${base.file}` };
}

export async function coldCommit(req: ColdCommitRequest, opts: RunOptions = {}): Promise<ColdMergeResult> {
  const state = await coldCommitState(req, opts);
  const removed = req.chain.slice(req.baseIndex + 1, req.topIndex + 1);
  const newChain = [...req.chain.slice(0, req.baseIndex + 1), ...req.chain.slice(req.topIndex + 1)];
  if (state.status === 'done')
    return alreadyDone(state.detail, ['commit', 'merge-bitmaps', 'rebase-child'], removed, newChain);
  // Step 1 — a re-run recognises it as done only through step 3 (child on base => 'done' above);
  // otherwise it commits again, which rewrites identical data since top..base+1 are never modified.
  const steps: StepReport[] = [await commitData(req, opts)];
  // Step 2 — a re-run lists base's bitmaps first: existing ones are not re-added; merges are ORs.
  const b = await mergeCommitBitmaps(req, opts);
  steps.push(b.report);
  // Step 3 — a re-run reads the child's header: already naming base => skipped (state 'done').
  steps.push(await rebaseChildOntoBase(req, opts));
  return { alreadyDone: false, steps, bitmaps: b.bitmaps, removed, newChain };
}
