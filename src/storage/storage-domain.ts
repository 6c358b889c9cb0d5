// A storage domain on a shared directory (DESIGN.md "Words"):
//   <storageRoot>/<storageDomainId>/images/<imageId>/<volumeId>            raw or qcow2 data
//   <storageRoot>/<storageDomainId>/images/<imageId>/<volumeId>.meta.json  volume metadata
//   <storageRoot>/<storageDomainId>/images/<imageId>/.image.lock           image lock (lock.ts)
// Every metadata change is a read-modify-write under the image lock, so any number of processes on
// any number of hosts sharing the directory can change one image without losing an update.
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import { isDeepStrictEqual } from 'node:util';
import type { Format, Legality } from '../schemas/volume';
import {
  AlreadyExists,
  ChainAmbiguous,
  ChainBroken,
  DeletionRefused,
  ImageNotFound,
  InvalidStorageRequest,
  MetadataCorrupt,
  StorageDomainNotFound,
  VolumeNotFound,
  errnoCode,
} from './errors';
import { withLock, type LockOptions } from './lock';
import {
  IMMUTABLE_FIELDS,
  VolumeMetadataSchema,
  fsyncDir,
  readMetadataFile,
  writeMetadataFile,
  type VolumeMetadata,
} from './metadata';
import { DomainPaths, META_SUFFIX, validId } from './paths';
import { qemuImgCreate, type RunOptions } from '../qemu/qemu-img';

/** A volume as stored: its whole metadata (with the bookkeeping fields) and the absolute path of its data file. */
export interface StoredVolume extends VolumeMetadata {
  readonly path: string;
}

export interface StorageDomainOptions {
  lock?: LockOptions;
  qemuImg?: RunOptions;
  /** Failure injection only: awaited first thing while an image lock is held (`purpose` names the caller). */
  whileLocked?: (purpose: string) => Promise<void>;
}

export interface CreateImageInput {
  imageId?: string;
  /** Defaults to a random UUID. */
  volumeId?: string;
  format: Format;
  /** Virtual size in bytes. */
  capacity: number;
  description?: string;
}

export interface CreateVolumeInput {
  imageId: string;
  parentId: string;
  volumeId?: string;
  description?: string;
}

export interface ImageScan {
  volumes: StoredVolume[];
  /** Data files (named by a volume id) without a metadata file: a crash inside createVolume. */
  dataWithoutMetadata: string[];
  /** Volume ids whose metadata exists but whose data file does not. */
  metadataWithoutData: string[];
}

export type VolumeMutation = (current: VolumeMetadata) => VolumeMetadata | void;

const META_RE = /^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.meta\.json$/;
const VOLUME_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export class StorageDomain {
  private constructor(
    readonly paths: DomainPaths,
    private readonly opts: StorageDomainOptions,
  ) {}

  get id(): string {
    return this.paths.storageDomainId;
  }
  /** `<storageRoot>/<storageDomainId>` (storage root resolved with realpath). */
  get dir(): string {
    return this.paths.domainDir;
  }

  /** Creates the domain directory layout (idempotent) and opens it. */
  static async create(
    storageRoot: string,
    storageDomainId: string,
    opts: StorageDomainOptions = {},
  ): Promise<StorageDomain> {
    validId('storageDomainId', storageDomainId);
    await fs.mkdir(storageRoot, { recursive: true });
    const paths = new DomainPaths(await fs.realpath(storageRoot), storageDomainId);
    for (const dir of [paths.domainDir, paths.imagesDir]) {
      try {
        await fs.mkdir(dir);
      } catch (e) {
        if (errnoCode(e) !== 'EEXIST') throw e;
      }
      await paths.check(dir, 'dir'); // refuses a pre-planted symlink
    }
    return new StorageDomain(paths, opts);
  }

  static async open(
    storageRoot: string,
    storageDomainId: string,
    opts: StorageDomainOptions = {},
  ): Promise<StorageDomain> {
    validId('storageDomainId', storageDomainId);
    let root: string;
    try {
      root = await fs.realpath(storageRoot);
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') throw new StorageDomainNotFound(storageDomainId, storageRoot);
      throw e;
    }
    const paths = new DomainPaths(root, storageDomainId);
    if (!(await paths.check(paths.imagesDir, 'dir')))
      throw new StorageDomainNotFound(storageDomainId, paths.domainDir);
    return new StorageDomain(paths, opts);
  }

  volumePath(imageId: string, volumeId: string): string {
    return this.paths.volumePath(imageId, volumeId);
  }

  imageDir(imageId: string): string {
    return this.paths.imageDir(imageId);
  }

  async listImages(): Promise<string[]> {
    await this.paths.check(this.paths.imagesDir, 'dir');
    const names = await fs.readdir(this.paths.imagesDir);
    return names.filter((n) => VOLUME_RE.test(n)).sort();
  }

  /**
   * Runs `fn` under the image's cross-process lock. Not re-entrant: `fn` must not call the
   * locking methods of this class for the same image (use it for multi-step callers only).
   */
  async withImageLock<T>(imageId: string, fn: () => Promise<T>, purpose = 'withImageLock'): Promise<T> {
    const dir = this.paths.imageDir(imageId);
    if (!(await this.paths.check(dir, 'dir'))) throw new ImageNotFound(imageId);
    const whileLocked = this.opts.whileLocked;
    const locked = whileLocked ? async () => (await whileLocked(purpose), await fn()) : fn;
    return withLock(this.paths.lockPath(imageId), locked, {
      ...this.opts.lock,
      purpose: `${purpose} ${imageId}`,
    });
  }

  // ---- reads ---------------------------------------------------------------------------------

  /** Reads and validates one volume's metadata without locking; null when its metadata is absent. */
  async findVolume(imageId: string, volumeId: string): Promise<StoredVolume | null> {
    const metaPath = this.paths.metaPath(imageId, volumeId);
    const dataPath = this.paths.volumePath(imageId, volumeId);
    if (!(await this.paths.check(metaPath, 'file'))) return null;
    await this.paths.check(dataPath, 'file'); // a symlink planted as the data file is refused here
    const meta = await readMetadataFile(metaPath);
    if (meta === null) return null;
    if (meta.volumeId !== volumeId || meta.imageId !== imageId || meta.storageDomainId !== this.id) {
      throw new MetadataCorrupt(
        metaPath,
        `ids (${meta.storageDomainId}/${meta.imageId}/${meta.volumeId}) do not match its location`,
      );
    }
    return { ...meta, path: dataPath };
  }

  async readVolume(imageId: string, volumeId: string): Promise<StoredVolume> {
    const v = await this.findVolume(imageId, volumeId);
    if (v === null) throw new VolumeNotFound(imageId, volumeId);
    return v;
  }

  /** Every volume of the image that has metadata, oldest first. */
  async listVolumes(imageId: string): Promise<StoredVolume[]> {
    return (await this.scanImage(imageId)).volumes;
  }

  async scanImage(imageId: string): Promise<ImageScan> {
    const dir = this.paths.imageDir(imageId);
    if (!(await this.paths.check(dir, 'dir'))) throw new ImageNotFound(imageId);
    const names = new Set(await fs.readdir(dir));
    const volumes: StoredVolume[] = [];
    const metadataWithoutData: string[] = [];
    for (const name of names) {
      const m = META_RE.exec(name);
      if (!m) continue;
      const v = await this.findVolume(imageId, m[1]!);
      if (v === null) continue; // deleted meanwhile
      volumes.push(v);
      if (!names.has(v.volumeId)) metadataWithoutData.push(v.volumeId);
    }
    const dataWithoutMetadata = [...names]
      .filter((n) => VOLUME_RE.test(n) && !names.has(`${n}${META_SUFFIX}`))
      .sort();
    volumes.sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.volumeId.localeCompare(b.volumeId));
    return { volumes, dataWithoutMetadata, metadataWithoutData: metadataWithoutData.sort() };
  }

  /**
   * The chain ending at `leafVolumeId`, BASE FIRST. Without a leaf: the one LEGAL volume that no
   * other LEGAL volume names as parent (ChainAmbiguous when there are none or several).
   * ILLEGAL volumes on the way are included (callers decide; compareChains reports them).
   */
  async readChain(imageId: string, leafVolumeId?: string): Promise<StoredVolume[]> {
    return chainFrom(imageId, await this.listVolumes(imageId), leafVolumeId);
  }

  // ---- writes --------------------------------------------------------------------------------

  /** Creates a new image (directory) with its base volume (raw or qcow2, no parent). */
  async createImage(input: CreateImageInput): Promise<StoredVolume> {
    const imageId = validId('imageId', input.imageId ?? randomUUID());
    const volumeId = validId('volumeId', input.volumeId ?? randomUUID());
    if (!Number.isSafeInteger(input.capacity) || input.capacity <= 0) {
      throw new InvalidStorageRequest(`capacity must be a positive integer, got ${input.capacity}`);
    }
    await this.paths.check(this.paths.imagesDir, 'dir');
    const dir = this.paths.imageDir(imageId);
    try {
      await fs.mkdir(dir);
    } catch (e) {
      if (errnoCode(e) === 'EEXIST') throw new AlreadyExists(dir);
      throw e;
    }
    await fsyncDir(this.paths.imagesDir);
    return this.withImageLock(
      imageId,
      () =>
        this.createVolumeLocked({
          imageId,
          volumeId,
          parent: null,
          format: input.format,
          capacity: input.capacity,
          description: input.description ?? '',
        }),
      'createImage',
    );
  }

  /**
   * Creates a qcow2 child of `parentId`: the header names the parent by its RELATIVE name (its
   * volumeId) with `-F <parent format>`; the capacity is the parent's.
   */
  async createVolume(input: CreateVolumeInput): Promise<StoredVolume> {
    const { imageId } = input;
    const parentId = validId('parentId', input.parentId);
    const volumeId = validId('volumeId', input.volumeId ?? randomUUID());
    return this.withImageLock(
      imageId,
      async () => {
        const parent = await this.readVolume(imageId, parentId);
        if (parent.legality !== 'LEGAL') throw new InvalidStorageRequest(`parent ${parentId} is ILLEGAL`);
        return this.createVolumeLocked({
          imageId,
          volumeId,
          parent,
          format: 'qcow2',
          capacity: parent.capacity,
          description: input.description ?? '',
        });
      },
      'createVolume',
    );
  }

  /**
   * Crash-safe order: metadata ILLEGAL first, then the data file, then LEGAL. A crash at any point
   * leaves either nothing, or an ILLEGAL volume (with or without data) that reconcile deletes.
   */
  private async createVolumeLocked(a: {
    imageId: string;
    volumeId: string;
    parent: VolumeMetadata | null;
    format: Format;
    capacity: number;
    description: string;
  }): Promise<StoredVolume> {
    const dataPath = this.paths.volumePath(a.imageId, a.volumeId);
    const metaPath = this.paths.metaPath(a.imageId, a.volumeId);
    if ((await this.paths.check(dataPath, 'file')) || (await this.paths.check(metaPath, 'file'))) {
      throw new AlreadyExists(dataPath);
    }
    const meta: VolumeMetadata = {
      volumeId: a.volumeId,
      imageId: a.imageId,
      storageDomainId: this.id,
      parentId: a.parent?.volumeId ?? null,
      format: a.format,
      capacity: a.capacity,
      legality: 'ILLEGAL',
      snapshotId: null,
      description: a.description,
      createdAt: new Date().toISOString(),
      generation: 1,
    };
    await writeMetadataFile(metaPath, meta);
    try {
      await qemuImgCreate(
        {
          path: dataPath,
          format: a.format,
          size: a.capacity,
          backing: a.parent ? { file: a.parent.volumeId, format: a.parent.format } : undefined,
        },
        this.opts.qemuImg,
      );
    } catch (e) {
      await fs.rm(dataPath, { force: true });
      await fs.rm(metaPath, { force: true });
      await fsyncDir(this.paths.imageDir(a.imageId));
      throw e;
    }
    const legal: VolumeMetadata = { ...meta, legality: 'LEGAL', generation: meta.generation + 1 };
    await writeMetadataFile(metaPath, legal);
    return { ...legal, path: dataPath };
  }

  /**
   * Read-modify-write of one volume's metadata under the image lock. `mutate` gets a private copy
   * and returns it (or nothing, having changed it in place). Identity fields and `generation` are
   * not its to change. When nothing changed, nothing is written (generation unchanged), so
   * repeating an update is idempotent.
   */
  async updateVolume(imageId: string, volumeId: string, mutate: VolumeMutation): Promise<StoredVolume> {
    validId('volumeId', volumeId);
    return this.withImageLock(imageId, () => this.updateLocked(imageId, volumeId, mutate), 'updateVolume');
  }

  private async updateLocked(
    imageId: string,
    volumeId: string,
    mutate: VolumeMutation,
  ): Promise<StoredVolume> {
    const current = await this.readVolume(imageId, volumeId);
    const { path: dataPath, ...meta } = current;
    const draft = structuredClone(meta);
    const next = mutate(draft) ?? draft;
    for (const f of IMMUTABLE_FIELDS) {
      if (next[f] !== meta[f])
        throw new InvalidStorageRequest(`updateVolume may not change ${f} of ${volumeId}`);
    }
    const parsed = VolumeMetadataSchema.safeParse(next);
    if (!parsed.success)
      throw new InvalidStorageRequest(`invalid metadata for ${volumeId}: ${parsed.error.message}`);
    if (parsed.data.parentId === volumeId)
      throw new InvalidStorageRequest(`volume ${volumeId} cannot be its own parent`);
    if (isDeepStrictEqual(parsed.data, meta)) return current;
    const written = { ...parsed.data, generation: meta.generation + 1 };
    await writeMetadataFile(this.paths.metaPath(imageId, volumeId), written);
    return { ...written, path: dataPath };
  }

  async setLegality(imageId: string, volumeId: string, legality: Legality): Promise<StoredVolume> {
    return this.updateVolume(imageId, volumeId, (m) => ({ ...m, legality }));
  }

  async setSnapshotId(imageId: string, volumeId: string, snapshotId: string | null): Promise<StoredVolume> {
    if (snapshotId !== null) validId('snapshotId', snapshotId);
    return this.updateVolume(imageId, volumeId, (m) => ({ ...m, snapshotId }));
  }

  /**
   * Metadata only: `volumeId`'s parent becomes `newParentId` (same image). The qcow2 header is
   * rewritten by whoever moved the data (libvirt's block commit, or qemu-img rebase when cold).
   * Refuses cycles, and a LEGAL volume on top of an ILLEGAL parent.
   */
  async reparent(imageId: string, volumeId: string, newParentId: string | null): Promise<StoredVolume> {
    validId('volumeId', volumeId);
    if (newParentId !== null) validId('newParentId', newParentId);
    return this.withImageLock(
      imageId,
      async () => {
        const vol = await this.readVolume(imageId, volumeId);
        if (newParentId !== null) {
          const all = new Map((await this.listVolumes(imageId)).map((v) => [v.volumeId, v]));
          const parent = all.get(newParentId);
          if (!parent) throw new VolumeNotFound(imageId, newParentId);
          if (vol.legality === 'LEGAL' && parent.legality !== 'LEGAL') {
            throw new InvalidStorageRequest(`cannot put LEGAL ${volumeId} on ILLEGAL parent ${newParentId}`);
          }
          for (
            let p: StoredVolume | undefined = parent;
            p;
            p = p.parentId ? all.get(p.parentId) : undefined
          ) {
            if (p.volumeId === volumeId)
              throw new InvalidStorageRequest(`reparenting ${volumeId} onto ${newParentId} makes a cycle`);
          }
        }
        return this.updateLocked(imageId, volumeId, (m) => ({ ...m, parentId: newParentId }));
      },
      'reparent',
    );
  }

  /** `baseId` takes over `fromId`'s snapshotId (backward merge, step 7). `fromId` keeps its copy, so a repeat is a no-op. */
  async takeOverSnapshotId(imageId: string, baseId: string, fromId: string): Promise<StoredVolume> {
    validId('baseId', baseId);
    validId('fromId', fromId);
    return this.withImageLock(
      imageId,
      async () => {
        const from = await this.readVolume(imageId, fromId);
        return this.updateLocked(imageId, baseId, (m) => ({ ...m, snapshotId: from.snapshotId }));
      },
      'takeOverSnapshotId',
    );
  }

  /**
   * Idempotent deletion (returns deleted: false when already gone). Order, under the image lock:
   * 1. metadata → ILLEGAL (removal has begun), 2. unlink the data file, 3. unlink the metadata.
   * A crash after 1 or 2 leaves an ILLEGAL volume (with or without data) that reconcile finds and
   * deletes again; a LEGAL volume never loses its data file. With `refuseIfLegalChild`, a LEGAL
   * volume naming it as parent is checked under the same lock (DeletionRefused).
   */
  async deleteVolume(
    imageId: string,
    volumeId: string,
    opts: { refuseIfLegalChild?: boolean } = {},
  ): Promise<{ deleted: boolean }> {
    const dataPath = this.paths.volumePath(imageId, volumeId);
    const metaPath = this.paths.metaPath(imageId, volumeId);
    if (!(await this.paths.check(this.paths.imageDir(imageId), 'dir'))) return { deleted: false };
    return this.withImageLock(
      imageId,
      async () => {
        const hasMeta = await this.paths.check(metaPath, 'file');
        const hasData = await this.paths.check(dataPath, 'file');
        if (!hasMeta && !hasData) return { deleted: false };
        if (opts.refuseIfLegalChild) {
          const child = (await this.listVolumes(imageId)).find(
            (v) => v.parentId === volumeId && v.legality === 'LEGAL',
          );
          if (child) throw new DeletionRefused('parent-of-legal-volume', volumeId, child.volumeId);
        }
        if (hasMeta) await this.updateLocked(imageId, volumeId, (m) => ({ ...m, legality: 'ILLEGAL' }));
        const dir = this.paths.imageDir(imageId);
        if (hasData) {
          await unlinkIfExists(dataPath);
          await fsyncDir(dir);
        }
        if (hasMeta) {
          await unlinkIfExists(metaPath);
          await fsyncDir(dir);
        }
        return { deleted: true };
      },
      'deleteVolume',
    );
  }
}

async function unlinkIfExists(p: string): Promise<void> {
  try {
    await fs.unlink(p);
  } catch (e) {
    if (errnoCode(e) !== 'ENOENT') throw e;
  }
}

/** Pure chain resolution over a volume listing (base first). Exported for reconcile and tests. */
export function chainFrom<T extends VolumeMetadata>(
  imageId: string,
  volumes: readonly T[],
  leafVolumeId?: string,
): T[] {
  const byId = new Map(volumes.map((v) => [v.volumeId, v]));
  let leaf: T | undefined;
  if (leafVolumeId !== undefined) {
    validId('leafVolumeId', leafVolumeId);
    leaf = byId.get(leafVolumeId);
    if (!leaf) throw new VolumeNotFound(imageId, leafVolumeId);
  } else {
    const legal = volumes.filter((v) => v.legality === 'LEGAL');
    const parents = new Set(legal.map((v) => v.parentId));
    const leaves = legal.filter((v) => !parents.has(v.volumeId));
    if (leaves.length !== 1)
      throw new ChainAmbiguous(
        imageId,
        leaves.map((v) => v.volumeId),
      );
    leaf = leaves[0]!;
  }
  const chain: T[] = [];
  const seen = new Set<string>();
  for (let cur: T | undefined = leaf; cur;) {
    if (seen.has(cur.volumeId)) throw new ChainBroken(imageId, `cycle through ${cur.volumeId}`);
    seen.add(cur.volumeId);
    chain.push(cur);
    if (cur.parentId === null) break;
    const parent = byId.get(cur.parentId);
    if (!parent) throw new ChainBroken(imageId, `parent ${cur.parentId} of ${cur.volumeId} has no metadata`);
    cur = parent;
  }
  return chain.reverse();
}
