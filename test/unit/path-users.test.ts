// The one "which domains use this file" check fails closed: what it cannot classify throws PathCheckFailed.
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PathCheckFailed, findPathUsers } from '../../src/guard/path-users';

let tmp: string;
let file: string;
const disk = (src: string, backing = '<backingStore/>'): string =>
  `<domain type='qemu'><name>vm</name><devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='${src}'/>${backing}<target dev='vda'/></disk></devices></domain>`;

beforeEach(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'path-users-'));
  file = path.join(tmp, '0b9c6e1c-1d4f-4f61-8f3c-6b1d2f0a9e11');
  await fs.writeFile(file, '');
});
afterEach(() => fs.rm(tmp, { recursive: true, force: true }));

describe('findPathUsers', () => {
  it('finds a use by resolved path, live before persistent, and skips the excepted domain', async () => {
    const uses = await findPathUsers(
      [file],
      [
        { name: 'self', uuid: 'u1', live: disk(file) },
        {
          name: 'other',
          uuid: 'u2',
          live: disk(path.join(tmp, '.', path.basename(file))),
          inactive: disk(file),
        },
      ],
      { except: 'u1' },
    );
    expect(uses.map((u) => [u.domain.name, u.view])).toEqual([
      ['other', 'live'],
      ['other', 'persistent'],
    ]);
  });

  it('a file that is in no chain has no users; a missing chain file is compared by its path', async () => {
    expect(await findPathUsers([file], [{ name: 'vm', live: disk(path.join(tmp, 'gone.qcow2')) }])).toEqual(
      [],
    );
  });

  it('throws PathCheckFailed, naming what it could not check, for XML it cannot parse', async () => {
    const err = await findPathUsers([file], [{ name: 'broken', inactive: '<domain><devices>' }]).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(PathCheckFailed);
    expect((err as Error).message).toContain('domain broken');
    expect((err as Error).message).toContain(file);
  });

  it('throws PathCheckFailed when the domains cannot be read', async () => {
    await expect(
      findPathUsers([file], () => Promise.reject(new Error('libvirtd unreachable'))),
    ).rejects.toThrow(/could not be read: libvirtd unreachable/);
  });
});
