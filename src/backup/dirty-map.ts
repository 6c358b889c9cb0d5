// The map of a persistent dirty bitmap, read the way a backup application reads it: the image is
// exported read-only over NBD by a short-lived qemu-storage-daemon with the bitmap as a meta
// context, and `nbdinfo --json --map=qemu:dirty-bitmap:NAME` lists the dirty and clean ranges.
// (qemu-img has no command that prints a bitmap's bits.)
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import type { Extent } from './types';
import { mergeExtents } from './extents';
import { startStorageDaemon } from './storage-daemon';

/** nbdinfo/nbdcopy failed; `stderr` is what it said. */
export class NbdToolError extends Error {
  override readonly name = 'NbdToolError';
  readonly code = 'NBD_TOOL_FAILED' as const;
  constructor(
    readonly tool: string,
    readonly args: readonly string[],
    readonly exitCode: number | null,
    readonly stderr: string,
    detail?: string,
    options?: { cause?: unknown },
  ) {
    super(`${tool} ${args.join(' ')} failed: ${detail ?? (stderr.trim() || `exit ${exitCode}`)}`, options);
  }
}

export function runNbdTool(
  tool: 'nbdinfo' | 'nbdcopy',
  args: readonly string[],
  signal?: AbortSignal,
): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      tool,
      [...args],
      { maxBuffer: 64 * 1024 * 1024, signal, env: { ...process.env, LC_ALL: 'C' } },
      (err, stdout, stderr) => {
        if (!err) return resolve(stdout);
        const code = typeof err.code === 'number' ? err.code : null;
        reject(
          new NbdToolError(tool, args, code, stderr, code === null ? err.message : undefined, { cause: err }),
        );
      },
    );
  });
}

export interface MapExtent extends Extent {
  dirty: boolean;
}

const NbdMap = z.array(z.looseObject({ offset: z.number(), length: z.number(), type: z.number() }));

/** Reads `qemu:dirty-bitmap:NAME` over an NBD URI: every range, dirty or clean (type bit 0 = dirty). */
export async function readNbdDirtyMap(
  uri: string,
  bitmap: string,
  signal?: AbortSignal,
): Promise<MapExtent[]> {
  const args = ['--json', `--map=qemu:dirty-bitmap:${bitmap}`, uri];
  const out = await runNbdTool('nbdinfo', args, signal);
  let json: unknown;
  try {
    json = JSON.parse(out);
  } catch (e) {
    throw new NbdToolError('nbdinfo', args, 0, '', 'output is not JSON', { cause: e });
  }
  const r = NbdMap.safeParse(json);
  if (!r.success)
    throw new NbdToolError('nbdinfo', args, 0, '', `unexpected output: ${z.prettifyError(r.error)}`);
  return r.data.map((e) => ({ offset: e.offset, length: e.length, dirty: (e.type & 1) === 1 }));
}

/**
 * The maps of `bitmaps` of the qcow2 `file` (read-only; its backing chain is opened read-only too).
 * The daemon is gone before this returns, also on failure.
 */
export async function readDirtyMaps(
  file: string,
  bitmaps: readonly string[],
  opts: { signal?: AbortSignal } = {},
): Promise<Record<string, MapExtent[]>> {
  const runDir = await fs.mkdtemp(path.join(os.tmpdir(), 'livemerge-map-'));
  const nbdSock = path.join(runDir, 'nbd.sock');
  try {
    const daemon = await startStorageDaemon({
      runDir,
      signal: opts.signal,
      args: [
        '--blockdev',
        `driver=file,node-name=f,filename=${file},read-only=on`,
        '--blockdev',
        'driver=qcow2,node-name=img,file=f,read-only=on',
        '--nbd-server',
        `addr.type=unix,addr.path=${nbdSock}`,
        '--export',
        [
          'type=nbd,id=e,node-name=img,name=img,writable=off',
          ...bitmaps.map((b, i) => `bitmaps.${i}=${b}`),
        ].join(','),
      ],
    });
    try {
      const maps: Record<string, MapExtent[]> = {};
      for (const b of bitmaps)
        maps[b] = await readNbdDirtyMap(`nbd+unix:///img?socket=${nbdSock}`, b, opts.signal);
      return maps;
    } finally {
      await daemon.stop();
    }
  } finally {
    await fs.rm(runDir, { recursive: true, force: true });
  }
}

/** The dirty extents (merged) of one bitmap of `file`. */
export async function dirtyExtents(
  file: string,
  bitmap: string,
  opts: { signal?: AbortSignal } = {},
): Promise<Extent[]> {
  const maps = await readDirtyMaps(file, [bitmap], opts);
  return mergeExtents((maps[bitmap] ?? []).filter((e) => e.dirty));
}
