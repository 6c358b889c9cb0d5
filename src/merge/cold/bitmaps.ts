// Persistent dirty bitmaps of qcow2 volumes: inspection and the three qemu-img operations the
// cold merges need (add, enable, merge from another file). A raw volume has no bitmaps.
import { runQemuImg, type RunOptions } from '../../qemu/qemu-img';
import type { Format } from '../../schemas/volume';
import { imageHeader } from '../../qemu/qemu-img';

export interface PersistentBitmap {
  name: string;
  granularity: number;
  /** Raw qcow2 flags as qemu-img reports them. */
  flags: string[];
  /** 'auto': the bitmap records writes (RECORDING in libvirt's words). */
  enabled: boolean;
  /** 'in-use': the image was not closed cleanly while the bitmap was loaded; it cannot be used. */
  inconsistent: boolean;
}

/** Bitmaps of one volume from `qemu-img info --output=json -U` (format-specific.data.bitmaps). */
export async function listBitmaps(
  file: string,
  format: Format = 'qcow2',
  opts: RunOptions = {},
): Promise<PersistentBitmap[]> {
  if (format === 'raw') return [];
  return toPersistentBitmaps((await imageHeader(file, format, opts)).bitmaps);
}

export function toPersistentBitmaps(
  raw: ReadonlyArray<{ name: string; granularity: number; flags: readonly string[] }>,
): PersistentBitmap[] {
  return raw.map((b) => ({
    name: b.name,
    granularity: b.granularity,
    flags: [...b.flags],
    enabled: b.flags.includes('auto'),
    inconsistent: b.flags.includes('in-use'),
  }));
}

/** `qemu-img bitmap --add -g G --enable -f qcow2 FILE NAME` (fails if the bitmap exists). */
export async function addBitmap(
  file: string,
  name: string,
  granularity: number,
  opts: RunOptions = {},
): Promise<void> {
  await runQemuImg(
    ['bitmap', '--add', '-g', String(granularity), '--enable', '-f', 'qcow2', file, name],
    opts,
  );
}

/** `qemu-img bitmap --enable -f qcow2 FILE NAME` (idempotent). */
export async function enableBitmap(file: string, name: string, opts: RunOptions = {}): Promise<void> {
  await runQemuImg(['bitmap', '--enable', '-f', 'qcow2', file, name], opts);
}

/**
 * `qemu-img bitmap --merge NAME -b SOURCE -F qcow2 -f qcow2 TARGET NAME`: TARGET.NAME |= SOURCE.NAME.
 * A bitwise OR, so running it again is harmless. SOURCE is opened read-only.
 */
export async function mergeBitmapFrom(
  target: string,
  source: string,
  name: string,
  opts: RunOptions = {},
): Promise<void> {
  await runQemuImg(
    ['bitmap', '--merge', name, '-b', source, '-F', 'qcow2', '-f', 'qcow2', target, name],
    opts,
  );
}
