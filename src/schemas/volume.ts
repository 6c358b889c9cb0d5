// The words for volumes (DESIGN.md "Words", "Volume metadata"), defined once: the storage metadata schema,
// the activity contracts, the workflow results and the CLI all use these.
// Pure: no Node built-ins, safe inside the workflow sandbox (workflows import the types only).
import { z } from 'zod';
import { Uuid } from './inputs';

/** The image format of a volume file. */
export const Format = z.enum(['raw', 'qcow2']);
export type Format = z.infer<typeof Format>;

/** ILLEGAL: the volume's data is no longer valid on its own (merged away, or its removal has begun). */
export const Legality = z.enum(['LEGAL', 'ILLEGAL']);
export type Legality = z.infer<typeof Legality>;

/** Which volume: `<storage-root>/<storageDomainId>/images/<imageId>/<volumeId>`. */
export const VolumeRef = z.object({
  storageDomainId: Uuid,
  imageId: Uuid,
  volumeId: Uuid,
});
export type VolumeRef = z.infer<typeof VolumeRef>;

/** A volume's metadata (without the storage's bookkeeping fields) and the absolute path of its data file. */
export interface VolumeInfo extends VolumeRef {
  parentId: string | null;
  format: Format;
  legality: Legality;
  snapshotId: string | null;
  capacity: number;
  description: string;
  path: string;
}
