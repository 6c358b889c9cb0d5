import { describe, expect, it } from 'vitest';
import { compareChains, type CompareInput, type DisagreementKind } from '../../src/inspect/compare';
import type { DiskChain } from '../../src/inspect/domain-xml';
import type { Qcow2ChainEntry } from '../../src/inspect/qcow2-chain';
import type { VolumeMetadata } from '../../src/storage/metadata';

const DIR = '/sd/images/11111111-1111-4111-8111-111111111111';
const ids = [
  'aaaaaaaa-0000-4000-8000-000000000001',
  'aaaaaaaa-0000-4000-8000-000000000002',
  'aaaaaaaa-0000-4000-8000-000000000003',
] as const;

function vol(i: number, over: Partial<VolumeMetadata> = {}): VolumeMetadata & { path: string } {
  return {
    volumeId: ids[i]!,
    imageId: '11111111-1111-4111-8111-111111111111',
    storageDomainId: '22222222-2222-4222-8222-222222222222',
    parentId: i === 0 ? null : ids[i - 1]!,
    format: i === 0 ? 'raw' : 'qcow2',
    capacity: 1048576,
    legality: 'LEGAL',
    snapshotId: null,
    description: '',
    createdAt: '2025-01-01T00:00:00.000Z',
    generation: 2,
    path: `${DIR}/${ids[i]}`,
    ...over,
  };
}

function q(i: number, over: Partial<Qcow2ChainEntry> = {}): Qcow2ChainEntry {
  const e: Qcow2ChainEntry = {
    filename: `${DIR}/${ids[i]}`,
    format: i === 0 ? 'raw' : 'qcow2',
    virtualSize: 1048576,
  };
  if (i > 0)
    Object.assign(e, {
      backingFilename: ids[i - 1],
      fullBackingFilename: `${DIR}/${ids[i - 1]}`,
      backingFormat: i === 1 ? 'raw' : 'qcow2',
    });
  return { ...e, ...over };
}

const live = (paths: string[], complete = true): DiskChain => ({
  target: 'vda',
  device: 'disk',
  format: 'qcow2',
  complete,
  chain: paths.map((p) => ({ path: p, type: 'file', format: p.endsWith(ids[0]) ? 'raw' : 'qcow2' })),
});

const good = (): CompareInput => ({
  metadata: [vol(0), vol(1), vol(2)],
  qcow2: [q(2), q(1), q(0)],
  libvirtLive: live([2, 1, 0].map((i) => `${DIR}/${ids[i]}`)),
  libvirtInactive: {
    ...live([`${DIR}/${ids[2]}`], false),
    chain: [{ path: `${DIR}/${ids[2]}`, type: 'file', format: 'qcow2' }],
  },
});

function kinds(input: CompareInput): DisagreementKind[] {
  const r = compareChains(input);
  return r.ok ? [] : r.disagreements.map((d) => d.kind);
}

describe('compareChains', () => {
  it('agrees on a consistent chain', () => {
    expect(compareChains(good())).toEqual({ ok: true });
  });

  it('names a metadata parent that the header contradicts', () => {
    const input = good();
    input.metadata = [vol(0), vol(2, { parentId: ids[0] })];
    const r = compareChains(input);
    expect(r.ok).toBe(false);
    if (!r.ok)
      expect(r.disagreements).toContainEqual(
        expect.objectContaining({ kind: 'metadata-parent-mismatch', volumeId: ids[2] }),
      );
  });

  it('names header backing references outside the contract', () => {
    const abs = good();
    abs.qcow2 = [q(2, { backingFilename: `${DIR}/${ids[1]}` }), q(1), q(0)];
    expect(kinds(abs)).toEqual(['qcow2-backing-mismatch']);
    const elsewhere = good();
    elsewhere.qcow2 = [
      q(2, { backingFilename: '/tmp/decoy.qcow2', fullBackingFilename: '/tmp/decoy.qcow2' }),
      { filename: '/tmp/decoy.qcow2', format: 'qcow2', virtualSize: 1 },
    ];
    expect(kinds(elsewhere)).toContain('qcow2-backing-mismatch');
  });

  it('names format disagreements from the image, the header and libvirt', () => {
    const img = good();
    img.metadata = [vol(0, { format: 'qcow2' }), vol(1), vol(2)];
    expect(kinds(img)).toEqual(expect.arrayContaining(['format-mismatch']));
    const lv = good();
    lv.libvirtLive!.chain[0]!.format = 'raw';
    expect(kinds(lv)).toEqual(['format-mismatch']);
  });

  it('names libvirt chains that differ in path or length', () => {
    const other = good();
    other.libvirtLive!.chain[1]!.path = '/elsewhere/mid';
    expect(kinds(other)).toEqual(['libvirt-chain-mismatch']);
    const short = good();
    short.libvirtLive = live([`${DIR}/${ids[2]}`, `${DIR}/${ids[1]}`]);
    expect(kinds(short)).toEqual(['libvirt-chain-mismatch']);
    const top = good();
    top.libvirtInactive!.chain[0]!.path = `${DIR}/${ids[1]}`;
    expect(compareChains(top)).toMatchObject({
      ok: false,
      disagreements: [{ kind: 'libvirt-chain-mismatch', source: 'libvirt-persistent' }],
    });
    expect(kinds({ ...good(), libvirtLive: null })).toEqual(['libvirt-chain-mismatch']);
    // Relative names in libvirt XML resolve against the image above them.
    const rel = good();
    rel.libvirtLive!.chain[1]!.path = ids[1];
    rel.libvirtLive!.chain[2]!.path = ids[0];
    expect(compareChains(rel)).toEqual({ ok: true });
  });

  it('names ILLEGAL volumes in the chain and missing files', () => {
    const input = good();
    input.metadata = [vol(0), vol(1, { legality: 'ILLEGAL' }), vol(2)];
    input.missingFiles = [`${DIR}/${ids[0]}`];
    const r = compareChains(input);
    expect(r).toMatchObject({ ok: false });
    if (!r.ok) {
      expect(r.disagreements).toContainEqual(
        expect.objectContaining({ kind: 'illegal-in-chain', volumeId: ids[1] }),
      );
      expect(r.disagreements).toContainEqual(
        expect.objectContaining({ kind: 'missing-file', volumeId: ids[0] }),
      );
    }
  });

  it('reports every disagreement at once', () => {
    const input = good();
    input.metadata = [vol(0, { format: 'qcow2' }), vol(1, { legality: 'ILLEGAL' }), vol(2)];
    input.libvirtLive!.chain[0]!.path = '/x';
    expect(new Set(kinds(input))).toEqual(
      new Set(['format-mismatch', 'illegal-in-chain', 'libvirt-chain-mismatch']),
    );
  });
});
