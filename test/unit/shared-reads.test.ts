import { describe, expect, it } from 'vitest';
import { sharedFreshReads } from '../../src/common/shared-reads';

/** A read whose runs the test ends one by one; each run answers its own number. */
function controlledRead() {
  const runs: Array<{ n: number; end: (fail?: boolean) => void }> = [];
  const read = () =>
    new Promise<number>((resolve, reject) => {
      const n = runs.length + 1;
      runs.push({ n, end: (fail) => (fail ? reject(new Error(`run ${n} failed`)) : resolve(n)) });
    });
  return { runs, read: sharedFreshReads(read) };
}

const tick = () => new Promise<void>((r) => setImmediate(r));

describe('sharedFreshReads', () => {
  it('gives every caller a run that started after its call, and runs one at a time', async () => {
    const { runs, read } = controlledRead();
    const a = read(); // starts run 1
    const b = read(); // run 1 started before b: b waits for run 2
    const c = read(); // shares run 2 with b
    expect(runs).toHaveLength(1);
    runs[0]!.end();
    expect(await a).toBe(1);
    await tick();
    expect(runs).toHaveLength(2); // run 2 started once run 1 ended
    const d = read(); // run 2 is under way: d waits for run 3
    runs[1]!.end();
    expect([await b, await c]).toEqual([2, 2]);
    await tick();
    runs[2]!.end();
    expect(await d).toBe(3);
    expect(runs).toHaveLength(3);
    // Idle again: the next call starts a run of its own at once.
    const e = read();
    expect(runs).toHaveLength(4);
    runs[3]!.end();
    expect(await e).toBe(4);
  });

  it('fails the calls that shared a failed run only; the waiting ones get the next run', async () => {
    const { runs, read } = controlledRead();
    const a = read();
    const b = read();
    runs[0]!.end(true);
    await expect(a).rejects.toThrow('run 1 failed');
    await tick();
    runs[1]!.end();
    expect(await b).toBe(2);
  });
});
