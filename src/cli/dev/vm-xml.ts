// The domain XML of a livemerge test VM: a TCG guest (<domain type='qemu'>: no KVM needed) with 64 MiB,
// one vCPU, no OS and no boot device. QEMU idles in the firmware while its block layer works fully
// (block commit, pull, external snapshots, qemu-io through the guest device).
import { escapeXml } from '../../common/xml';
import type { Format } from '../../schemas/volume';

export interface VmDiskSpec {
  /** Absolute path of the disk's leaf volume. */
  path: string;
  format: Format;
}

/** vda, vdb, ... (at most 26 disks). */
export function diskTarget(index: number): string {
  if (!Number.isInteger(index) || index < 0 || index > 25)
    throw new RangeError(`disk index ${index} out of range`);
  return `vd${String.fromCharCode(97 + index)}`;
}

/** libvirt's alias (QEMU qdev id) of the index-th virtio disk, for HMP qemu-io: virtio-disk0, ... */
export function diskQdevId(index: number): string {
  return `virtio-disk${index}`;
}

export function testVmXml(name: string, disks: VmDiskSpec[]): string {
  const diskXml = disks
    .map(
      (d, i) => `    <disk type='file' device='disk'>
      <driver name='qemu' type='${d.format}' cache='none' discard='unmap'/>
      <source file='${escapeXml(d.path)}'/>
      <target dev='${diskTarget(i)}' bus='virtio'/>
    </disk>`,
    )
    .join('\n');
  return `<domain type='qemu'>
  <name>${escapeXml(name)}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
${diskXml}
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>`;
}
