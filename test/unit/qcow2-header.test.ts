// The header walk (src/inspect/qcow2-header.ts) lists the files qemu-img's walk lists, on real images made by
// qemu-img: the guard's answer must not change with the reader.
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { walkQcow2Chain } from '../../src/inspect/qcow2-chain';
import { imageLink, parseQcow2Header, walkChainFiles } from '../../src/inspect/qcow2-header';
import { createTempDir } from '../helpers/vm-fixture';

const exec = promisify(execFile);
const qemuImg = (...args: string[]) => exec('qemu-img', args);

async function qemuImgFiles(leaf: string): Promise<{ files: string[]; missing?: string }> {
  const w = await walkQcow2Chain(leaf);
  return { files: w.entries.map((e) => e.filename), ...(w.missing ? { missing: w.missing } : {}) };
}

describe('qcow2 header walk', () => {
  it('lists what qemu-img lists: relative, absolute and unformatted backing names, raw and qcow2 bases, a missing file', async () => {
    const d = (await createTempDir()).path;
    const f = (n: string) => path.join(d, n);
    await qemuImg('create', '-q', '-f', 'raw', f('base.raw'), '1M');
    await qemuImg('create', '-q', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', f('a'), '1M');
    await qemuImg('create', '-q', '-f', 'qcow2', '-b', f('a'), '-F', 'qcow2', f('b'), '1M');
    await qemuImg(
      'create',
      '-q',
      '-f',
      'qcow2',
      '-o',
      'compat=0.10',
      '-b',
      'b',
      '-F',
      'qcow2',
      f('c-v2'),
      '1M',
    );
    await qemuImg('create', '-q', '-f', 'qcow2', '-b', 'gone', '-F', 'qcow2', '-u', f('dangling'), '1M');
    // No backing format in the header (its extension renamed to one QEMU ignores): both walks probe.
    await qemuImg('create', '-q', '-f', 'qcow2', '-b', 'c-v2', '-F', 'qcow2', f('e'), '1M');
    const e = await fs.readFile(f('e'));
    const ext = e.indexOf(Buffer.from([0xe2, 0x79, 0x2a, 0xca]));
    expect(ext).toBeGreaterThan(0);
    e.writeUInt32BE(0x1b2c3d4e, ext);
    await fs.writeFile(f('e'), e);
    expect((await imageLink(f('e'), undefined)).backingFormat).toBeUndefined();
    await qemuImg('create', '-q', '-f', 'qcow2', f('alone'), '1M');

    const cases = ['base.raw', 'a', 'b', 'c-v2', 'dangling', 'e', 'alone'];
    for (const c of cases) expect(await walkChainFiles(f(c)), c).toEqual(await qemuImgFiles(f(c)));
    expect((await walkChainFiles(f('e'))).files).toEqual([f('e'), f('c-v2'), f('b'), f('a'), f('base.raw')]);
    expect(await walkChainFiles(f('dangling'))).toEqual({ files: [f('dangling')], missing: f('gone') });
    // What the headers say, field by field.
    expect(await imageLink(f('c-v2'), undefined)).toEqual({
      format: 'qcow2',
      backingFilename: 'b',
      backingFormat: 'qcow2',
    });
    expect(await imageLink(f('alone'), undefined)).toEqual({ format: 'qcow2' });
    expect(await imageLink(f('base.raw'), 'raw')).toEqual({ format: 'raw' });
    expect(await imageLink(f('base.raw'), undefined, true)).toEqual({ format: 'raw' });
    // A user that opens a qcow2 file raw does not hide its backing file: the header wins over the hint.
    expect(await imageLink(f('c-v2'), undefined, true)).toEqual({
      format: 'qcow2',
      backingFilename: 'b',
      backingFormat: 'qcow2',
    });
  });

  it('leaves to qemu-img what it does not parse: a raw file holding a qcow2 magic of an unknown version', async () => {
    const d = (await createTempDir()).path;
    const file = path.join(d, 'odd');
    const head = Buffer.alloc(4096);
    head.writeUInt32BE(0x514649fb, 0);
    head.writeUInt32BE(9, 4);
    await fs.writeFile(file, head);
    expect(parseQcow2Header(head)).toBeUndefined();
    // qemu-img rejects the version: the walk fails (the guard then refuses), it does not call it raw.
    await expect(walkChainFiles(file)).rejects.toThrow(/qemu-img|version/i);
    // Nor when its user opens it raw: a magic the reader refuses is qemu-img's to judge.
    await expect(walkChainFiles(file, true)).rejects.toThrow(/qemu-img|version/i);
  });
});
