// Shared helpers for tests that work on qcow2/raw image files with the QEMU tools: patterns written
// and read with qemu-io, raw dumps and comparisons with qemu-img, dirty-bitmap maps through
// an NBD export + nbdinfo. Every tool runs through execFile/spawn (no shell).
import { execFile, spawn, type ChildProcess, type ChildProcessWithoutNullStreams } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { readDirtyMaps } from '../../src/backup/dirty-map';

export type ImgFormat = 'raw' | 'qcow2';

export interface RunOutcome {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs a tool and resolves with its outcome whatever the exit code (callers decide). */
export function runTool(cmd: string, args: readonly string[]): Promise<RunOutcome> {
  return new Promise((resolve, reject) => {
    execFile(
      cmd,
      [...args],
      { maxBuffer: 64 * 1024 * 1024, env: { ...process.env, LC_ALL: 'C' } },
      (err, stdout, stderr) => {
        if (err && typeof err.code !== 'number' && !err.signal) {
          reject(new Error(`${cmd} could not run: ${err.message}`, { cause: err }));
          return;
        }
        const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
        resolve({ code, signal: err?.signal ?? null, stdout, stderr });
      },
    );
  });
}

/** Runs a tool; throws with the whole argument vector and stderr unless it exits 0. */
export async function runOk(cmd: string, args: readonly string[]): Promise<string> {
  const r = await runTool(cmd, args);
  if (r.code !== 0)
    throw new Error(`${cmd} ${args.join(' ')}: exit ${r.code ?? r.signal}: ${r.stderr.trim()}`);
  return r.stdout;
}

export async function makeTmpDir(prefix = 'livemerge-cold-'): Promise<string> {
  return fs.realpath(await fs.mkdtemp(path.join(os.tmpdir(), prefix)));
}

export interface Pattern {
  /** Byte value written (qemu-io -P); 0 for a hole/zeroes when reading. */
  byte: number;
  offset: number;
  length: number;
}

const hex = (b: number): string => `0x${b.toString(16).padStart(2, '0')}`;

/** `qemu-io -f fmt -c 'write -P byte offset length' file` for each pattern, in one process. */
export async function writePatterns(
  file: string,
  format: ImgFormat,
  patterns: readonly Pattern[],
): Promise<void> {
  const cmds = patterns.flatMap((p) => ['-c', `write -P ${hex(p.byte)} ${p.offset} ${p.length}`]);
  const out = await runOk('qemu-io', ['-f', format, ...cmds, file]);
  if (/error|failed/i.test(out)) throw new Error(`qemu-io write on ${file}: ${out}`);
}

export function writePattern(file: string, format: ImgFormat, p: Pattern): Promise<void> {
  return writePatterns(file, format, [p]);
}

/**
 * Reads every segment read-only (`qemu-io -r -c 'read -P byte offset length'`) and throws, naming
 * the segments that differ, unless all of them read back as expected.
 */
export async function readPatterns(
  file: string,
  format: ImgFormat,
  patterns: readonly Pattern[],
): Promise<void> {
  const cmds = patterns.flatMap((p) => ['-c', `read -P ${hex(p.byte)} ${p.offset} ${p.length}`]);
  const r = await runTool('qemu-io', ['-r', '-f', format, ...cmds, file]);
  const out = `${r.stdout}\n${r.stderr}`;
  if (r.code !== 0 || /Pattern verification failed|error/i.test(out)) {
    throw new Error(`pattern check of ${file} failed (exit ${r.code}):\n${out}`);
  }
}

export function readPattern(file: string, format: ImgFormat, p: Pattern): Promise<void> {
  return readPatterns(file, format, [p]);
}

export interface ImgInfo {
  filename: string;
  format: string;
  'virtual-size': number;
  'backing-filename'?: string;
  'backing-filename-format'?: string;
  'format-specific'?: {
    type: string;
    data?: { bitmaps?: Array<{ name: string; granularity: number; flags: string[] }> };
  };
}

/** `qemu-img info --output=json -U [-f fmt] file`; without a format qemu-img probes it. */
export async function imageInfo(file: string, format?: ImgFormat): Promise<ImgInfo> {
  return JSON.parse(
    await runOk('qemu-img', ['info', '--output=json', '-U', ...(format ? ['-f', format] : []), file]),
  ) as ImgInfo;
}

/** File names (basenames) of the chain qemu-img follows from `leaf`, leaf first. */
export async function backingChainFiles(leaf: string, format: ImgFormat): Promise<string[]> {
  const out = await runOk('qemu-img', ['info', '--output=json', '-U', '--backing-chain', '-f', format, leaf]);
  return (JSON.parse(out) as ImgInfo[]).map((i) => path.basename(i.filename));
}

/** Guest view of `file` (with its backing chain) flattened into a raw file. */
export async function dumpRaw(file: string, format: ImgFormat, out: string): Promise<void> {
  await runOk('qemu-img', ['convert', '-U', '-f', format, '-O', 'raw', file, out]);
}

/** `qemu-img compare`: true when the guest views are identical (exit 0), false when they differ (1). */
export async function sameGuestView(a: string, fa: ImgFormat, b: string, fb: ImgFormat): Promise<boolean> {
  const r = await runTool('qemu-img', ['compare', '-U', '-f', fa, '-F', fb, a, b]);
  if (r.code === 0) return true;
  if (r.code === 1) return false;
  throw new Error(`qemu-img compare ${a} ${b}: exit ${r.code ?? r.signal}: ${r.stderr}`);
}

export async function sha256(file: string): Promise<string> {
  return (await runOk('sha256sum', [file])).split(' ')[0] ?? '';
}

// ---- dirty bitmaps over NBD --------------------------------------------------------------------

export interface Extent {
  offset: number;
  length: number;
  dirty: boolean;
}

/**
 * Each bitmap's map of `file` (dirty and clean ranges), read over NBD as a backup application reads
 * it: the production reader (src/backup/dirty-map.ts, a read-only qemu-storage-daemon export and
 * `nbdinfo --json --map=qemu:dirty-bitmap:NAME`). Its daemon is gone when this returns, also on failure.
 */
export async function dirtyMaps(file: string, bitmaps: readonly string[]): Promise<Record<string, Extent[]>> {
  return readDirtyMaps(file, bitmaps);
}

/** Nothing to stop any more (dirtyMaps leaves no server running); kept for the suites' afterEach. */
export async function stopAllNbdServers(): Promise<void> {}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/** The parts of `ranges` that no dirty extent covers (empty: every range is covered). */
export function uncovered(
  extents: readonly Extent[],
  ranges: ReadonlyArray<{ offset: number; length: number }>,
): Pattern[] {
  const dirty = extents.filter((e) => e.dirty);
  const missing: Pattern[] = [];
  for (const r of ranges) {
    let pos = r.offset;
    const end = r.offset + r.length;
    while (pos < end) {
      const hit = dirty.find((e) => e.offset <= pos && pos < e.offset + e.length);
      if (hit) {
        pos = hit.offset + hit.length;
        continue;
      }
      const next = dirty.filter((e) => e.offset > pos).reduce((m, e) => Math.min(m, e.offset), end);
      missing.push({ byte: 0, offset: pos, length: Math.min(next, end) - pos });
      pos = next;
    }
  }
  return missing;
}

/**
 * Simulates a crash of a QEMU process that had `file` open for writing: qemu-io opens it read-write
 * (persistent bitmaps are flagged in-use on open), answers one read, and is SIGKILLed, so the
 * bitmaps stay 'in-use' (inconsistent), as after a crash inside qemu-img or of a VM.
 */
export async function crashWhileOpen(file: string): Promise<void> {
  const { child, gone } = await openInQemuIo(file, 'qcow2');
  child.kill('SIGKILL');
  await gone;
}

/**
 * Holds `file` open read-write in a qemu-io process (like a running VM would: image locks taken on
 * it and its backing chain) until close() quits it cleanly.
 */
export async function holdOpen(file: string, format: ImgFormat): Promise<{ close: () => Promise<void> }> {
  const { child, gone } = await openInQemuIo(file, format);
  return {
    close: async () => {
      child.stdin.end('quit\n');
      await gone;
    },
  };
}

/** A qemu-io process with `file` open read-write, once it has answered one read (so the open is done). */
async function openInQemuIo(
  file: string,
  format: ImgFormat,
): Promise<{ child: ChildProcessWithoutNullStreams; gone: Promise<void> }> {
  const child = spawn('qemu-io', ['-f', format, file], { stdio: ['pipe', 'pipe', 'pipe'] });
  const gone = exited(child);
  try {
    await new Promise<void>((resolve, reject) => {
      let out = '';
      child.once('error', reject);
      child.once('exit', (c) => reject(new Error(`qemu-io exited early (${c}): ${out}`)));
      child.stdout.setEncoding('utf8').on('data', (d: string) => {
        out += d;
        if (/read \d+\/\d+ bytes/.test(out)) resolve();
      });
      child.stdin.write('read 0 512\n');
    });
  } catch (e) {
    child.kill('SIGKILL');
    await gone;
    throw e;
  }
  return { child, gone };
}

/** A `qemu-img commit` whose arguments name `file` is running on this machine (read from /proc). */
export async function qemuImgCommitRunsOn(file: string): Promise<boolean> {
  for (const pid of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const cmd = await fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmd.startsWith('qemu-img\0commit') && cmd.includes(file)) return true;
  }
  return false;
}
