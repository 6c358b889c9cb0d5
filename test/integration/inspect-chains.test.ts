// Chain inspection on real images: planted disagreements of each kind are named, the agreeing
// case (including a REAL libvirt persistent definition) is ok.
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { DisagreementKind } from '../../src/inspect/compare';
import { inspectImage } from '../../src/inspect/inspect-image';
import { qcow2Chain, walkQcow2Chain } from '../../src/inspect/qcow2-chain';
import { QemuImgError, qemuImgCreate, qemuImgRebaseUnsafe } from '../../src/qemu/qemu-img';
import { StorageDomain, type StoredVolume } from '../../src/storage/storage-domain';
import { DefinedDomains, makeTmpDir, run } from '../fixtures/storage/helpers';

const MiB = 1 << 20;
let tmp: string;
let domain: StorageDomain;
let base: StoredVolume, mid: StoredVolume, top: StoredVolume;
const libvirt = new DefinedDomains();

beforeEach(async () => {
  tmp = await makeTmpDir();
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

/** Live XML as libvirt prints it for a running domain on this chain (hand-written). */
function liveXml(chain: Array<{ path: string; format: string }>): string {
  const [first, ...rest] = chain;
  let inner = '<backingStore/>';
  for (const e of [...rest].reverse()) {
    inner = `<backingStore type='file' index='${rest.indexOf(e) + 1}'><format type='${e.format}'/><source file='${e.path}'/>${inner}</backingStore>`;
  }
  return `<domain type='qemu' id='1'><name>live</name><devices><disk type='file' device='disk'><driver name='qemu' type='${first!.format}'/><source file='${first!.path}' index='9'/>${inner}<target dev='vda' bus='virtio'/></disk></devices></domain>`;
}

const leafFirst = (): Array<{ path: string; format: string }> =>
  [top, mid, base].map((v) => ({ path: v.path, format: v.format }));

async function kindsOf(opts: Parameters<typeof inspectImage>[2] = {}): Promise<DisagreementKind[]> {
  const r = (await inspectImage(domain, base.imageId, opts)).result;
  return r.ok ? [] : [...new Set(r.disagreements.map((d) => d.kind))].sort();
}

describe('qcow2Chain', () => {
  it('returns the header chain leaf first with relative names and bitmaps', async () => {
    await run('qemu-img', ['bitmap', '--add', top.path, 'backup-0']);
    const chain = await qcow2Chain(top.path);
    expect(chain.map((e) => e.filename)).toEqual([top.path, mid.path, base.path]);
    expect(chain[0]).toMatchObject({
      format: 'qcow2',
      backingFilename: mid.volumeId,
      fullBackingFilename: mid.path,
      backingFormat: 'qcow2',
      virtualSize: MiB,
    });
    expect(chain[0]!.bitmaps).toEqual([{ name: 'backup-0', granularity: 65536, flags: ['auto'] }]);
    expect(chain[1]!.bitmaps).toBeUndefined();
    expect(chain[2]).toMatchObject({ format: 'raw', virtualSize: MiB });
    expect(chain[2]!.backingFilename).toBeUndefined();
  });

  it('fails with QemuImgError on a broken chain; the walker stops at the missing file', async () => {
    await fs.rm(base.path);
    const err = await qcow2Chain(top.path).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QemuImgError);
    expect((err as QemuImgError).exitCode).toBe(1);
    expect((err as QemuImgError).args).toContain('--backing-chain');
    expect((err as QemuImgError).stderr).toMatch(/No such file/);
    const walked = await walkQcow2Chain(top.path);
    expect(walked.entries.map((e) => e.filename)).toEqual([top.path, mid.path]);
    expect(walked.missing).toBe(base.path);
  });
});

describe('inspectImage / compareChains', () => {
  it('agrees: metadata, headers, live XML and a real persistent definition', async () => {
    const name = await libvirt.define(top.path, 'qcow2');
    const inactiveXml = await libvirt.inactiveXml(name);
    expect(inactiveXml).toContain(top.path);
    const res = await inspectImage(domain, base.imageId, { liveXml: liveXml(leafFirst()), inactiveXml });
    expect(res.result).toEqual({ ok: true });
    expect(res.libvirtInactive).toMatchObject({
      target: 'vda',
      complete: false,
      chain: [{ path: top.path, format: 'qcow2' }],
    });
    expect(res.libvirtLive?.chain.map((e) => e.path)).toEqual([top.path, mid.path, base.path]);
    expect(res.metadata.map((v) => v.volumeId)).toEqual([base.volumeId, mid.volumeId, top.volumeId]);
  });

  it('metadata-parent-mismatch: metadata names another parent than the header', async () => {
    await domain.updateVolume(base.imageId, top.volumeId, (m) => ({ ...m, parentId: base.volumeId }));
    const r = (await inspectImage(domain, base.imageId, { leafVolumeId: top.volumeId })).result;
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.disagreements).toContainEqual(
        expect.objectContaining({ kind: 'metadata-parent-mismatch', volumeId: top.volumeId }),
      );
      expect(r.disagreements.find((d) => d.kind === 'metadata-parent-mismatch')!.detail).toContain(
        mid.volumeId,
      );
    }
  });

  it('qcow2-backing-mismatch: header rebased (-u) to a file outside the image, or to an absolute path', async () => {
    const decoy = path.join(tmp, 'decoy.qcow2');
    await qemuImgCreate({ path: decoy, format: 'qcow2', size: MiB });
    await qemuImgRebaseUnsafe(top.path, { file: decoy, format: 'qcow2' });
    expect((await qcow2Chain(top.path))[1]!.filename).toBe(decoy);
    expect(await kindsOf()).toEqual(['qcow2-backing-mismatch']);

    await qemuImgRebaseUnsafe(top.path, { file: mid.path, format: 'qcow2' });
    const r = (await inspectImage(domain, base.imageId)).result;
    expect(r).toMatchObject({
      ok: false,
      disagreements: [{ kind: 'qcow2-backing-mismatch', volumeId: top.volumeId }],
    });

    await qemuImgRebaseUnsafe(top.path, { file: mid.volumeId, format: 'qcow2' }); // repaired
    expect(await kindsOf()).toEqual([]);
  });

  it('format-mismatch: metadata format differs from the image and the header backing format', async () => {
    await domain.updateVolume(base.imageId, base.volumeId, (m) => ({ ...m, format: 'qcow2' }));
    expect(await kindsOf()).toEqual(['format-mismatch']);
    const r = (await inspectImage(domain, base.imageId)).result;
    if (!r.ok)
      expect(r.disagreements.map((d) => d.volumeId).sort()).toEqual([base.volumeId, mid.volumeId].sort());
  });

  it('libvirt-chain-mismatch: live XML points elsewhere or is shorter; real persistent XML points at another volume', async () => {
    const elsewhere = leafFirst();
    elsewhere[1]!.path = path.join(tmp, 'elsewhere.qcow2');
    expect(await kindsOf({ liveXml: liveXml(elsewhere) })).toEqual(['libvirt-chain-mismatch']);
    expect(await kindsOf({ liveXml: liveXml(leafFirst().slice(0, 2)) })).toEqual(['libvirt-chain-mismatch']);

    const name = await libvirt.define(mid.path, 'qcow2');
    const inactiveXml = await libvirt.inactiveXml(name);
    const r = (await inspectImage(domain, base.imageId, { inactiveXml })).result;
    expect(r).toMatchObject({
      ok: false,
      disagreements: [
        { kind: 'libvirt-chain-mismatch', source: 'libvirt-persistent', volumeId: top.volumeId },
      ],
    });

    const other = await libvirt.define(path.join(tmp, 'unrelated.qcow2'), 'qcow2');
    expect(await kindsOf({ inactiveXml: await libvirt.inactiveXml(other) })).toEqual([
      'libvirt-chain-mismatch',
    ]);
  });

  it('illegal-in-chain: an ILLEGAL volume inside the chain in use', async () => {
    await domain.setLegality(base.imageId, mid.volumeId, 'ILLEGAL');
    const r = (await inspectImage(domain, base.imageId, { leafVolumeId: top.volumeId })).result;
    expect(r).toMatchObject({
      ok: false,
      disagreements: [{ kind: 'illegal-in-chain', volumeId: mid.volumeId }],
    });
  });

  it('missing-file: a data file of the chain is gone', async () => {
    await fs.rm(mid.path);
    const res = await inspectImage(domain, base.imageId);
    expect(res.missingFiles).toEqual([mid.path]);
    expect(res.result).toMatchObject({
      ok: false,
      disagreements: [{ kind: 'missing-file', volumeId: mid.volumeId }],
    });
  });
});
