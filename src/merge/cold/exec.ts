// Runs qemu-img without a shell (execFile, argv array) and turns every failure into QemuToolError.
import { execFile } from 'node:child_process';
import { QemuToolError } from './errors';

export interface QemuRunOptions {
  /** qemu-img binary (default: $LIVEMERGE_QEMU_IMG, else `qemu-img` from PATH). */
  qemuImg?: string;
  /** Kill the tool after this many ms (default: no limit; a commit of a large volume takes long). */
  timeoutMs?: number;
  /** Abort: the running tool is killed and the call rejects. */
  signal?: AbortSignal;
  /** Called with the argument vector before each qemu-img invocation (tests, audit, logging). */
  onCommand?: (args: readonly string[]) => void;
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

export function runQemuImg(args: readonly string[], opts: QemuRunOptions = {}): Promise<RunResult> {
  const tool = opts.qemuImg ?? process.env.LIVEMERGE_QEMU_IMG ?? 'qemu-img';
  opts.onCommand?.(args);
  return new Promise((resolve, reject) => {
    execFile(
      tool,
      [...args],
      {
        shell: false,
        timeout: opts.timeoutMs ?? 0,
        signal: opts.signal,
        maxBuffer: 64 * 1024 * 1024,
        env: { ...process.env, LC_ALL: 'C' },
      },
      (err, stdout, stderr) => {
        if (!err) {
          resolve({ stdout, stderr });
          return;
        }
        const exitCode = typeof err.code === 'number' ? err.code : null;
        const signal = (err.signal as NodeJS.Signals | null | undefined) ?? null;
        const detail = typeof err.code === 'string' ? `${err.code}: ${err.message}` : undefined;
        reject(new QemuToolError(tool, args, exitCode, signal, stderr, detail, { cause: err }));
      },
    );
  });
}
