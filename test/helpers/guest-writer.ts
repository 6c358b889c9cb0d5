// The writing guest: a real Linux guest that writes to its disk while the host works on the disk's
// chain, and proves afterwards that no acknowledged write was lost.
//
// The guest (scripts/build-guest.sh: a Debian kernel booted directly, with a busybox initramfs whose
// /init is guest/init) writes 4 KiB self-describing records to vda sequentially from offset 0
// (record <seq> at seq * 4 KiB, 64 copies of "PROBE-REC run=<run> seq=<seq> ---...\n"), each with
// O_DIRECT + fsync, and prints "W <seq> <uptime>" on ttyS0 only after the write returned. Its serial
// console goes to a file, so the host knows exactly which writes the guest saw acknowledged; every
// such record must then be found byte for byte in the merged image.
//
// The host can also write known patterns through the guest's own disk device (HMP qemu-io on the
// virtio device's BlockBackend, i.e. the top of its current graph, whatever the chain is), followed by
// a flush: the same acknowledgement as the guest's, for data written in any phase of a block job.
//
//   const g = await startGuestWriter({ diskPath, format: 'qcow2' });   // resolves once the writer runs
//   await g.waitForAcks(g.acks().length + 100, 30_000);
//   await g.inject(0x41, 512 * MiB, 64 * KiB, 'base');
//   ... snapshots, block commit, pivot ...
//   await g.destroy();
//   expect(await g.verifyRecordsIn(base, 'qcow2')).toMatchObject({ ok: true });
//   expect(await g.verifyInjectedIn(base, 'qcow2')).toMatchObject({ ok: true });
//
// libvirt is driven with virsh (execFile): simple, and independent of src/libvirt. Like the other
// test VMs, the guest is a TCG domain (KVM does not work here), and its disk's directory must be
// reachable by QEMU (libvirt-qemu): see createTempDir in vm-fixture.ts.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, readSync } from 'node:fs';
import { chmod, copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, isAbsolute, join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, onTestFinished } from 'vitest';
import { escapeXml } from '../../src/common/xml';
import { REPO_ROOT, loadConfig } from '../../src/config';

const execFileAsync = promisify(execFile);

export const KiB = 1024;
export const MiB = 1024 * KiB;
/** Size of one guest record. */
export const RECORD_SIZE = 4 * KiB;
/** QOM path of the guest disk's BlockBackend (vda is the first virtio disk: qdev id virtio-disk0). */
export const GUEST_DISK_QOM = '/machine/peripheral/virtio-disk0/virtio-backend';
/** Records never go beyond this (or the disk's size), so host patterns above it are safe. */
export const MAX_RECORD_AREA = 256 * MiB;

export type ImageFormat = 'qcow2' | 'raw';

export interface GuestWriterOptions {
  /** The guest's disk (vda): an existing image, in a directory QEMU can reach. */
  diskPath: string;
  format: ImageFormat;
  /** Written into every record: 1-12 of [A-Za-z0-9_.-], padded with '_' to 12. Default: random. */
  runId?: string;
  /** Where the serial console goes (removed first). Default: `<disk dir>/<name>.serial.log`. */
  serialLogPath?: string;
  /** Domain name. Default `lm-test-gw-<random>`. */
  name?: string;
  /** Records the guest writes at most (then it powers off). Default: the record area, in records. */
  maxRecords?: number;
  /** How long the boot (start → writer running) may take. Default 120 s. */
  bootTimeoutMs?: number;
}

export interface AckedWrite {
  seq: number;
  /** Guest uptime (s) when the write was acknowledged. */
  uptime: number;
}

export interface InjectedPattern {
  /** Byte value written over the whole range. */
  pattern: number;
  offset: number;
  length: number;
  label?: string;
}

export interface ReadOptions {
  /** Read through the image's backing chain instead of the image alone (default: alone). */
  chain?: boolean;
  /** qemu-img -U: read an image that a running QEMU holds (the result may then be inconsistent). */
  forceShare?: boolean;
}

export interface RecordCheck {
  /** True when every acknowledged record is in the image, byte for byte. */
  ok: boolean;
  /** Acknowledged records (seq 0 .. acked-1): each W line acknowledges its record and all before it. */
  acked: number;
  /** The first acknowledged record that is missing or different. */
  firstBadSeq?: number;
  /** How many acknowledged records are missing or different. */
  badRecords?: number;
}

export interface PatternCheck {
  ok: boolean;
  checked: number;
  /** Injected patterns not (entirely) found, with the first wrong offset. */
  missing: Array<InjectedPattern & { firstBadOffset: number }>;
}

export interface GuestWriter {
  name: string;
  uuid: string;
  /** The run id as the guest writes it (12 chars). */
  runId: string;
  diskPath: string;
  format: ImageFormat;
  serialLogPath: string;
  maxRecords: number;
  /** Bytes at the start of vda that records may occupy: keep host patterns above. */
  recordAreaBytes: number;
  /** Milliseconds from `virsh start` to the guest's writer running. */
  bootMs: number;
  /** Waits until at least `n` writes are acknowledged; fails fast on a guest I/O error or stop. Returns the count. */
  waitForAcks(n: number, timeoutMs?: number): Promise<number>;
  /** The acknowledged seqs seen so far (serial log order). */
  acks(): number[];
  /** The acknowledged writes with the guest's uptime at acknowledgement. */
  ackLog(): AckedWrite[];
  /** Writes `pattern` over [offset, offset+length) through the guest's disk device, then flushes it. */
  inject(pattern: number, offset: number, length: number, label?: string): Promise<void>;
  /** Every successful inject, in order. */
  injected(): InjectedPattern[];
  /** Compares every acknowledged record with the image (alone, unless `chain`). */
  verifyRecordsIn(imagePath: string, format: ImageFormat, opts?: ReadOptions): Promise<RecordCheck>;
  /** Checks every injected pattern (later injections win where ranges overlap) in the image. */
  verifyInjectedIn(imagePath: string, format: ImageFormat, opts?: ReadOptions): Promise<PatternCheck>;
  /** The serial console so far (\r removed), for diagnostics. */
  console(): string;
  /** Stops the guest (virsh destroy) and keeps its definition; no-op when it is not running. */
  destroy(): Promise<void>;
  /** Destroys and undefines the domain. Idempotent, never throws. */
  cleanup(): Promise<void>;
}

// ---- virsh and QEMU monitor ------------------------------------------------------------------

/** `virsh -q ARGS` (LIBVIRT_DEFAULT_URI or qemu:///system); stdout, or an Error with virsh's message. */
export async function virsh(...args: string[]): Promise<string> {
  try {
    const { stdout } = await execFileAsync('virsh', ['-q', ...args], { maxBuffer: 16 * MiB });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`virsh ${args.join(' ')}: ${(e.stderr ?? '').trim() || e.message}`);
  }
}

/** An HMP command; virsh exits 0 even when it failed, so the reply text is returned as is. */
export async function hmp(domain: string, command: string): Promise<string> {
  return (await virsh('qemu-monitor-command', domain, '--hmp', command)).replace(/\r/g, '').trim();
}

/** A QMP command's `return` value. */
export async function qmp<T = unknown>(domain: string, execute: string, args?: object): Promise<T> {
  const reply = await virsh(
    'qemu-monitor-command',
    domain,
    JSON.stringify(args ? { execute, arguments: args } : { execute }),
  );
  const parsed = JSON.parse(reply) as { return?: T; error?: { class: string; desc: string } };
  if (parsed.error) throw new Error(`QMP ${execute}: ${parsed.error.class}: ${parsed.error.desc}`);
  return parsed.return as T;
}

/** One entry of QMP query-block-jobs. */
export interface QmpBlockJob {
  device: string;
  type: string;
  status: string;
  len: number;
  offset: number;
  speed: number;
  ready: boolean;
  error?: string;
}

export function queryBlockJobs(domain: string): Promise<QmpBlockJob[]> {
  return qmp<QmpBlockJob[]>(domain, 'query-block-jobs');
}

const JOB_GONE_OR_FAILED = new Set(['aborting', 'concluded', 'null', 'undefined']);

/**
 * Polls query-block-jobs until the domain's (only) block job has `status` (e.g. 'running', 'ready').
 * Fails fast when there is no job or it is ending (failed, cancelled), and at the deadline.
 */
export async function waitForBlockJobStatus(
  domain: string,
  status: string,
  timeoutMs: number,
): Promise<QmpBlockJob> {
  let last: QmpBlockJob | undefined;
  return waitFor(
    async () => {
      const jobs = await queryBlockJobs(domain);
      last = jobs[0];
      if (!last) throw new Error(`${domain}: no block job (waiting for status ${status})`);
      if (last.status === status) return last;
      if (JOB_GONE_OR_FAILED.has(last.status)) {
        throw new Error(
          `${domain}: block job ${last.status}${last.error ? `: ${last.error}` : ''} (waiting for ${status})`,
        );
      }
      return undefined;
    },
    timeoutMs,
    () => `block job status ${status} on ${domain} (last: ${JSON.stringify(last)})`,
    50,
  );
}

/**
 * Waits until libvirt itself holds the disk's mirror ready (live XML `<mirror ready='yes'>`): QEMU's
 * `status: ready` can be seen before libvirt has processed the READY event, and `blockjob --pivot`
 * refuses ("not ready for pivot yet") until it has.
 */
export async function waitForMirrorReady(domain: string, target: string, timeoutMs: number): Promise<void> {
  let last: string | undefined;
  await waitFor(
    async () => {
      const mirror = await libvirtMirror(domain, target);
      if (mirror === null) throw new Error(`${domain} ${target} has no block job mirror: the job has ended`);
      last = mirror.ready;
      return last === 'yes' ? true : undefined;
    },
    timeoutMs,
    () => `libvirt's mirror of ${domain} ${target} ready (last ready=${String(last)})`,
  );
}

/**
 * The `<mirror>` of disk `target` in the live XML (`virsh dumpxml`), read with its own pattern rather than
 * the product's parser so that a test of the product does not lean on it; null when the disk has none.
 */
export async function libvirtMirror(domain: string, target: string): Promise<{ ready?: string } | null> {
  const xml = await virsh('dumpxml', domain);
  const disk = [...xml.matchAll(/<disk\b[\s\S]*?<\/disk>/g)]
    .map((m) => m[0])
    .find((d) => new RegExp(`<target\\b[^>]*dev=['"]${target}['"]`).test(d));
  if (!disk) throw new Error(`${domain} has no disk ${target}`);
  const mirror = /<mirror\b[^>]*>/.exec(disk)?.[0];
  if (!mirror) return null;
  const ready = /\bready=['"]([^'"]*)['"]/.exec(mirror)?.[1];
  return ready === undefined ? {} : { ready };
}

/** The source path of a disk target of the running domain (`virsh domblklist`). */
export async function diskSource(domain: string, target = 'vda'): Promise<string> {
  for (const line of (await virsh('domblklist', domain)).split('\n')) {
    const [t, ...src] = line.trim().split(/\s+/);
    if (t === target) return src.join(' ');
  }
  throw new Error(`${domain} has no disk ${target}`);
}

/** Polls `check` until it returns a value (not undefined) or `timeoutMs` passes; errors from `check` propagate. */
export async function waitFor<T>(
  check: () => Promise<T | undefined> | T | undefined,
  timeoutMs: number,
  what: string | (() => string),
  intervalMs = 50,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) {
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${typeof what === 'string' ? what : what()}`,
      );
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

// ---- the guest image ---------------------------------------------------------------------------

export interface GuestImage {
  kernel: string;
  initrd: string;
}

/** Where scripts/build-guest.sh puts the guest (LIVEMERGE_DATA_DIR/guest, default .data/guest). */
export function guestImagePaths(): GuestImage {
  const dir = join(loadConfig().dataDir, 'guest');
  return { kernel: join(dir, 'vmlinux'), initrd: join(dir, 'initrd.img') };
}

let built: Promise<GuestImage> | undefined;

// The file's copies go when the file ends (a forked test process is ended by its pool, not by exit).
const bootDirs: string[] = [];
afterAll(async () => {
  for (const d of bootDirs.splice(0)) await rm(d, { recursive: true, force: true });
});

/**
 * The guest's kernel and initrd copied into a 0755 temp dir: QEMU runs as libvirt-qemu and cannot open files
 * under a checkout whose parents it may not traverse (e.g. a clone inside `mktemp -d`, mode 0700).
 */
async function readableByQemu(image: GuestImage): Promise<GuestImage> {
  const dir = await mkdtemp(join(tmpdir(), 'lm-gw-boot-'));
  await chmod(dir, 0o755);
  bootDirs.push(dir);
  const copy = { kernel: join(dir, 'vmlinux'), initrd: join(dir, 'initrd.img') };
  for (const k of ['kernel', 'initrd'] as const) {
    await copyFile(image[k], copy[k]);
    await chmod(copy[k], 0o644);
  }
  return copy;
}

/** Runs scripts/build-guest.sh once per process: a no-op (~0.5 s) when the guest is up to date. */
export function ensureGuestBuilt(): Promise<GuestImage> {
  built ??= execFileAsync('bash', [join(REPO_ROOT, 'scripts/build-guest.sh')], { maxBuffer: 16 * MiB }).then(
    () => readableByQemu(guestImagePaths()),
    (err: unknown) => {
      built = undefined;
      const e = err as { stdout?: string; stderr?: string; message: string };
      throw new Error(`scripts/build-guest.sh failed: ${e.message}\n${e.stdout ?? ''}${e.stderr ?? ''}`);
    },
  );
  return built;
}

// ---- the serial console ----------------------------------------------------------------------

const ACK_LINE = /^W (\d+) (\d+(?:\.\d+)?)$/;
/** Console lines after which the writer will not acknowledge anything any more. */
const WRITER_STOPPED = /^PROBE (IOERR|ERR|DONE)\b|Kernel panic/;

/** Incremental reader of the serial log: complete lines only. */
class SerialLog {
  private offset = 0;
  private partial = '';
  readonly lines: string[] = [];
  readonly ackLog: AckedWrite[] = [];
  stopLine: string | undefined;

  constructor(readonly path: string) {}

  refresh(): void {
    let fd: number;
    try {
      fd = openSync(this.path, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    try {
      const buf = Buffer.alloc(64 * KiB);
      for (;;) {
        const n = readSync(fd, buf, 0, buf.length, this.offset);
        if (n <= 0) break;
        this.offset += n;
        this.partial += buf.subarray(0, n).toString('latin1');
      }
    } finally {
      closeSync(fd);
    }
    const parts = this.partial.split('\n');
    this.partial = parts.pop() ?? '';
    for (const raw of parts) {
      const line = raw.replace(/\r/g, '');
      this.lines.push(line);
      const m = ACK_LINE.exec(line);
      if (m) this.ackLog.push({ seq: Number(m[1]), uptime: Number(m[2]) });
      else if (this.stopLine === undefined && WRITER_STOPPED.test(line)) this.stopLine = line;
    }
  }

  /** Records 0..n-1 are acknowledged: the writer is sequential and prints W only after its write returned. */
  ackedCount(): number {
    let max = -1;
    for (const a of this.ackLog) if (a.seq > max) max = a.seq;
    return max + 1;
  }

  text(): string {
    return [...this.lines, this.partial].join('\n');
  }

  tail(n = 15): string {
    return [...this.lines.slice(-n), this.partial].join('\n');
  }
}

// ---- image reads -----------------------------------------------------------------------------

/**
 * Bytes [offset, offset+length) of an image as the guest would read them. The range is cut out by a
 * raw node (offset, size) over the image's format node, so only it is read (qemu-img dd would do, but
 * its `count` counts from the start of the image, not from `skip`, in QEMU 7.2).
 */
export async function readImageRange(
  imagePath: string,
  format: ImageFormat,
  offset: number,
  length: number,
  opts: ReadOptions = {},
): Promise<Buffer> {
  if (length <= 0) return Buffer.alloc(0);
  const align = 512;
  const start = Math.floor(offset / align) * align;
  const end = Math.ceil((offset + length) / align) * align;
  const file = { driver: 'file', filename: imagePath };
  // qcow2 alone: without its backing file (unallocated clusters read as zeros).
  const image =
    format === 'qcow2'
      ? { driver: 'qcow2', file, ...(opts.chain ? {} : { backing: null }) }
      : { driver: 'raw', file };
  const range = { driver: 'raw', offset: start, size: end - start, file: image };
  const dir = await mkdtemp(join(tmpdir(), 'lm-gw-read-'));
  try {
    const out = join(dir, 'range.raw');
    const shareArgs = opts.forceShare ? ['-U'] : [];
    await execFileAsync('qemu-img', [
      'convert',
      ...shareArgs,
      '-O',
      'raw',
      `json:${JSON.stringify(range)}`,
      out,
    ]);
    const data = await readFile(out);
    if (data.length !== end - start) throw new Error(`read ${data.length} bytes, expected ${end - start}`);
    return data.subarray(offset - start, offset - start + length);
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`reading ${imagePath} [${offset}, +${length}): ${(e.stderr ?? '').trim() || e.message}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** The 4 KiB record the guest writes for `seq` in run `runId` (already padded to 12 chars). */
export function expectedRecord(runId: string, seq: number): Buffer {
  const line = `PROBE-REC run=${runId} seq=${String(seq).padStart(10, '0')} ---------------------\n`;
  if (line.length !== 64) throw new Error(`record line of run ${runId} is ${line.length} bytes, not 64`);
  return Buffer.from(line.repeat(RECORD_SIZE / 64), 'latin1');
}

/** The guest's form of a run id: 1-12 of [A-Za-z0-9_.-], padded with '_' to 12. */
export function normalizeRunId(runId: string): string {
  if (!/^[A-Za-z0-9_.-]{1,12}$/.test(runId))
    throw new Error(`invalid runId ${JSON.stringify(runId)}: 1-12 of [A-Za-z0-9_.-]`);
  return runId.padEnd(12, '_');
}

export function guestWriterXml(o: {
  name: string;
  image: GuestImage;
  diskPath: string;
  format: ImageFormat;
  serialLogPath: string;
  runId: string;
  maxRecords: number;
}): string {
  const cmdline = [
    'console=ttyS0',
    'quiet',
    'loglevel=1',
    'panic=-1', // a panic reboots, and on_reboot destroys: the domain stops instead of hanging
    'mitigations=off',
    'tsc=reliable',
    'no_timer_check',
    'rodata=off',
    `probe.run=${o.runId}`,
    `probe.max=${o.maxRecords}`,
  ].join(' ');
  return `<domain type='qemu'>
  <name>${escapeXml(o.name)}</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>${escapeXml(o.image.kernel)}</kernel>
    <initrd>${escapeXml(o.image.initrd)}</initrd>
    <cmdline>${escapeXml(cmdline)}</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='${o.format}'/>
      <source file='${escapeXml(o.diskPath)}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='file'><source path='${escapeXml(o.serialLogPath)}'/></serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>`;
}

/** Registers `fn` with the running test (onTestFinished); false outside a test (e.g. in beforeAll). */
function registerCleanup(fn: () => Promise<void>): boolean {
  try {
    onTestFinished(fn);
    return true;
  } catch {
    return false;
  }
}

async function isRunning(name: string): Promise<boolean> {
  try {
    return (await virsh('domstate', name)).trim() === 'running';
  } catch {
    return false;
  }
}

async function virtualSize(imagePath: string, format: ImageFormat): Promise<number> {
  const { stdout } = await execFileAsync('qemu-img', [
    'info',
    '-U',
    '-f',
    format,
    '--output=json',
    imagePath,
  ]);
  return (JSON.parse(stdout) as { 'virtual-size': number })['virtual-size'];
}

function checkByte(what: string, v: number, max = Number.MAX_SAFE_INTEGER): void {
  if (!Number.isSafeInteger(v) || v < 0 || v > max)
    throw new RangeError(`${what} must be an integer in [0, ${max}], got ${v}`);
}

// ---- the fixture -----------------------------------------------------------------------------

/**
 * Defines and starts the writing guest on `diskPath` and resolves once its writer runs. Inside a
 * test its cleanup is registered with onTestFinished; elsewhere (beforeAll) call cleanup() yourself.
 */
export async function startGuestWriter(opts: GuestWriterOptions): Promise<GuestWriter> {
  if (!isAbsolute(opts.diskPath)) throw new Error(`diskPath must be absolute: ${opts.diskPath}`);
  const image = await ensureGuestBuilt();
  const name = opts.name ?? `lm-test-gw-${randomBytes(4).toString('hex')}`;
  const runId = normalizeRunId(opts.runId ?? randomBytes(6).toString('hex'));
  const serialLogPath = opts.serialLogPath ?? join(dirname(opts.diskPath), `${name}.serial.log`);
  const recordAreaBytes = Math.min(MAX_RECORD_AREA, await virtualSize(opts.diskPath, opts.format));
  const maxRecords = opts.maxRecords ?? Math.floor(recordAreaBytes / RECORD_SIZE);
  if (maxRecords * RECORD_SIZE > recordAreaBytes)
    throw new RangeError(`maxRecords ${maxRecords} exceeds the disk`);
  await rm(serialLogPath, { force: true });

  const log = new SerialLog(serialLogPath);
  const injections: InjectedPattern[] = [];
  let uuid = '';
  let cleaned: Promise<void> | undefined;
  const cleanup = (): Promise<void> =>
    (cleaned ??= (async () => {
      await virsh('destroy', name).catch(() => undefined);
      await virsh('undefine', name, '--snapshots-metadata', '--checkpoints-metadata').catch(() => undefined);
    })());
  registerCleanup(cleanup);

  const failure = (what: string): Error =>
    new Error(`guest ${name} (run ${runId}): ${what}\n--- serial console (last lines) ---\n${log.tail()}`);

  const xmlDir = await mkdtemp(join(tmpdir(), 'lm-gw-xml-'));
  let bootMs: number;
  try {
    const xmlPath = join(xmlDir, 'domain.xml');
    await writeFile(
      xmlPath,
      guestWriterXml({
        name,
        image,
        diskPath: opts.diskPath,
        format: opts.format,
        serialLogPath,
        runId,
        maxRecords,
      }),
    );
    await virsh('define', xmlPath);
    uuid = (await virsh('domuuid', name)).trim();
    const t0 = Date.now();
    await virsh('start', name);
    let lastStateCheck = Date.now();
    await waitFor(
      async () => {
        log.refresh();
        const ready = log.lines.find((l) => l.startsWith('PROBE READY'));
        if (ready) {
          if (!ready.includes(` run=${runId} `)) throw failure(`guest reports another run: ${ready}`);
          return true;
        }
        if (log.stopLine !== undefined) throw failure(`writer did not start: ${log.stopLine}`);
        if (Date.now() - lastStateCheck > 1000) {
          lastStateCheck = Date.now();
          if (!(await isRunning(name))) throw failure('domain stopped during boot');
        }
        return undefined;
      },
      opts.bootTimeoutMs ?? 120_000,
      () => `guest ${name} to boot\n${log.tail()}`,
    );
    bootMs = Date.now() - t0;
  } catch (err) {
    await cleanup();
    throw err;
  } finally {
    await rm(xmlDir, { recursive: true, force: true });
  }

  const acks = (): number[] => {
    log.refresh();
    return log.ackLog.map((a) => a.seq);
  };

  return {
    name,
    uuid,
    runId,
    diskPath: opts.diskPath,
    format: opts.format,
    serialLogPath,
    maxRecords,
    recordAreaBytes,
    bootMs,
    acks,
    ackLog: () => {
      log.refresh();
      return log.ackLog.map((a) => ({ ...a }));
    },
    console: () => {
      log.refresh();
      return log.text();
    },
    injected: () => injections.map((i) => ({ ...i })),

    async waitForAcks(n: number, timeoutMs = 60_000): Promise<number> {
      if (n > maxRecords)
        throw new RangeError(`the guest writes at most ${maxRecords} records, ${n} were asked for`);
      let lastStateCheck = 0; // the first poll that falls short also checks that the domain runs
      return waitFor(
        async () => {
          log.refresh();
          const count = log.ackedCount();
          if (count >= n) return count;
          if (log.stopLine !== undefined)
            throw failure(`writer stopped after ${count} acks (${n} wanted): ${log.stopLine}`);
          if (Date.now() - lastStateCheck > 1000) {
            lastStateCheck = Date.now();
            if (!(await isRunning(name))) throw failure(`domain is not running (${count} acks, ${n} wanted)`);
          }
          return undefined;
        },
        timeoutMs,
        () => `${n} acknowledged writes of ${name} (have ${log.ackedCount()})`,
      );
    },

    async inject(pattern: number, offset: number, length: number, label?: string): Promise<void> {
      checkByte('pattern', pattern, 255);
      checkByte('offset', offset);
      checkByte('length', length);
      if (length === 0) throw new RangeError('length must be > 0');
      if (offset < recordAreaBytes) {
        throw new RangeError(
          `offset ${offset} is in the guest's record area [0, ${recordAreaBytes}): inject above it`,
        );
      }
      for (const cmd of [`write -P 0x${pattern.toString(16)} ${offset} ${length}`, 'flush']) {
        // virsh exits 0 even when HMP failed: an empty reply is success, any text is the error.
        const reply = await hmp(name, `qemu-io -d ${GUEST_DISK_QOM} "${cmd}"`);
        if (reply !== '')
          throw new Error(`qemu-io "${cmd}" on ${name}${label ? ` (${label})` : ''} failed: ${reply}`);
      }
      injections.push(label === undefined ? { pattern, offset, length } : { pattern, offset, length, label });
    },

    async verifyRecordsIn(
      imagePath: string,
      format: ImageFormat,
      ropts: ReadOptions = {},
    ): Promise<RecordCheck> {
      log.refresh();
      const acked = log.ackedCount();
      if (acked === 0) return { ok: true, acked };
      const data = await readImageRange(imagePath, format, 0, acked * RECORD_SIZE, ropts);
      let firstBadSeq: number | undefined;
      let badRecords = 0;
      for (let seq = 0; seq < acked; seq++) {
        const got = data.subarray(seq * RECORD_SIZE, (seq + 1) * RECORD_SIZE);
        if (!got.equals(expectedRecord(runId, seq))) {
          firstBadSeq ??= seq;
          badRecords++;
        }
      }
      return firstBadSeq === undefined ? { ok: true, acked } : { ok: false, acked, firstBadSeq, badRecords };
    },

    async verifyInjectedIn(
      imagePath: string,
      format: ImageFormat,
      ropts: ReadOptions = {},
    ): Promise<PatternCheck> {
      const missing: PatternCheck['missing'] = [];
      for (const [i, inj] of injections.entries()) {
        const want = Buffer.alloc(inj.length, inj.pattern);
        for (const later of injections.slice(i + 1)) {
          const from = Math.max(inj.offset, later.offset);
          const to = Math.min(inj.offset + inj.length, later.offset + later.length);
          if (from < to) want.fill(later.pattern, from - inj.offset, to - inj.offset);
        }
        const got = await readImageRange(imagePath, format, inj.offset, inj.length, ropts);
        if (!got.equals(want)) {
          let k = 0;
          while (k < got.length && got[k] === want[k]) k++;
          missing.push({ ...inj, firstBadOffset: inj.offset + k });
        }
      }
      return { ok: missing.length === 0, checked: injections.length, missing };
    },

    async destroy(): Promise<void> {
      try {
        await virsh('destroy', name);
      } catch (err) {
        if (await isRunning(name)) throw err; // else it had stopped already (e.g. powered off)
      }
      log.refresh();
    },

    cleanup,
  };
}
