// Persistent dirty bitmaps through libvirt's checkpoint API, without keeping libvirt checkpoints.
//
// libvirt adds a bitmap to every listed disk's active leaf in one QEMU transaction
// (virDomainCheckpointCreateXML) and removes a bitmap from a disk's whole chain, read-only backing
// images included (virDomainCheckpointDelete after a REDEFINE): what vdsm does too. livemerge keeps
// its own record of backups, so each checkpoint's metadata is dropped at once (METADATA_ONLY): libvirt
// never holds a checkpoint that a later snapshot, merge or migration would have to keep consistent.
// Measured on libvirt 9.0 / QEMU 7.2 (the messages matched below are QEMU's and libvirt's own):
// - adding a bitmap a leaf already has fails the transaction "Bitmap already exists: NAME";
// - deleting a checkpoint whose bitmap a chain lacks fails "bitmap 'NAME' not found in backing chain".
import { escapeXml } from '../common/xml';
import { CheckpointDeleteFlags } from './constants';
import { ErrorCode } from './error-codes';
import { isLibvirtError } from './errors';
import type { CheckpointPtr, DomainPtr } from './ffi';
import {
  virDomainCheckpointCreateXML,
  virDomainCheckpointDelete,
  virDomainCheckpointFree,
  virDomainCheckpointLookupByName,
} from './ffi';
import { CheckpointCreateFlags } from './constants';
import type { CallContext } from './invoke';
import { failsIfNegative, invoke, invokePtr } from './invoke';

interface DomainRef {
  ctx: CallContext;
  ptr: DomainPtr;
}

function checkpointXml(
  name: string,
  disks: Array<{ target: string; bitmap: boolean }>,
  redefine: boolean,
): string {
  const entries = disks.map((d) =>
    d.bitmap
      ? `<disk name='${escapeXml(d.target)}' checkpoint='bitmap' bitmap='${escapeXml(name)}'/>`
      : `<disk name='${escapeXml(d.target)}' checkpoint='no'/>`,
  );
  // A redefinition must say when; the time is not kept anywhere (the metadata is dropped).
  const created = redefine ? `<creationTime>${Math.floor(Date.now() / 1000)}</creationTime>` : '';
  return `<domaincheckpoint><name>${escapeXml(name)}</name>${created}<disks>${entries.join('')}</disks></domaincheckpoint>`;
}

async function lookup(dom: DomainRef, name: string): Promise<CheckpointPtr | null> {
  try {
    return await invokePtr(
      dom.ctx,
      'virDomainCheckpointLookupByName',
      virDomainCheckpointLookupByName,
      dom.ptr,
      name,
      0,
    );
  } catch (err) {
    if (isLibvirtError(err, ErrorCode.NO_DOMAIN_CHECKPOINT)) return null;
    throw err;
  }
}

async function deleteCheckpoint(dom: DomainRef, cp: CheckpointPtr, flags: number): Promise<void> {
  try {
    await invoke(dom.ctx, 'virDomainCheckpointDelete', virDomainCheckpointDelete, failsIfNegative, cp, flags);
  } finally {
    virDomainCheckpointFree(cp);
  }
}

/** Drops the metadata of checkpoint `name` when libvirt still has it (a crash between create and drop). */
async function dropMetadata(dom: DomainRef, name: string): Promise<boolean> {
  const cp = await lookup(dom, name);
  if (cp === null) return false;
  await deleteCheckpoint(dom, cp, CheckpointDeleteFlags.METADATA_ONLY);
  return true;
}

const mentions = (err: unknown, text: string): boolean =>
  isLibvirtError(err) && err.libvirtMessage.includes(text);

/**
 * Bitmap `name` starts recording on the active leaf of each of `bitmapTargets` (all at once); the other
 * `targets` get none. Idempotent: a bitmap of that name already there (or the checkpoint's leftover
 * metadata) means it was added.
 */
export async function addBitmaps(
  dom: DomainRef,
  name: string,
  targets: readonly string[],
  bitmapTargets: readonly string[],
): Promise<'added' | 'already-added'> {
  if (await dropMetadata(dom, name)) return 'already-added';
  const xml = checkpointXml(
    name,
    targets.map((t) => ({ target: t, bitmap: bitmapTargets.includes(t) })),
    false,
  );
  let cp: CheckpointPtr;
  try {
    cp = await invokePtr(
      dom.ctx,
      'virDomainCheckpointCreateXML',
      virDomainCheckpointCreateXML,
      dom.ptr,
      xml,
      0,
    );
  } catch (err) {
    if (mentions(err, `Bitmap already exists: ${name}`)) return 'already-added';
    throw err;
  }
  await deleteCheckpoint(dom, cp, CheckpointDeleteFlags.METADATA_ONLY);
  return 'added';
}

/**
 * Bitmap `name` removed from every image of disk `target`'s chain. Idempotent: a chain without it is
 * 'absent' (and the redefined metadata is dropped again).
 */
export async function removeBitmap(
  dom: DomainRef,
  name: string,
  target: string,
  targets: readonly string[],
): Promise<'removed' | 'absent'> {
  await dropMetadata(dom, name);
  const xml = checkpointXml(
    name,
    targets.map((t) => ({ target: t, bitmap: t === target })),
    true,
  );
  const cp = await invokePtr(
    dom.ctx,
    'virDomainCheckpointCreateXML',
    virDomainCheckpointCreateXML,
    dom.ptr,
    xml,
    CheckpointCreateFlags.REDEFINE,
  );
  try {
    await deleteCheckpoint(dom, cp, 0);
    return 'removed';
  } catch (err) {
    if (!mentions(err, `bitmap '${name}' not found`)) throw err;
    await dropMetadata(dom, name);
    return 'absent';
  }
}
