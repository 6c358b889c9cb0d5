// Cold merge primitives on real image files: the AAAA/BBBB/CCCC/DD chain of seeds/002
// (base <- s1 <- s2 <- leaf), merged backward (qemu-img commit) and forward (safe rebase), with a
// qcow2 base and a raw base. After every merge the new leaf must read byte for byte what the old
// leaf read, backing references stay relative, base keeps its format, the removed volumes are no
// longer referenced, and the persistent dirty bitmaps cover every cluster written in the merged
// layers (checked over NBD with qemu-nbd + nbdinfo).
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  ChainMismatch,
  coldCommit,
  coldCommitState,
  coldPull,
  coldPullState,
  commitData,
  InvalidColdMergeRequest,
  listBitmaps,
  mergeCommitBitmaps,
  mergePullBitmaps,
  rebaseChildOntoBase,
  type ChainVolume,
  type ColdMergeRequest,
  type ColdMergeResult,
} from '../../src/merge/cold';
import { QemuImgError as QemuToolError } from '../../src/qemu/qemu-img';
import {
  backingChainFiles,
  crashWhileOpen,
  dirtyMaps,
  dumpRaw,
  holdOpen,
  imageInfo,
  makeTmpDir,
  readPatterns,
  runOk,
  sameGuestView,
  sha256,
  stopAllNbdServers,
  uncovered,
  writePatterns,
  type ImgFormat,
  type Pattern,
} from '../helpers/qemu';

const K = 1024;
const SIZE = 1024 * K; // 16 clusters of 64 KiB
const GRANULARITY = 64 * K;

// seeds/002, one letter = one 64 KiB cluster (plus a sub-cluster write in s2):
//   base: AAAA------------
//   s1:   --BBBB----------
//   s2:   -----CCCC--e----
//   leaf: D-------DD------
//   sees: DABBBCCCDD-e----
const LAYERS = ['base', 's1', 's2', 'leaf'] as const;
type Layer = (typeof LAYERS)[number];
const WRITES: Record<Layer, Pattern[]> = {
  base: [{ byte: 0x41, offset: 0, length: 256 * K }],
  s1: [{ byte: 0x42, offset: 128 * K, length: 256 * K }],
  s2: [
    { byte: 0x43, offset: 320 * K, length: 256 * K },
    { byte: 0x65, offset: 704 * K + 512, length: 1 * K },
  ],
  leaf: [
    { byte: 0x44, offset: 0, length: 64 * K },
    { byte: 0x44, offset: 512 * K, length: 128 * K },
  ],
};
/** Bitmaps and the layer each one starts in: b0 before any snapshot, b1 a checkpoint taken in s1. */
const BITMAP_START: Record<string, Layer> = { b0: 'base', b1: 's1' };

/** What the guest sees through the whole chain, as constant-byte segments covering the disk. */
function guestView(): Pattern[] {
  const disk = new Uint8Array(SIZE);
  for (const l of LAYERS) for (const w of WRITES[l]) disk.fill(w.byte, w.offset, w.offset + w.length);
  const segs: Pattern[] = [];
  for (let i = 0; i < SIZE;) {
    let j = i;
    while (j < SIZE && disk[j] === disk[i]) j++;
    segs.push({ byte: disk[i] ?? 0, offset: i, length: j - i });
    i = j;
  }
  return segs;
}

const tmpDirs: string[] = [];
afterEach(async () => {
  await stopAllNbdServers();
  for (const d of tmpDirs.splice(0)) await fs.rm(d, { recursive: true, force: true });
});

interface Built {
  vols: string;
  dump: string;
  chain: ChainVolume[];
  p: (v: ChainVolume | string) => string;
  req: (baseIndex: number, topIndex: number) => ColdMergeRequest;
}

async function buildChain(
  baseFormat: ImgFormat,
  opts: { baseBitmapDisabled?: boolean } = {},
): Promise<Built> {
  const root = await makeTmpDir();
  tmpDirs.push(root);
  const vols = path.join(root, 'vols');
  await fs.mkdir(vols);
  const p = (v: ChainVolume | string): string => path.join(vols, typeof v === 'string' ? v : v.file);
  const chain: ChainVolume[] = LAYERS.map((file, i) => ({ file, format: i === 0 ? baseFormat : 'qcow2' }));
  for (const [i, v] of chain.entries()) {
    const parent = chain[i - 1];
    const backing = parent ? ['-b', parent.file, '-F', parent.format] : [];
    await runOk('qemu-img', ['create', '-q', '-f', v.format, ...backing, p(v), String(SIZE)]);
    if (v.format === 'qcow2') {
      // As libvirt does for each new active layer: the recording bitmaps are re-created in it.
      for (const [name, start] of Object.entries(BITMAP_START)) {
        if (LAYERS.indexOf(start) <= i) {
          await runOk('qemu-img', [
            'bitmap',
            '--add',
            '--enable',
            '-g',
            String(GRANULARITY),
            '-f',
            'qcow2',
            p(v),
            name,
          ]);
        }
      }
    }
    await writePatterns(p(v), v.format, WRITES[v.file as Layer]);
    if (i === 0 && opts.baseBitmapDisabled && v.format === 'qcow2') {
      await runOk('qemu-img', ['bitmap', '--disable', '-f', 'qcow2', p(v), 'b0']);
    }
  }
  const dump = path.join(root, 'leaf-before.raw');
  const leaf = chain[chain.length - 1] as ChainVolume;
  await dumpRaw(p(leaf), 'qcow2', dump);
  await readPatterns(dump, 'raw', guestView());
  return { vols, dump, chain, p, req: (baseIndex, topIndex) => ({ dir: vols, chain, baseIndex, topIndex }) };
}

const files = (vs: readonly ChainVolume[]): string[] => vs.map((v) => v.file);

/** The new chain reads what the old leaf read and its headers are exactly `newChain`. */
async function assertMerged(
  b: Built,
  newChain: readonly ChainVolume[],
  removed: readonly ChainVolume[],
): Promise<void> {
  const leaf = newChain[newChain.length - 1] as ChainVolume;
  expect(await sameGuestView(b.p(leaf), leaf.format, b.dump, 'raw')).toBe(true);
  await readPatterns(b.p(leaf), leaf.format, guestView());
  for (const [i, v] of newChain.entries()) {
    const info = await imageInfo(b.p(v)); // probed: the file's real format
    expect(info.format, `${v.file} format`).toBe(v.format);
    const parent = newChain[i - 1];
    if (!parent) {
      expect(info['backing-filename'], `${v.file} is the root`).toBeUndefined();
      continue;
    }
    expect(info['backing-filename'], `${v.file} backing (relative)`).toBe(parent.file);
    expect(info['backing-filename-format']).toBe(parent.format);
    for (const r of removed) expect(info['backing-filename']).not.toBe(r.file);
    await runOk('qemu-img', ['check', '-q', '-U', '-f', 'qcow2', b.p(v)]);
  }
  expect(await backingChainFiles(b.p(leaf), leaf.format)).toEqual(files(newChain).reverse());
}

/** Ranges each bitmap must cover once the `merged` layers are folded into one volume. */
function expectedCoverage(merged: readonly Layer[], baseFormat: ImgFormat): Record<string, Pattern[]> {
  const out: Record<string, Pattern[]> = {};
  for (const [name, start] of Object.entries(BITMAP_START)) {
    out[name] = merged
      .filter((l) => LAYERS.indexOf(l) >= LAYERS.indexOf(start))
      .filter((l) => !(l === 'base' && baseFormat === 'raw')) // a raw base never had a bitmap
      .flatMap((l) => WRITES[l]);
  }
  return out;
}

/**
 * Problems with the bitmaps of `file` against `want` (name -> ranges that must be dirty). The same
 * check serves the positive tests (no problems) and the negative control (problems found).
 */
async function bitmapProblems(file: string, want: Record<string, Pattern[]>): Promise<string[]> {
  const problems: string[] = [];
  const present = await listBitmaps(file);
  const names = Object.keys(want).filter((n) => present.some((b) => b.name === n));
  const maps = names.length > 0 ? await dirtyMaps(file, names) : {};
  for (const [name, ranges] of Object.entries(want)) {
    const b = present.find((x) => x.name === name);
    if (!b) {
      problems.push(`${name}: missing`);
      continue;
    }
    if (!b.enabled) problems.push(`${name}: not enabled (flags ${b.flags.join(',')})`);
    if (b.inconsistent) problems.push(`${name}: in-use`);
    if (b.granularity !== GRANULARITY) problems.push(`${name}: granularity ${b.granularity}`);
    const miss = uncovered(maps[name] ?? [], ranges);
    if (miss.length > 0)
      problems.push(`${name}: not dirty at ${miss.map((m) => `${m.offset}+${m.length}`).join(' ')}`);
  }
  return problems;
}

/** Runs the merge a second time, recording the qemu-img commands it issues. */
async function runAgain(
  merge: (r: ColdMergeRequest, o: { onCommand: (a: readonly string[]) => void }) => Promise<ColdMergeResult>,
  req: ColdMergeRequest,
): Promise<{ result: ColdMergeResult; commands: string[][] }> {
  const commands: string[][] = [];
  const result = await merge(req, { onCommand: (a) => commands.push([...a]) });
  return { result, commands };
}

const readOnly = (cmds: string[][]): boolean => cmds.every((c) => c[0] === 'info' && c.includes('-U'));

describe.each(['qcow2', 'raw'] as const)('cold merges with a %s base', (baseFormat) => {
  it('backward, intermediate: s1 into base; s2 re-parented, leaf untouched', async () => {
    const b = await buildChain(baseFormat);
    const leafHash = await sha256(b.p('leaf'));
    const req = b.req(0, 1);
    expect(await coldCommitState(req)).toMatchObject({ status: 'pending' });
    const r = await coldCommit(req);
    expect(r.alreadyDone).toBe(false);
    expect(r.steps.map((s) => [s.step, s.status])).toEqual([
      ['commit', 'ran'],
      ['merge-bitmaps', baseFormat === 'raw' ? 'skipped' : 'ran'],
      ['rebase-child', 'ran'],
    ]);
    expect(files(r.removed)).toEqual(['s1']);
    expect(files(r.newChain)).toEqual(['base', 's2', 'leaf']);
    await assertMerged(b, r.newChain, r.removed);
    expect(await sha256(b.p('leaf'))).toBe(leafHash);

    const again = await runAgain(coldCommit, req);
    expect(again.result.alreadyDone).toBe(true);
    expect(readOnly(again.commands)).toBe(true);
    expect(await coldCommitState(req)).toMatchObject({ status: 'done' });
    await assertMerged(b, r.newChain, r.removed);
  });

  it("backward, up to the leaf's parent: s1+s2 into base; leaf re-parented onto base", async () => {
    const b = await buildChain(baseFormat);
    const req = b.req(0, 2);
    const r = await coldCommit(req);
    expect(files(r.removed)).toEqual(['s1', 's2']);
    expect(files(r.newChain)).toEqual(['base', 'leaf']);
    await assertMerged(b, r.newChain, r.removed);
    const again = await runAgain(coldCommit, req);
    expect(again.result.alreadyDone).toBe(true);
    expect(readOnly(again.commands)).toBe(true);
    await assertMerged(b, r.newChain, r.removed);
  });

  it('backward of the leaf itself: the whole chain into base, base becomes the leaf', async () => {
    const b = await buildChain(baseFormat);
    const req = b.req(0, 3);
    const r = await coldCommit(req);
    expect(r.steps.find((s) => s.step === 'rebase-child')).toMatchObject({ status: 'skipped' });
    expect(files(r.newChain)).toEqual(['base']);
    await assertMerged(b, r.newChain, r.removed);
    // -d (implied by -b): the old leaf was not emptied and still reads the same, in case the
    // caller has not switched the disk to base yet.
    expect(await sameGuestView(b.p('leaf'), 'qcow2', b.dump, 'raw')).toBe(true);
    // Top is the leaf: no header records the commit, so a second run repeats it; same result.
    expect(await coldCommitState(req)).toMatchObject({ status: 'pending' });
    const again = await runAgain(coldCommit, req);
    expect(again.result.alreadyDone).toBe(false);
    await assertMerged(b, r.newChain, r.removed);
  });

  it('backward into a base that is not the root: s2 into s1', async () => {
    const b = await buildChain(baseFormat);
    const r = await coldCommit(b.req(1, 2));
    expect(files(r.newChain)).toEqual(['base', 's1', 'leaf']);
    await assertMerged(b, r.newChain, r.removed);
    expect((await runAgain(coldCommit, b.req(1, 2))).result.alreadyDone).toBe(true);
  });

  it('forward: base..s1 pulled into s2; s2 becomes the root, leaf untouched', async () => {
    const b = await buildChain(baseFormat);
    const leafHash = await sha256(b.p('leaf'));
    const req = b.req(0, 2);
    expect(await coldPullState(req)).toMatchObject({ status: 'pending' });
    const r = await coldPull(req);
    expect(r.steps.map((s) => [s.step, s.status])).toEqual([
      ['merge-bitmaps', 'ran'],
      ['rebase-top', 'ran'],
    ]);
    expect(files(r.removed)).toEqual(['base', 's1']);
    expect(files(r.newChain)).toEqual(['s2', 'leaf']);
    await assertMerged(b, r.newChain, r.removed);
    expect(await sha256(b.p('leaf'))).toBe(leafHash);
    const again = await runAgain(coldPull, req);
    expect(again.result.alreadyDone).toBe(true);
    expect(readOnly(again.commands)).toBe(true);
    await assertMerged(b, r.newChain, r.removed);
  });

  it('forward into the leaf: s1..s2 pulled into leaf, which now backs onto base', async () => {
    const b = await buildChain(baseFormat);
    const req = b.req(1, 3);
    const r = await coldPull(req);
    expect(files(r.newChain)).toEqual(['base', 'leaf']);
    await assertMerged(b, r.newChain, r.removed);
    const again = await runAgain(coldPull, req);
    expect(again.result.alreadyDone).toBe(true);
    expect(readOnly(again.commands)).toBe(true);
    await assertMerged(b, r.newChain, r.removed);
  });

  it('forward into the leaf from the root: the leaf ends up with no backing file', async () => {
    const b = await buildChain(baseFormat);
    const r = await coldPull(b.req(0, 3));
    expect(files(r.newChain)).toEqual(['leaf']);
    await assertMerged(b, r.newChain, r.removed);
    expect((await runAgain(coldPull, b.req(0, 3))).result.alreadyDone).toBe(true);
  });
});

// ---- crash between steps: partial run, then the full function, ends where a clean run ends ------

interface Fingerprint {
  headers: Array<{ file: string; backing?: string; backingFormat?: string; bitmaps: string[] }>;
  maps: Record<string, unknown>;
}

async function fingerprint(b: Built, chain: readonly ChainVolume[]): Promise<Fingerprint> {
  const fp: Fingerprint = { headers: [], maps: {} };
  for (const v of chain) {
    const info = await imageInfo(b.p(v), v.format);
    const bitmaps = (info['format-specific']?.data?.bitmaps ?? [])
      .map((x) => `${x.name}/${x.granularity}/${[...x.flags].sort().join('+')}`)
      .sort();
    fp.headers.push({
      file: v.file,
      backing: info['backing-filename'],
      backingFormat: info['backing-filename-format'],
      bitmaps,
    });
    const names = (info['format-specific']?.data?.bitmaps ?? []).map((x) => x.name);
    if (names.length > 0) fp.maps[v.file] = await dirtyMaps(b.p(v), names);
  }
  return fp;
}

describe('crash between steps', () => {
  const commitCrashes: Record<string, (req: ColdMergeRequest) => Promise<unknown>> = {
    'after the data commit': (req) => commitData(req),
    'after creating a bitmap in base, before any merge': async (req) => {
      await commitData(req);
      await runOk('qemu-img', [
        'bitmap',
        '--add',
        '-g',
        String(GRANULARITY),
        '--enable',
        '-f',
        'qcow2',
        path.join(req.dir, 'base'),
        'b1',
      ]);
    },
    'after the bitmap merge': async (req) => {
      await commitData(req);
      await mergeCommitBitmaps(req);
    },
    'after the child rebase (everything done)': async (req) => {
      await commitData(req);
      await mergeCommitBitmaps(req);
      await rebaseChildOntoBase(req);
    },
  };

  for (const [topIndex, label] of [
    [2, 'commit s1..s2 into base'],
    [3, 'commit of the whole chain into base'],
  ] as const) {
    it.each(Object.keys(commitCrashes))(`${label}: crash %s, then coldCommit`, async (point) => {
      const ref = await buildChain('qcow2');
      const refResult = await coldCommit(ref.req(0, topIndex));
      const want = await fingerprint(ref, refResult.newChain);

      const b = await buildChain('qcow2');
      await commitCrashes[point]?.(b.req(0, topIndex));
      const r = await coldCommit(b.req(0, topIndex));
      if (point.startsWith('after the child rebase') && topIndex === 2) expect(r.alreadyDone).toBe(true);
      await assertMerged(b, r.newChain, r.removed);
      expect(await fingerprint(b, r.newChain)).toEqual(want);
      expect(
        await bitmapProblems(b.p('base'), expectedCoverage(LAYERS.slice(0, topIndex + 1), 'qcow2')),
      ).toEqual([]);
    });
  }

  it('pull base..s1 into s2: crash after the bitmap merge, then coldPull', async () => {
    const ref = await buildChain('qcow2');
    const refResult = await coldPull(ref.req(0, 2));
    const want = await fingerprint(ref, refResult.newChain);

    const b = await buildChain('qcow2');
    await mergePullBitmaps(b.req(0, 2));
    expect(await coldPullState(b.req(0, 2))).toMatchObject({ status: 'pending' });
    const r = await coldPull(b.req(0, 2));
    await assertMerged(b, r.newChain, r.removed);
    expect(await fingerprint(b, r.newChain)).toEqual(want);
  });
});

// ---- persistent dirty bitmaps ---------------------------------------------------------------------

describe('persistent dirty bitmaps', () => {
  it('commit of the whole chain: base holds b0 and b1, enabled, consistent, covering every merged write', async () => {
    const b = await buildChain('qcow2');
    const r = await coldCommit(b.req(0, 3));
    expect(r.bitmaps.map((x) => [x.name, x.status, x.created, x.sources])).toEqual([
      ['b0', 'merged', false, ['leaf', 's2', 's1']],
      ['b1', 'merged', true, ['leaf', 's2', 's1']],
    ]);
    const base = b.chain[0] as ChainVolume;
    expect(await bitmapProblems(b.p(base), expectedCoverage(LAYERS, 'qcow2'))).toEqual([]);
    // Precise, not everything: b1 started in s1, so the cluster only base ever wrote (64K..128K) is clean.
    const maps = await dirtyMaps(b.p(base), ['b1']);
    expect(uncovered(maps.b1 ?? [], [{ offset: 64 * K, length: 64 * K }])).toEqual([
      { byte: 0, offset: 64 * K, length: 64 * K },
    ]);
  });

  it('intermediate commit: base gets s1 folded in; s2 and leaf keep their own bitmaps', async () => {
    const b = await buildChain('qcow2');
    const before = { s2: await listBitmaps(b.p('s2')), leaf: await listBitmaps(b.p('leaf')) };
    await coldCommit(b.req(0, 1));
    const base = b.chain[0] as ChainVolume;
    expect(await bitmapProblems(b.p(base), expectedCoverage(['base', 's1'], 'qcow2'))).toEqual([]);
    expect(await listBitmaps(b.p('s2'))).toEqual(before.s2);
    expect(await listBitmaps(b.p('leaf'))).toEqual(before.leaf);
    expect(await bitmapProblems(b.p('leaf'), { b0: WRITES.leaf, b1: WRITES.leaf })).toEqual([]);
  });

  it.each(['qcow2', 'raw'] as const)(
    'pull into the leaf (%s base): the leaf bitmaps cover the pulled volumes',
    async (bf) => {
      const b = await buildChain(bf);
      const leaf = b.chain[3] as ChainVolume;
      await coldPull(b.req(0, 3));
      expect(await bitmapProblems(b.p(leaf), expectedCoverage(LAYERS, bf))).toEqual([]);
    },
  );

  it('raw base: bitmaps cannot be kept in base and are reported as skipped', async () => {
    const b = await buildChain('raw');
    const r = await coldCommit(b.req(0, 3));
    expect(r.bitmaps.map((x) => [x.name, x.status])).toEqual([
      ['b0', 'skipped'],
      ['b1', 'skipped'],
    ]);
    expect(r.bitmaps[0]?.reason).toMatch(/raw/);
    expect(await listBitmaps(b.p('base'), 'raw')).toEqual([]);
    expect((await imageInfo(b.p('base'))).format).toBe('raw');
  });

  it('negative control: without the bitmap step the check fails; coldCommit then repairs it', async () => {
    // b0 disabled in base (frozen when s1 was taken): the commit's own writes do not mark it.
    const b = await buildChain('qcow2', { baseBitmapDisabled: true });
    const req = b.req(0, 3);
    const base = b.chain[0] as ChainVolume;
    const want = expectedCoverage(LAYERS, 'qcow2');
    await commitData(req);
    await rebaseChildOntoBase(req);
    const problems = await bitmapProblems(b.p(base), want);
    expect(problems).toContain('b1: missing');
    expect(problems.some((p) => p.startsWith('b0: not enabled'))).toBe(true);
    expect(problems.some((p) => p.startsWith('b0: not dirty at'))).toBe(true);

    const r = await coldCommit(req);
    expect(r.bitmaps.find((x) => x.name === 'b0')).toMatchObject({ status: 'merged', enabled: true });
    expect(await bitmapProblems(b.p(base), want)).toEqual([]);
  });

  it('a bitmap left in-use by a crashed QEMU process is skipped; data and the other bitmaps still merge', async () => {
    const b = await buildChain('qcow2');
    await crashWhileOpen(b.p('base'));
    expect((await listBitmaps(b.p('base'))).find((x) => x.name === 'b0')?.inconsistent).toBe(true);
    const r = await coldCommit(b.req(0, 2));
    expect(r.bitmaps.find((x) => x.name === 'b0')).toMatchObject({ status: 'skipped' });
    expect(r.bitmaps.find((x) => x.name === 'b0')?.reason).toMatch(/in-use/);
    expect(r.bitmaps.find((x) => x.name === 'b1')).toMatchObject({ status: 'merged', created: true });
    await assertMerged(b, r.newChain, r.removed);
    expect(await bitmapProblems(b.p('base'), { b1: [...WRITES.s1, ...WRITES.s2] })).toEqual([]);
  });
});

// ---- refusals --------------------------------------------------------------------------------------

describe('refusals', () => {
  it('rejects malformed requests before running anything', async () => {
    const b = await buildChain('qcow2');
    const calls: unknown[] = [];
    const onCommand = (a: readonly string[]): void => void calls.push(a);
    const bad: ColdMergeRequest[] = [
      b.req(2, 2),
      b.req(3, 1),
      b.req(0, 4),
      { ...b.req(0, 1), dir: 'relative/dir' },
      { ...b.req(0, 1), chain: [{ file: '../base', format: 'qcow2' }, ...b.chain.slice(1)] },
      { ...b.req(0, 1), chain: [{ file: 'nbd:host:10809', format: 'raw' }, ...b.chain.slice(1)] },
      {
        ...b.req(0, 1),
        chain: [b.chain[0] as ChainVolume, { file: 's1', format: 'raw' }, ...b.chain.slice(2)],
      },
      { ...b.req(0, 1), chain: [b.chain[0] as ChainVolume, b.chain[0] as ChainVolume] },
    ];
    for (const req of bad) {
      await expect(coldCommit(req, { onCommand })).rejects.toBeInstanceOf(InvalidColdMergeRequest);
      await expect(coldPull(req, { onCommand })).rejects.toBeInstanceOf(InvalidColdMergeRequest);
    }
    expect(calls).toEqual([]);
  });

  it('refuses a chain that does not match the headers, touching nothing', async () => {
    const b = await buildChain('qcow2');
    const hashes = await Promise.all(b.chain.map((v) => sha256(b.p(v))));
    const swapped = [b.chain[0], b.chain[2], b.chain[1], b.chain[3]] as ChainVolume[];
    const req = { dir: b.vols, chain: swapped, baseIndex: 0, topIndex: 1 };
    await expect(coldCommit(req)).rejects.toBeInstanceOf(ChainMismatch);
    await expect(coldPull({ ...req, topIndex: 2 })).rejects.toBeInstanceOf(ChainMismatch);
    // A wrongly declared base format is a mismatch too (the headers record -F qcow2).
    const rawBase = [{ file: 'base', format: 'raw' }, ...b.chain.slice(1)] as ChainVolume[];
    await expect(
      coldCommit({ dir: b.vols, chain: rawBase, baseIndex: 0, topIndex: 1 }),
    ).rejects.toBeInstanceOf(ChainMismatch);
    expect(await Promise.all(b.chain.map((v) => sha256(b.p(v))))).toEqual(hashes);
  });

  it('a leaf commit whose top volume is gone cannot be proven done: ChainMismatch', async () => {
    const b = await buildChain('qcow2');
    await coldCommit(b.req(0, 3));
    await fs.rm(b.p('leaf'));
    await expect(coldCommitState(b.req(0, 3))).rejects.toBeInstanceOf(ChainMismatch);
    await expect(coldCommit(b.req(0, 3))).rejects.toThrow(/leaf: volume file is missing/);
  });

  it('a volume held open by a running QEMU fails with QemuToolError (args, exit code, stderr); a retry then succeeds', async () => {
    const b = await buildChain('qcow2');
    const vm = await holdOpen(b.p('leaf'), 'qcow2');
    let err: unknown;
    try {
      err = await coldCommit(b.req(0, 1)).catch((e: unknown) => e);
    } finally {
      await vm.close();
    }
    expect(err).toBeInstanceOf(QemuToolError);
    const q = err as QemuToolError;
    expect(q.args[0]).toBe('commit');
    expect(q.args).toContain(b.p('base'));
    expect(q.exitCode).toBe(1);
    expect(q.stderr).toMatch(/lock/i);
    const r = await coldCommit(b.req(0, 1));
    await assertMerged(b, r.newChain, r.removed);
  });

  it('listBitmaps of a file that is not qcow2 fails with QemuToolError', async () => {
    const b = await buildChain('raw');
    const err = await listBitmaps(b.p('base'), 'qcow2').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QemuToolError);
    expect((err as QemuToolError).args).toEqual(['info', '--output=json', '-U', '-f', 'qcow2', b.p('base')]);
    expect((err as QemuToolError).exitCode).toBe(1);
  });
});
