// The one way livemerge runs qemu-img: execFile (no shell), arguments as an array, LC_ALL=C, and every
// failure (non-zero exit, a signal, a tool that cannot be run, output that does not parse) turned into
// QemuImgError carrying the argument vector, the exit code or signal, and qemu-img's stderr.
import { execFile } from 'node:child_process';
import { z } from 'zod';
import type { Format } from '../schemas/volume';

/** qemu-img failed; `stderr` is what it said (e.g. "Failed to get shared \"write\" lock"). */
export class QemuImgError extends Error {
  override readonly name = 'QemuImgError';
  readonly code = 'QEMU_IMG_FAILED' as const;
  constructor(
    readonly args: readonly string[],
    readonly exitCode: number | null,
    readonly stderr: string,
    detail?: string,
    options?: { cause?: unknown },
    readonly signal: NodeJS.Signals | null = null,
  ) {
    const how = exitCode !== null ? ` (exit ${exitCode})` : signal ? ` (signal ${signal})` : '';
    super(`qemu-img ${args.join(' ')} failed${how}: ${detail ?? (stderr.trim() || 'no stderr')}`, options);
  }
}

export interface RunOptions {
  /** Binary to run (default: $LIVEMERGE_QEMU_IMG or `qemu-img` from PATH). */
  binary?: string;
  /** Kill qemu-img after this many ms (default: no limit; a commit of a large volume takes long). */
  timeoutMs?: number;
  cwd?: string;
  /** Abort: the running qemu-img is killed and the call rejects. */
  signal?: AbortSignal;
  /** Called with the argument vector before each invocation (tests, audit, logging). */
  onCommand?: (args: readonly string[]) => void;
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

/** Header and metadata reads and writes finish in seconds: they get a limit unless the caller sets one. */
const SHORT: RunOptions = { timeoutMs: 10 * 60_000 };

export function runQemuImg(args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  opts.onCommand?.(args);
  return new Promise((resolve, reject) => {
    execFile(
      opts.binary ?? process.env.LIVEMERGE_QEMU_IMG ?? 'qemu-img',
      [...args],
      {
        shell: false,
        timeout: opts.timeoutMs ?? 0,
        signal: opts.signal,
        maxBuffer: 64 * 1024 * 1024,
        cwd: opts.cwd,
        env: { ...process.env, LC_ALL: 'C' },
      },
      (err, stdout, stderr) => {
        if (!err) {
          resolve({ stdout, stderr });
          return;
        }
        const code = typeof err.code === 'number' ? err.code : null;
        const signal = (err.signal as NodeJS.Signals | null | undefined) ?? null;
        const detail =
          typeof err.code === 'string'
            ? `${err.code}: ${err.message}`
            : err.killed
              ? `killed (${err.signal ?? 'timeout'})`
              : undefined;
        reject(new QemuImgError(args, code, stderr, detail, { cause: err }, signal));
      },
    );
  });
}

export interface CreateImageArgs {
  path: string;
  format: Format;
  /** Virtual size in bytes. */
  size: number;
  /** Backing file as written into the header (a relative name is resolved against the image's directory). */
  backing?: { file: string; format: Format };
  /** qcow2 -o options, e.g. { compat: '1.1' }. */
  options?: Record<string, string>;
}

export async function qemuImgCreate(a: CreateImageArgs, opts: RunOptions = {}): Promise<void> {
  const args = ['create', '-q', '-f', a.format];
  if (a.backing) args.push('-b', a.backing.file, '-F', a.backing.format);
  const o = Object.entries(a.options ?? {});
  if (o.length > 0) args.push('-o', o.map(([k, v]) => `${k}=${v}`).join(','));
  args.push(a.path, String(a.size));
  await runQemuImg(args, { ...SHORT, ...opts });
}

/** `qemu-img rebase -u`: rewrites only the backing reference in the header (no data copied). */
export async function qemuImgRebaseUnsafe(
  path: string,
  backing: { file: string; format: Format } | null,
  opts: RunOptions = {},
): Promise<void> {
  const args = ['rebase', '-q', '-u', '-f', 'qcow2', '-b', backing ? backing.file : ''];
  if (backing) args.push('-F', backing.format);
  args.push(path);
  await runQemuImg(args, { ...SHORT, ...opts });
}

// Shape of `qemu-img info --output=json` (QAPI ImageInfo; checked against qemu 7.2 output).
const BitmapSchema = z.object({
  name: z.string(),
  granularity: z.number(),
  flags: z.array(z.string()),
});
export type Qcow2Bitmap = z.infer<typeof BitmapSchema>;

export const ImageInfoSchema = z.looseObject({
  filename: z.string(),
  format: z.string(),
  'virtual-size': z.number(),
  'actual-size': z.number().optional(),
  'cluster-size': z.number().optional(),
  'dirty-flag': z.boolean().optional(),
  'backing-filename': z.string().optional(),
  'full-backing-filename': z.string().optional(),
  'backing-filename-format': z.string().optional(),
  'format-specific': z
    .looseObject({
      type: z.string(),
      data: z
        .looseObject({
          corrupt: z.boolean().optional(),
          bitmaps: z.array(BitmapSchema).optional(),
        })
        .optional(),
    })
    .optional(),
});
export type ImageInfo = z.infer<typeof ImageInfoSchema>;

export interface InfoOptions extends RunOptions {
  /** Follow the backing chain (`--backing-chain`); the result is leaf first. */
  backingChain?: boolean;
  /** `-U` (force share): read headers of images that a running VM holds open. Default true. */
  forceShare?: boolean;
  /** Pass `-f <format>` instead of probing the top image. */
  format?: Format;
}

function parseJson(args: readonly string[], stdout: string, stderr: string): unknown {
  try {
    return JSON.parse(stdout);
  } catch (e) {
    throw new QemuImgError(args, 0, stderr, 'output is not JSON', { cause: e });
  }
}

/** `qemu-img info --output=json`. With backingChain the array is leaf first; otherwise one element. */
export async function qemuImgInfo(path: string, opts: InfoOptions = {}): Promise<ImageInfo[]> {
  const args = ['info', '--output=json'];
  if (opts.backingChain) args.push('--backing-chain');
  if (opts.forceShare ?? true) args.push('-U');
  if (opts.format) args.push('-f', opts.format);
  args.push(path);
  const { stdout, stderr } = await runQemuImg(args, { ...SHORT, ...opts });
  const json = parseJson(args, stdout, stderr);
  const schema = opts.backingChain ? z.array(ImageInfoSchema) : ImageInfoSchema;
  const r = schema.safeParse(json);
  if (!r.success)
    throw new QemuImgError(args, 0, stderr, `unexpected output shape: ${z.prettifyError(r.error)}`);
  return Array.isArray(r.data) ? r.data : [r.data];
}

/** What the cold merge reads of ONE volume's header (qemu-img info opens it without its backing chain). */
export interface ImageHeader {
  format: string;
  virtualSize: number;
  /** Backing reference exactly as stored in the header (null: no backing file). */
  backingFile: string | null;
  /** Backing format stored in the header (`-F`), null when none is recorded. */
  backingFormat: string | null;
  bitmaps: Qcow2Bitmap[];
}

/** `qemu-img info --output=json -U -f <format> <file>`: a missing backing file does not fail it. */
export async function imageHeader(file: string, format: Format, opts: RunOptions = {}): Promise<ImageHeader> {
  const [i] = await qemuImgInfo(file, { ...opts, format });
  if (!i) throw new QemuImgError(['info', file], 0, '', 'no image in the output');
  return {
    format: i.format,
    virtualSize: i['virtual-size'],
    backingFile: i['backing-filename'] ?? null,
    backingFormat: i['backing-filename-format'] ?? null,
    bitmaps: i['format-specific']?.data?.bitmaps ?? [],
  };
}
