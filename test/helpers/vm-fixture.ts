// Test VMs and scratch directories for libvirt integration tests.
//
// A test VM is a TCG guest (<domain type='qemu'>: KVM does not work here) with 64 MiB RAM,
// 1 vCPU, no OS and no boot device: QEMU idles in the firmware, and its block layer works fully
// (commit, pull, snapshots, qemu-io via HMP). Everything goes through src/libvirt (no virsh).
//
// Image access: libvirt runs QEMU as libvirt-qemu:libvirt-qemu (DAC, dynamic_ownership=1 by
// default, see /etc/libvirt/qemu.conf) and chowns each image of a disk's chain when the VM
// starts (and back when it stops), including overlays created by snapshots. It does not touch
// directories, so a scratch dir made by mkdtemp (mode 0700, root) must be opened up (0755) for
// QEMU to reach the images inside it.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { onTestFinished } from 'vitest';
import type { Domain, LibvirtConnection } from '../../src/libvirt';
import type { VmDiskSpec as DiskSpec } from '../../src/cli/dev/vm-xml';
import { testVmXml } from '../../src/cli/dev/vm-xml';
import { DomainUndefineFlags, isNoDomainError } from '../../src/libvirt';

export type { DiskSpec };
export { diskQdevId, diskTarget, testVmXml } from '../../src/cli/dev/vm-xml';

const execFileAsync = promisify(execFile);

export interface TestVmOptions {
  disks: DiskSpec[];
  /** Start the VM after defining it (default true). */
  start?: boolean;
  /** virDomainCreateWithFlags flags when starting (e.g. DomainStartFlags.PAUSED). */
  startFlags?: number;
}

export interface TestVm {
  name: string;
  uuid: string;
  /** The XML the domain was defined with. */
  xml: string;
  /** Open handle on the fixture's connection (freed by cleanup). */
  domain: Domain;
  /** Destroys (if running) and undefines the VM with its snapshot/checkpoint/nvram metadata. Never throws. */
  cleanup(): Promise<void>;
}

export function uniqueVmName(): string {
  return `lm-test-${randomBytes(6).toString('hex')}`;
}

/** Destroy (when running) + undefine with every metadata flag; ignores "no such domain". Never throws. */
export async function removeVm(conn: LibvirtConnection, name: string): Promise<void> {
  let dom: Domain | null = null;
  try {
    dom = await conn.findByName(name);
    if (!dom) return;
    if (await dom.isActive().catch(() => false)) await dom.destroy().catch(ignoreNoDomain);
    await dom
      .undefine(
        DomainUndefineFlags.SNAPSHOTS_METADATA |
          DomainUndefineFlags.CHECKPOINTS_METADATA |
          DomainUndefineFlags.NVRAM |
          DomainUndefineFlags.MANAGED_SAVE,
      )
      .catch(ignoreNoDomain);
  } catch (err) {
    console.warn(`cleanup of VM ${name} failed:`, err);
  } finally {
    dom?.free();
  }
}

function ignoreNoDomain(err: unknown): void {
  if (!isNoDomainError(err)) console.warn('VM cleanup step failed:', err);
}

/** Defines (and by default starts) a fresh test VM; its cleanup is also registered with the current test. */
export async function createTestVm(conn: LibvirtConnection, opts: TestVmOptions): Promise<TestVm> {
  const name = uniqueVmName();
  const xml = testVmXml(name, opts.disks);
  const domain = await conn.defineXml(xml);
  let cleaned: Promise<void> | null = null;
  const cleanup = (): Promise<void> => {
    cleaned ??= (async () => {
      domain.free();
      await removeVm(conn, name);
    })();
    return cleaned;
  };
  registerCleanup(cleanup);
  if (opts.start ?? true) {
    try {
      await domain.create(opts.startFlags ?? 0);
    } catch (err) {
      await cleanup();
      throw err;
    }
  }
  return { name, uuid: domain.uuid, xml, domain, cleanup };
}

export interface TempDir {
  path: string;
  cleanup(): Promise<void>;
}

/** A fresh directory under os.tmpdir(), readable by QEMU (0755), removed by cleanup / at test end. */
export async function createTempDir(prefix = 'lm-test-'): Promise<TempDir> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  await chmod(path, 0o755);
  const cleanup = (): Promise<void> =>
    rm(path, { recursive: true, force: true }).catch((err: unknown) => console.warn(`rm ${path}:`, err));
  registerCleanup(cleanup);
  return { path, cleanup };
}

/**
 * Registers `fn` to run when the current test finishes (pass or fail), swallowing its errors.
 * Outside a running test (e.g. in beforeAll) the caller must clean up itself: it is then a no-op
 * and returns false.
 */
export function registerCleanup(fn: () => Promise<void> | void): boolean {
  try {
    onTestFinished(async () => {
      try {
        await fn();
      } catch (err) {
        console.warn('cleanup failed:', err);
      }
    });
    return true;
  } catch {
    return false;
  }
}

/** `qemu-img create -f qcow2 [-b backing -F fmt] path size`; backing as given (relative stays relative). */
export async function qemuImgCreate(
  path: string,
  opts: { size?: string; backing?: string; backingFormat?: 'qcow2' | 'raw'; format?: 'qcow2' | 'raw' } = {},
): Promise<void> {
  const args = ['create', '-q', '-f', opts.format ?? 'qcow2'];
  if (opts.backing) args.push('-b', opts.backing, '-F', opts.backingFormat ?? 'qcow2');
  args.push(path);
  if (opts.size || !opts.backing) args.push(opts.size ?? '16M');
  await execFileAsync('qemu-img', args);
}

/** qemu-img info --backing-chain as parsed JSON (leaf first). */
export async function qemuImgChain(
  path: string,
): Promise<Array<{ filename: string; format: string; 'backing-filename'?: string }>> {
  const { stdout } = await execFileAsync('qemu-img', [
    'info',
    '--force-share',
    '--backing-chain',
    '--output=json',
    path,
  ]);
  return JSON.parse(stdout) as Array<{ filename: string; format: string; 'backing-filename'?: string }>;
}

/**
 * `qemu-io -r -f <format> <image> -c <command>` (read-only, image must not be in use).
 * Returns true when qemu-io succeeded (e.g. a `read -P` pattern check matched).
 */
export async function qemuIoCheck(
  image: string,
  command: string,
  format: 'qcow2' | 'raw' = 'qcow2',
): Promise<{ ok: boolean; output: string }> {
  try {
    const { stdout, stderr } = await execFileAsync('qemu-io', ['-r', '-f', format, '-c', command, image]);
    const output = stdout + stderr;
    return { ok: !/fail|error/i.test(output), output };
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    return { ok: false, output: `${e.stdout ?? ''}${e.stderr ?? ''}${e.message}` };
  }
}

export { pollUntil } from './poll';
