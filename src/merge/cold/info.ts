// `qemu-img info --output=json -U -f <fmt> <file>`: the header of ONE volume (qemu-img info opens
// the image without its backing chain, so a missing backing file does not fail it).
import { z } from 'zod';
import type { Format } from '../../schemas/volume';
import { QemuToolError } from './errors';
import { runQemuImg, type QemuRunOptions } from './exec';

// QAPI ImageInfo / Qcow2BitmapInfo as printed by qemu 7.2. Flags: 'in-use' (inconsistent: the
// image was not closed cleanly while the bitmap was loaded), 'auto' (enabled, recording writes).
const BitmapInfoSchema = z.object({
  name: z.string(),
  granularity: z.number().int().positive(),
  flags: z.array(z.string()),
});

const InfoSchema = z.looseObject({
  filename: z.string(),
  format: z.string(),
  'virtual-size': z.number(),
  'backing-filename': z.string().optional(),
  'backing-filename-format': z.string().optional(),
  'format-specific': z
    .looseObject({
      type: z.string(),
      data: z.looseObject({ bitmaps: z.array(BitmapInfoSchema).optional() }).optional(),
    })
    .optional(),
});

export interface ImageHeader {
  format: string;
  virtualSize: number;
  /** Backing reference exactly as stored in the header (null: no backing file). */
  backingFile: string | null;
  /** Backing format stored in the header (`-F`), null when none is recorded. */
  backingFormat: string | null;
  bitmaps: Array<z.infer<typeof BitmapInfoSchema>>;
}

export async function imageHeader(
  file: string,
  format: Format,
  opts: QemuRunOptions = {},
): Promise<ImageHeader> {
  const args = ['info', '--output=json', '-U', '-f', format, file];
  const { stdout, stderr } = await runQemuImg(args, opts);
  let json: unknown;
  try {
    json = JSON.parse(stdout);
  } catch (e) {
    throw new QemuToolError('qemu-img', args, 0, null, stderr, 'output is not JSON', { cause: e });
  }
  const r = InfoSchema.safeParse(json);
  if (!r.success) {
    throw new QemuToolError(
      'qemu-img',
      args,
      0,
      null,
      stderr,
      `unexpected output: ${z.prettifyError(r.error)}`,
    );
  }
  const i = r.data;
  return {
    format: i.format,
    virtualSize: i['virtual-size'],
    backingFile: i['backing-filename'] ?? null,
    backingFormat: i['backing-filename-format'] ?? null,
    bitmaps: i['format-specific']?.data?.bitmaps ?? [],
  };
}
