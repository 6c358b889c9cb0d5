// The deletion guard (invariant 2) against a REAL defined libvirt domain and LEGAL children.
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { DomainXmls } from '../../src/libvirt/domain-xmls';
import { assertDeletable, deleteVolumeGuarded } from '../../src/guard/deletion-guard';
import { DeletionRefused } from '../../src/storage/errors';
import { qemuImgRebaseUnsafe } from '../../src/qemu/qemu-img';
import { StorageDomain, type StoredVolume } from '../../src/storage/storage-domain';
import { DefinedDomains, makeTmpDir, virsh } from '../fixtures/storage/helpers';

const MiB = 1 << 20;
let tmp: string;
let domain: StorageDomain;
let base: StoredVolume, mid: StoredVolume, top: StoredVolume;
const libvirt = new DefinedDomains();
let defined: string[];
let extraXmls: DomainXmls[];

/** What the host agent would wire to libvirt: the persistent XML of every defined test domain. */
async function domainXmls(): Promise<DomainXmls[]> {
  const out: DomainXmls[] = [...extraXmls];
  for (const name of defined) out.push({ name, inactive: await libvirt.inactiveXml(name) });
  return out;
}

async function refusal(p: Promise<unknown>): Promise<DeletionRefused> {
  const err = await p.then(
    () => new Error('expected DeletionRefused'),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(DeletionRefused);
  return err as DeletionRefused;
}

beforeEach(async () => {
  tmp = await makeTmpDir();
  defined = [];
  extraXmls = [];
  domain = await StorageDomain.create(path.join(tmp, 'root'), randomUUID());
  base = await domain.createImage({ format: 'raw', capacity: MiB });
  mid = await domain.createVolume({ imageId: base.imageId, parentId: base.volumeId });
  top = await domain.createVolume({ imageId: base.imageId, parentId: mid.volumeId });
});
afterEach(async () => {
  try {
    await libvirt.cleanup();
  } finally {
    await fs.rm(tmp, { recursive: true, force: true });
  }
});

describe('deletion guard', () => {
  it('refuses while in a defined domain persistent chain or parent of a LEGAL volume; allows after reparent + undefine', async () => {
    const name = await libvirt.define(top.path, 'qcow2');
    defined.push(name);
    const deps = { domainXmls, domain };

    // The leaf is named by the definition; mid and base are in its chain through the qcow2 headers.
    for (const v of [top, mid, base]) {
      const err = await refusal(deleteVolumeGuarded(v, deps));
      expect(err).toMatchObject({
        code: 'DELETION_REFUSED',
        reason: 'in-persistent-chain',
        by: name,
        volumeId: v.volumeId,
      });
      expect(err.message).toContain(name);
    }

    // Merge mid into base (metadata + header as a cold merge would leave them), still defined: refused.
    await qemuImgRebaseUnsafe(top.path, { file: base.volumeId, format: 'raw' });
    await expect(assertDeletable(mid, deps)).rejects.toMatchObject({
      reason: 'parent-of-legal-volume',
      by: top.volumeId,
    });

    // The domain is gone but top (LEGAL) still names mid as parent: refused.
    await libvirt.undefine(name);
    defined = [];
    await expect(virsh(['dominfo', name])).rejects.toBeTruthy();
    const err = await refusal(deleteVolumeGuarded(mid, deps));
    expect(err).toMatchObject({ reason: 'parent-of-legal-volume', by: top.volumeId, volumeId: mid.volumeId });
    expect(err.message).toContain(top.volumeId);
    await fs.stat(mid.path);

    // Re-parented: allowed; deleted once, then idempotent.
    await domain.reparent(base.imageId, top.volumeId, base.volumeId);
    await domain.setLegality(base.imageId, mid.volumeId, 'ILLEGAL');
    expect(await deleteVolumeGuarded(mid, deps)).toEqual({ deleted: true });
    expect(await deleteVolumeGuarded(mid, deps)).toEqual({ deleted: false });
    expect(await domain.deleteVolume(base.imageId, mid.volumeId)).toEqual({ deleted: false });
    await expect(fs.stat(mid.path)).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(fs.stat(`${mid.path}.meta.json`)).rejects.toMatchObject({ code: 'ENOENT' });
    expect((await domain.readChain(base.imageId)).map((v) => v.volumeId)).toEqual([
      base.volumeId,
      top.volumeId,
    ]);
  });

  it('refuses while in a live chain, by absolute path, symlinked path or relative name', async () => {
    const deps = { domainXmls, domain };
    // No LEGAL child of top, no domain: deletable.
    await expect(assertDeletable(top, deps)).resolves.toBeUndefined();

    const live = (src: string, backing = '<backingStore/>'): string =>
      `<domain type='qemu' id='3'><name>vm-live</name><devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='${src}'/>${backing}<target dev='vda'/></disk></devices></domain>`;

    extraXmls = [{ name: 'vm-live', live: live(top.path) }];
    await expect(assertDeletable(top, deps)).rejects.toMatchObject({
      reason: 'in-live-chain',
      by: 'vm-live',
    });

    // Through a symlink to the storage root (another mount path on another host).
    const alias = path.join(tmp, 'alias');
    await fs.symlink(path.join(tmp, 'root'), alias);
    const viaAlias = path.join(alias, path.relative(path.join(tmp, 'root'), top.path));
    extraXmls = [{ name: 'vm-alias', live: live(viaAlias) }];
    await expect(assertDeletable(top, deps)).rejects.toMatchObject({
      reason: 'in-live-chain',
      by: 'vm-alias',
    });

    // A relative backing name in the chain (resolved against the image above it).
    const other = path.join(tmp, 'other.qcow2');
    extraXmls = [
      {
        name: 'vm-rel',
        live: live(
          other,
          `<backingStore type='file'><format type='qcow2'/><source file='${top.volumeId}'/><backingStore/></backingStore>`,
        ),
      },
    ];
    await expect(assertDeletable(top, deps)).rejects.toMatchObject({ reason: 'in-live-chain', by: 'vm-rel' });

    // A complete live chain that does not contain it: allowed.
    extraXmls = [{ name: 'vm-unrelated', live: live(other) }];
    await expect(assertDeletable(top, deps)).resolves.toBeUndefined();
  });

  it('fails closed when the domain list cannot be read', async () => {
    const deps = {
      domain,
      domainXmls: () => Promise.reject(new Error('libvirtd unreachable')),
    };
    await expect(deleteVolumeGuarded(top, deps)).rejects.toThrow('libvirtd unreachable');
    await fs.stat(top.path);
  });
});
