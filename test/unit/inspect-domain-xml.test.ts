import { describe, expect, it } from 'vitest';
import { DomainXmlError, parseDomainDiskChains, parseDomainName } from '../../src/inspect/domain-xml';

const LIVE = `<domain type='qemu' id='7'>
  <name>vm1</name>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/sd/images/i/top' index='3'/>
      <backingStore type='file' index='2'>
        <format type='qcow2'/>
        <source file='/sd/images/i/mid'/>
        <backingStore type='file' index='1'>
          <format type='raw'/>
          <source file='/sd/images/i/base'/>
          <backingStore/>
        </backingStore>
      </backingStore>
      <target dev='vda' bus='virtio'/>
      <alias name='virtio-disk0'/>
    </disk>
    <disk type='block' device='disk'>
      <driver name='qemu' type='raw'/>
      <source dev='/dev/mapper/x&amp;y' index='4'/>
      <backingStore/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <target dev='sda' bus='sata'/>
      <readonly/>
    </disk>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw'/>
      <source protocol='nbd' name='export'><host name='h' port='10809'/></source>
      <target dev='vdc' bus='virtio'/>
    </disk>
  </devices>
</domain>`;

const INACTIVE = `<domain type='qemu'>
  <name>vm1</name>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/sd/images/i/top'/>
      <target dev='vda' bus='virtio'/>
    </disk>
  </devices>
</domain>`;

describe('parseDomainDiskChains', () => {
  it('reads a live chain leaf first with formats, indexes and its terminator', () => {
    const disks = parseDomainDiskChains(LIVE);
    expect(disks.map((d) => d.target)).toEqual(['vda', 'vdb', 'sda', 'vdc']);
    expect(disks[0]).toEqual({
      target: 'vda',
      device: 'disk',
      format: 'qcow2',
      complete: true,
      chain: [
        { path: '/sd/images/i/top', type: 'file', format: 'qcow2', index: 3 },
        { path: '/sd/images/i/mid', type: 'file', format: 'qcow2', index: 2 },
        { path: '/sd/images/i/base', type: 'file', format: 'raw', index: 1 },
      ],
    });
  });

  it('handles block devices (with entities), empty cdroms and network sources', () => {
    const [, vdb, sda, vdc] = parseDomainDiskChains(LIVE);
    expect(vdb).toMatchObject({
      complete: true,
      chain: [{ path: '/dev/mapper/x&y', type: 'block', format: 'raw', index: 4 }],
    });
    expect(sda).toMatchObject({ device: 'cdrom', chain: [], complete: false });
    expect(vdc).toMatchObject({ chain: [{ path: null, type: 'network', format: 'raw' }] });
  });

  it('reads an inactive definition: only the top is known', () => {
    expect(parseDomainDiskChains(INACTIVE)).toEqual([
      {
        target: 'vda',
        device: 'disk',
        format: 'qcow2',
        complete: false,
        chain: [{ path: '/sd/images/i/top', type: 'file', format: 'qcow2' }],
      },
    ]);
    const explicitNone = INACTIVE.replace("<target dev='vda'", "<backingStore/><target dev='vda'");
    expect(parseDomainDiskChains(explicitNone)[0]).toMatchObject({
      complete: true,
      chain: [{ path: '/sd/images/i/top' }],
    });
  });

  it('reads relative backing names as written', () => {
    const xml = INACTIVE.replace(
      "<target dev='vda'",
      "<backingStore type='file'><format type='raw'/><source file='0f0e0d0c-0000-4000-8000-000000000001'/></backingStore><target dev='vda'",
    );
    expect(parseDomainDiskChains(xml)[0]!.chain.map((e) => e.path)).toEqual([
      '/sd/images/i/top',
      '0f0e0d0c-0000-4000-8000-000000000001',
    ]);
  });

  it('returns no disks for a domain without devices and rejects what is not a domain', () => {
    expect(parseDomainDiskChains('<domain><name>x</name></domain>')).toEqual([]);
    expect(parseDomainName(LIVE)).toBe('vm1');
    expect(() => parseDomainDiskChains('<network><name>x</name></network>')).toThrow(DomainXmlError);
    expect(() => parseDomainDiskChains('<domain><devices>')).toThrow(DomainXmlError);
  });
});
