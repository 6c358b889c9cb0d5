// Typed wrapper around the qemu-img binary: execFile (no shell), arguments as an array, every
// failure turned into QemuImgError carrying the arguments, the exit code and stderr.
import { execFile } from 'node:child_process';
import { z } from 'zod';
import type { Format } from '../schemas/volume';
import { QemuImgError } from './errors';

export interface RunOptions {
  /** Binary to run (default: $LIVEMERGE_QEMU_IMG or `qemu-img` from PATH). */
  binary?: string;
  timeoutMs?: number;
  cwd?: string;
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

function qemuImgBinary(opts: RunOptions): string {
  return opts.binary ?? process.env.LIVEMERGE_QEMU_IMG ?? 'qemu-img';
}

export function runQemuImg(args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    execFile(
      qemuImgBinary(opts),
      [...args],
      {
        shell: false,
        timeout: opts.timeoutMs ?? 10 * 60_000,
        maxBuffer: 64 * 1024 * 1024,
        cwd: opts.cwd,
        env: { ...process.env, LC_ALL: 'C' },
      },
      (err, stdout, stderr) => {
        if (err) {
          const code = typeof err.code === 'number' ? err.code : null;
          const detail =
            typeof err.code === 'string'
              ? `${err.code}: ${err.message}`
              : err.killed
                ? `killed (${err.signal ?? 'timeout'})`
                : undefined;
          reject(new QemuImgError(args, code, stderr, detail, { cause: err }));
          return;
        }
        resolve({ stdout, stderr });
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
  await runQemuImg(args, opts);
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
  await runQemuImg(args, opts);
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
  const { stdout, stderr } = await runQemuImg(args, opts);
  const json = parseJson(args, stdout, stderr);
  const schema = opts.backingChain ? z.array(ImageInfoSchema) : ImageInfoSchema;
  const r = schema.safeParse(json);
  if (!r.success)
    throw new QemuImgError(args, 0, stderr, `unexpected output shape: ${z.prettifyError(r.error)}`);
  return Array.isArray(r.data) ? r.data : [r.data];
}
