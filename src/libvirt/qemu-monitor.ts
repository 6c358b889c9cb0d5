// virDomainQemuMonitorCommand (libvirt-qemu.so.0): raw QMP/HMP passthrough to a domain's QEMU.
// Meant for diagnostics and tests (e.g. HMP `qemu-io` to write through a guest disk); libvirt
// marks the domain as tainted ("custom-monitor") when it is used. Not for production paths.
import type { Domain } from './domain';
import type { RawPtr } from './ffi';
import { takeCString, virDomainQemuMonitorCommand } from './ffi';
import { failsIfNegative, invoke } from './invoke';

export const QemuMonitorCommandFlags = { DEFAULT: 0, HMP: 1 << 0 } as const;

/** Sends `command` (QMP JSON, or HMP text with `{ hmp: true }`) and returns QEMU's reply text. */
export async function qemuMonitorCommand(
  domain: Domain,
  command: string,
  opts: { hmp?: boolean } = {},
): Promise<string> {
  const out: [RawPtr | null] = [null];
  const fn = virDomainQemuMonitorCommand();
  await invoke(
    domain.ctx,
    'virDomainQemuMonitorCommand',
    fn,
    failsIfNegative,
    domain.ptr,
    command,
    out,
    opts.hmp ? QemuMonitorCommandFlags.HMP : 0,
  );
  return out[0] ? takeCString(out[0]) : '';
}

/**
 * Runs a qemu-io command through the guest device's BlockBackend, e.g.
 * `write -P 0x41 0 64k` on virtio-disk0. HMP answers with empty text on success and with
 * an error text for a bad command or device, which makes this throw. Note: qemu-io's own
 * result lines (including a failed `read -P` pattern check) are not returned through HMP, so
 * verify data offline (qemu-io -r on the image) rather than with reads here.
 */
export async function hmpQemuIo(domain: Domain, qdevId: string, qemuIoCommand: string): Promise<void> {
  if (qemuIoCommand.includes('"')) throw new Error('qemu-io command must not contain double quotes');
  const reply = await qemuMonitorCommand(
    domain,
    `qemu-io -d /machine/peripheral/${qdevId}/virtio-backend "${qemuIoCommand}"`,
    { hmp: true },
  );
  if (reply.trim() !== '')
    throw new Error(`qemu-io ${JSON.stringify(qemuIoCommand)} on ${qdevId} failed: ${reply.trim()}`);
}
