// Guest-visible data checks: patterns written through the running guest's disk, images compared offline.
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Domain } from '../../src/libvirt';
import { hmpQemuIo } from '../../src/libvirt';

const exec = promisify(execFile);

export interface Pattern {
  byte: number;
  offset: number;
  length: number;
}

/** Writes a pattern through the guest's virtio disk (its own BlockBackend), then flushes. */
export async function writeThroughGuest(dom: Domain, diskIndex: number, p: Pattern): Promise<void> {
  const dev = `virtio-disk${diskIndex}`;
  await hmpQemuIo(dom, dev, `write -P 0x${p.byte.toString(16)} ${p.offset} ${p.length}`);
  await hmpQemuIo(dom, dev, 'flush');
}

/** The guest's view of a chain (read through `leaf`) as a raw file. */
export async function dumpGuestView(leaf: string, format: 'raw' | 'qcow2', out: string): Promise<string> {
  await fs.mkdir(path.dirname(out), { recursive: true });
  await exec('qemu-img', ['convert', '-U', '-f', format, '-O', 'raw', leaf, out]);
  return out;
}

/** qemu-img compare: true when the two images read the same bytes. */
export async function sameContent(
  a: { path: string; format: string },
  b: { path: string; format: string },
): Promise<boolean> {
  try {
    await exec('qemu-img', ['compare', '-U', '-f', a.format, '-F', b.format, a.path, b.path]);
    return true;
  } catch (err) {
    if ((err as { code?: number }).code === 1) return false;
    throw err;
  }
}

/** qemu-io read -P through the image's chain: true when every byte of the range has the pattern. */
export async function hasPattern(image: string, format: string, p: Pattern): Promise<boolean> {
  const args = [
    '-U',
    '-r',
    '-f',
    format,
    '-c',
    `read -P 0x${p.byte.toString(16)} ${p.offset} ${p.length}`,
    image,
  ];
  try {
    const { stdout } = await exec('qemu-io', args);
    return !stdout.includes('Pattern verification failed');
  } catch (err) {
    const out = (err as { stdout?: string }).stdout ?? '';
    if (out.includes('Pattern verification failed')) return false;
    throw err;
  }
}

export async function exists(p: string): Promise<boolean> {
  return fs.access(p).then(
    () => true,
    () => false,
  );
}
