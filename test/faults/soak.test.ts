// The soak (docs/failure-model.md): N randomized fault schedules — a fault, a stage, a timing offset (and,
// for a VM crash, how the merge is retried) — each run as a matrix cell whose fault strikes `offset` ms
// after the stage was reached, wherever the merge then is (mid-pivot, mid-record, between two unlinks,
// after the end, ...). The checks are the matrix's: only a VM crash may fail the merge, and only with
// VmCrashed before the pivot; everything else completes with every invariant.
//
// Schedule i depends only on (seed, i) (and the focus lists, when given): any one is reproduced alone with
//   LIVEMERGE_SOAK_SEED=<seed> LIVEMERGE_SOAK_FROM=<i> LIVEMERGE_SOAK_N=1 npx vitest run -c vitest.faults.config.mts test/faults/soak.test.ts
// Long runs: LIVEMERGE_SOAK_N=200 (the default N fits the CI budget; the default seed is fixed). Focus with
// LIVEMERGE_SOAK_FAULTS / LIVEMERGE_SOAK_STAGES: comma-separated names from harness.ts's FAULTS / STAGES.
import { afterAll, beforeAll, describe, it } from 'vitest';
import { ProcessStack } from '../helpers/process-stack';
import type { Cell, Fault, FaultContext, StageName } from './harness';
import { FAULTS, STAGES, cellName, cellTimeoutMs, faultContext, runCell } from './harness';

const SEED = Number(process.env.LIVEMERGE_SOAK_SEED ?? 20240611);
const N = Number(process.env.LIVEMERGE_SOAK_N ?? 4);
const FROM = Number(process.env.LIVEMERGE_SOAK_FROM ?? 0);
const ONLY_FAULTS = focus('LIVEMERGE_SOAK_FAULTS', FAULTS);
const ONLY_STAGES = focus('LIVEMERGE_SOAK_STAGES', STAGES);

function focus<T extends string>(env: string, all: readonly T[]): readonly T[] {
  const raw = process.env[env];
  if (!raw) return all;
  const xs = raw.split(',').map((x) => x.trim());
  const bad = xs.filter((x) => !(all as readonly string[]).includes(x));
  if (bad.length > 0) throw new Error(`${env}: unknown ${bad.join(', ')} (known: ${all.join(', ')})`);
  return xs as T[];
}

/** The environment that replays schedule <i> of this run (followed by the index). */
const REPLAY =
  (process.env.LIVEMERGE_SOAK_FAULTS ? `LIVEMERGE_SOAK_FAULTS=${ONLY_FAULTS.join(',')} ` : '') +
  (process.env.LIVEMERGE_SOAK_STAGES ? `LIVEMERGE_SOAK_STAGES=${ONLY_STAGES.join(',')} ` : '') +
  `LIVEMERGE_SOAK_SEED=${SEED} LIVEMERGE_SOAK_N=1 LIVEMERGE_SOAK_FROM=`;

/** mulberry32: a small, well-mixed 32-bit PRNG; the same seed gives the same sequence everywhere. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function schedule(
  seed: number,
  index: number,
  faults: readonly Fault[] = FAULTS,
  stages: readonly StageName[] = STAGES,
): Cell {
  const rnd = prng((Math.imul(seed >>> 0, 2654435761) ^ Math.imul(index + 1, 40503)) >>> 0);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  const fault = pick(faults);
  const stage = pick(stages);
  // During the copy (≈ 5 s) the offset runs from the first copied bytes, uniformly. Elsewhere it runs from
  // the release of the breakpoint, skewed to the first few hundred ms (median ≈ 150 ms, at most 800 ms):
  // each step after the copy takes tens of ms, and the rest of the merge well under a second.
  const offsetMs = Math.floor(stage === 'copy' ? rnd() * 5000 : rnd() ** 2 * 800);
  const retry = pick(['live', 'cold'] as const);
  return { fault, stage, offsetMs, ...(fault === 'vm-crash' ? { retry } : {}) };
}

describe(`soak: ${N} randomized fault schedules, seed ${SEED}`, () => {
  let ctx: FaultContext;
  beforeAll(async () => {
    console.log(
      `[soak] seed ${SEED}, schedules ${FROM}..${FROM + N - 1}, faults ${ONLY_FAULTS.join(',')}, ` +
        `stages ${ONLY_STAGES.join(',')}; replay one with ${REPLAY}<i>`,
    );
    ctx = faultContext(await ProcessStack.start());
  });
  afterAll(async () => {
    await ctx?.libvirt.close();
    await ctx?.stack.stop();
  });

  for (let i = FROM; i < FROM + N; i++) {
    const cell = schedule(SEED, i, ONLY_FAULTS, ONLY_STAGES);
    it(`#${i} (seed ${SEED}): ${cellName(cell)}`, { timeout: cellTimeoutMs(cell) }, async () => {
      console.log(`[soak] #${i} ${JSON.stringify(cell)}`);
      try {
        await runCell(ctx, cell);
      } catch (err) {
        console.error(`[soak] #${i} failed: replay with ${REPLAY}${i}`);
        console.error(ctx.stack.allLogs());
        throw err;
      }
    });
  }
});
