// The repository's small files (written with storage's writeFileAtomic): read without following a symlink,
// removed durably.
import { constants } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fsyncDir } from '../storage/metadata';
import { errnoCode } from '../storage/errors';

/** Reads a file without following a symlink (ELOOP for one); null when it does not exist. */
export async function readFileNoFollow(file: string): Promise<string | null> {
  let fh;
  try {
    fh = await fs.open(file, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return null;
    throw e;
  }
  try {
    return await fh.readFile('utf8');
  } finally {
    await fh.close();
  }
}

/** Removes `file` (absent is fine) and makes the removal durable. */
export async function removeFileDurably(file: string): Promise<void> {
  await fs.rm(file, { force: true });
  await fsyncDir(path.dirname(file));
}
