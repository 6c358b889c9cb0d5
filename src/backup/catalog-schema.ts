// The zod shape of `<repository>/<vmId>/backups.json` as stored (disk files relative to `<repository>/<vmId>`).
// The TypeScript words stay in types.ts; the assertion below keeps the two from drifting apart.
import { z } from 'zod';
import { isUuid } from '../common/ids';
import type { BackupCatalog } from './types';

const uuid = z.string().refine(isUuid, 'must be a canonical lower-case UUID');
const count = z.number().int().nonnegative();

export const BackupDiskSchema = z
  .object({
    target: z.string().min(1),
    imageId: uuid,
    mode: z.enum(['full', 'incremental']),
    reason: z.string().optional(),
    changedBytes: count,
    copiedBytes: count,
    extents: count,
    file: z.string().min(1),
    capacity: z.number().int().positive(),
  })
  .strict();

export const BackupRecordSchema = z
  .object({
    backupId: uuid,
    createdAt: z.iso.datetime({ offset: true }),
    parentBackupId: uuid.nullable(),
    disks: z.array(BackupDiskSchema).min(1),
  })
  .strict();

export const BackupCatalogSchema = z
  .object({
    version: z.literal(1),
    vmId: uuid,
    backups: z.array(BackupRecordSchema),
  })
  .strict();

// Compile-time: the schema's output is exactly the BackupCatalog of types.ts.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const schemaMatchesTypes: Same<z.infer<typeof BackupCatalogSchema>, BackupCatalog> = true;
void schemaMatchesTypes;
