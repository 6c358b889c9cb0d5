// The bitmap plan of the cold merges (pure): which bitmaps are carried into the target, created,
// enabled, merged from which layers, or skipped and why. seeds/004 is the rule.
import { describe, expect, it } from 'vitest';
import { planBitmapMerge, type PersistentBitmap } from '../../src/merge/cold';

const bm = (name: string, flags: string[] = ['auto'], granularity = 65536): PersistentBitmap => ({
  name,
  granularity,
  flags,
  enabled: flags.includes('auto'),
  inconsistent: flags.includes('in-use'),
});

describe('planBitmapMerge', () => {
  it('creates a missing bitmap in the target with the active layer granularity and walks top down', () => {
    const plan = planBitmapMerge({
      target: { file: 'base', format: 'qcow2', bitmaps: [] },
      wanted: [bm('b1')],
      walk: [
        { file: 's2', bitmaps: [bm('b1')] },
        { file: 's1', bitmaps: [bm('b1')] },
      ],
      active: [bm('b1', ['auto'], 131072)],
    });
    expect(plan).toEqual([
      { name: 'b1', kind: 'merge', create: { granularity: 131072 }, enable: false, sources: ['s2', 's1'] },
    ]);
  });

  it('stops the walk at the first layer without the bitmap', () => {
    const plan = planBitmapMerge({
      target: { file: 'base', format: 'qcow2', bitmaps: [bm('b0')] },
      wanted: [bm('b0')],
      walk: [
        { file: 'leaf', bitmaps: [bm('b0')] },
        { file: 's2', bitmaps: [] },
        { file: 's1', bitmaps: [bm('b0')] },
      ],
    });
    expect(plan).toEqual([{ name: 'b0', kind: 'merge', create: null, enable: false, sources: ['leaf'] }]);
  });

  it("enables the target's disabled bitmap when the chain's one records", () => {
    const [a] = planBitmapMerge({
      target: { file: 'base', format: 'qcow2', bitmaps: [bm('b0', [])] },
      wanted: [bm('b0')],
      walk: [{ file: 's1', bitmaps: [bm('b0')] }],
    });
    expect(a).toMatchObject({ kind: 'merge', enable: true, create: null });
  });

  it('skips bitmaps that are inconsistent anywhere on the way, or when the target is raw', () => {
    const walk = [
      { file: 's2', bitmaps: [bm('ok'), bm('mid')] },
      { file: 's1', bitmaps: [bm('ok'), bm('mid', ['in-use', 'auto'])] },
    ];
    const plan = planBitmapMerge({
      target: { file: 'base', format: 'qcow2', bitmaps: [bm('tgt', ['in-use'])] },
      wanted: [bm('ok'), bm('mid'), bm('tgt'), bm('top', ['in-use', 'auto'])],
      walk,
    });
    expect(plan.map((a) => [a.name, a.kind])).toEqual([
      ['ok', 'merge'],
      ['mid', 'skip'],
      ['tgt', 'skip'],
      ['top', 'skip'],
    ]);
    const raw = planBitmapMerge({
      target: { file: 'base', format: 'raw', bitmaps: [] },
      wanted: [bm('ok')],
      walk,
    });
    expect(raw).toEqual([
      { name: 'ok', kind: 'skip', reason: 'base is raw and cannot hold persistent bitmaps' },
    ]);
  });

  it('never lists the target among its own sources (pull: top is both wanted and target)', () => {
    const plan = planBitmapMerge({
      target: { file: 'top', format: 'qcow2', bitmaps: [bm('b0')] },
      wanted: [bm('b0')],
      walk: [{ file: 'mid', bitmaps: [bm('b0')] }],
    });
    expect(plan).toEqual([{ name: 'b0', kind: 'merge', create: null, enable: false, sources: ['mid'] }]);
  });
});
