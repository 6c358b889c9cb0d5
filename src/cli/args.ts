// Argument validation: every id is checked with the workflow input schemas before anything starts, and a
// bad value is a UsageError (exit 2).
import type { z } from 'zod';
import { Bandwidth, Direction, Uuid } from '../schemas/inputs';
import { UsageError } from './output';

/** A canonical lower-case UUID (the schemas' rule), or exit 2 naming the option. */
export function uuidArg(option: string, value: string): string {
  const r = Uuid.safeParse(value);
  if (!r.success)
    throw new UsageError(`${option} must be a canonical lower-case UUID, got ${JSON.stringify(value)}`);
  return r.data;
}

export function directionArg(value: string | undefined): z.infer<typeof Direction> | undefined {
  if (value === undefined) return undefined;
  const r = Direction.safeParse(value);
  if (!r.success)
    throw new UsageError(`--direction must be backward or forward, got ${JSON.stringify(value)}`);
  return r.data;
}

const SIZE_RE = /^(\d+)\s*([kmgt]?)(i?b)?$/i;
const SHIFT: Record<string, number> = { '': 0, k: 10, m: 20, g: 30, t: 40 };

/** `65536`, `64k`, `64M`, `1GiB`: bytes (binary multiples). */
export function parseBytes(option: string, value: string): number {
  const m = SIZE_RE.exec(value.trim());
  const n = m ? Number(m[1]) * 2 ** (SHIFT[(m[2] ?? '').toLowerCase()] ?? 0) : NaN;
  if (!Number.isSafeInteger(n) || n <= 0)
    throw new UsageError(
      `${option} must be a positive size such as 65536, 64k or 64M, got ${JSON.stringify(value)}`,
    );
  return n;
}

/** --bandwidth: bytes per second (suffixes k/M/G allowed), as the Bandwidth schema requires. */
export function bandwidthArg(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = parseBytes('--bandwidth', value);
  const r = Bandwidth.safeParse(n);
  if (!r.success) throw new UsageError(`--bandwidth: ${r.error.issues[0]?.message ?? 'invalid'}`);
  return r.data;
}

/** A disk size for `vm create`: at least 1 MiB, a multiple of 512 bytes. */
export function diskSizeArg(value: string): number {
  const n = parseBytes('--size', value);
  if (n < 1 << 20 || n % 512 !== 0)
    throw new UsageError(
      `--size must be at least 1M and a multiple of 512 bytes, got ${JSON.stringify(value)}`,
    );
  return n;
}

export function intArg(option: string, value: string, min: number, max: number): number {
  const n = /^\d+$/.test(value) ? Number(value) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max)
    throw new UsageError(`${option} must be an integer from ${min} to ${max}, got ${JSON.stringify(value)}`);
  return n;
}

/** Parses `input` with a workflow input schema; a rejected input is exit 2 and nothing is started. */
export function validInput<S extends z.ZodType>(schema: S, input: unknown): z.output<S> {
  const r = schema.safeParse(input);
  if (!r.success) {
    const issues = r.error.issues.map((i) => `${i.path.join('.') || '(input)'}: ${i.message}`);
    throw new UsageError(`invalid request: ${issues.join('; ')}`);
  }
  return r.data;
}

const VM_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.+-]{0,62}$/;
/** A VM reference is a libvirt name or a canonical UUID; nothing else reaches libvirt. */
export function vmRefArg(value: string): string {
  if (Uuid.safeParse(value).success || VM_NAME_RE.test(value)) return value;
  throw new UsageError(
    `--vm must be a VM name (1-63 characters of [A-Za-z0-9_.+-]) or a canonical lower-case UUID, got ${JSON.stringify(value)}`,
  );
}

export function vmNameArg(value: string): string {
  if (!VM_NAME_RE.test(value) || Uuid.safeParse(value).success)
    throw new UsageError(
      `--name must be 1-63 characters of [A-Za-z0-9_.+-] (and not a UUID), got ${JSON.stringify(value)}`,
    );
  return value;
}
