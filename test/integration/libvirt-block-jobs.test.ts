// Real libvirtd/QEMU block jobs through src/libvirt: live snapshots, active commit + pivot,
// intermediate commit, pull/rebase, speed control and abort, all observed via BLOCK_JOB_2 events.
// Data is written through the guest device (HMP qemu-io) and verified offline with qemu-io -r.
import { basename, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BlockJobEvent, Domain } from '../../src/libvirt';
import {
  BlockJobStatus,
  BlockJobType,
  LibvirtConnection,
  SnapshotCreateFlags,
  hmpQemuIo,
  nameOf,
} from '../../src/libvirt';
import type { TestVm } from '../helpers/vm-fixture';
import {
  createTempDir,
  createTestVm,
  pollUntil,
  qemuImgChain,
  qemuImgCreate,
  qemuIoCheck,
  registerCleanup,
} from '../helpers/vm-fixture';

const DISK = 'vda';
const QDEV = 'virtio-disk0';
const EVENT_TIMEOUT = 60_000;
const LIVE_SNAPSHOT =
  SnapshotCreateFlags.DISK_ONLY | SnapshotCreateFlags.NO_METADATA | SnapshotCreateFlags.ATOMIC;

let conn: LibvirtConnection;

beforeAll(async () => {
  conn = await LibvirtConnection.open();
});

afterAll(async () => {
  await conn?.close();
});

function snapshotXml(file: string): string {
  return `<domainsnapshot><disks><disk name='${DISK}' snapshot='external'><driver type='qcow2'/><source file='${file}'/></disk></disks></domainsnapshot>`;
}

/** Live snapshot: libvirt creates `file` (absolute backing reference to the current leaf). */
async function snapshot(dom: Domain, file: string): Promise<void> {
  await dom.snapshotCreateXml(snapshotXml(file), LIVE_SNAPSHOT);
}

/** Live snapshot onto an overlay pre-created with a RELATIVE backing name (DESIGN: relative refs). */
async function snapshotReuse(dom: Domain, dir: string, file: string, leaf: string): Promise<void> {
  await qemuImgCreate(join(dir, file), { backing: leaf, backingFormat: 'qcow2' });
  await dom.snapshotCreateXml(snapshotXml(join(dir, file)), LIVE_SNAPSHOT | SnapshotCreateFlags.REUSE_EXT);
}

/** The disk's chain from the live XML, leaf first (source, then nested backingStore sources). */
async function liveChain(dom: Domain): Promise<string[]> {
  const xml = await dom.xml();
  const disk = [...xml.matchAll(/<disk\b[\s\S]*?<\/disk>/g)]
    .map((m) => m[0])
    .find((d) => d.includes(`<target dev='${DISK}'`));
  if (!disk) throw new Error(`disk ${DISK} not in live XML`);
  return [...disk.matchAll(/<source file='([^']+)'/g)].map((m) => basename(m[1]!));
}

function jobEvent(vm: TestVm, status: number, type?: number): (e: BlockJobEvent) => boolean {
  return (e) =>
    e.domainUuid === vm.uuid &&
    e.disk === DISK &&
    e.status === status &&
    (type === undefined || e.type === type);
}

/** All BLOCK_JOB_2 events of `vm` during the current test (for assertions and diagnostics). */
function recordJobEvents(vm: TestVm): BlockJobEvent[] {
  const events: BlockJobEvent[] = [];
  registerCleanup(
    conn.onBlockJob((e) => {
      if (e.domainUuid === vm.uuid) events.push(e);
    }),
  );
  return events;
}

async function expectPattern(image: string, pattern: number, offset: string, length: string): Promise<void> {
  const cmd = `read -P 0x${pattern.toString(16)} ${offset} ${length}`;
  const r = await qemuIoCheck(image, cmd);
  expect(r.ok, `${basename(image)}: ${cmd}\n${r.output}`).toBe(true);
}

async function expectNotPattern(
  image: string,
  pattern: number,
  offset: string,
  length: string,
): Promise<void> {
  const cmd = `read -P 0x${pattern.toString(16)} ${offset} ${length}`;
  const r = await qemuIoCheck(image, cmd);
  expect(r.ok, `negative control ${basename(image)}: ${cmd} should fail`).toBe(false);
  expect(r.output).toContain('Pattern verification failed');
}

describe('live block jobs', () => {
  it('active commit with pivot of a 3-deep chain, driven by READY/COMPLETED events; data lands in base', async () => {
    const dir = (await createTempDir()).path;
    const base = join(dir, 'base.qcow2');
    await qemuImgCreate(base, { size: '16M' });
    const vm = await createTestVm(conn, { disks: [{ path: base, format: 'qcow2' }] });
    const events = recordJobEvents(vm);
    const dom = vm.domain;

    await hmpQemuIo(dom, QDEV, 'write -P 0x41 0 256k'); // AAAA… into base (0–256k)
    await snapshot(dom, join(dir, 's1.qcow2'));
    await hmpQemuIo(dom, QDEV, 'write -P 0x42 64k 64k'); // BBBB into s1
    await snapshot(dom, join(dir, 's2.qcow2'));
    await hmpQemuIo(dom, QDEV, 'write -P 0x43 128k 64k'); // CCCC into s2
    await snapshotReuse(dom, dir, 's3.qcow2', 's2.qcow2'); // REUSE_EXT, relative backing name
    await hmpQemuIo(dom, QDEV, 'write -P 0x44 192k 64k'); // DD into s3
    expect(await liveChain(dom)).toEqual(['s3.qcow2', 's2.qcow2', 's1.qcow2', 'base.qcow2']);
    expect((await qemuImgChain(join(dir, 's3.qcow2')))[0]?.['backing-filename']).toBe('s2.qcow2');

    const ready = conn.waitForBlockJob(
      jobEvent(vm, BlockJobStatus.READY, BlockJobType.ACTIVE_COMMIT),
      EVENT_TIMEOUT,
    );
    await dom.blockCommit(DISK, base, null, 0, { active: true, relative: true });
    const commitReturnedAt = performance.now();
    const readyEvent = await ready;
    const info = await dom.blockJobInfo(DISK);
    expect(info).toMatchObject({ type: BlockJobType.ACTIVE_COMMIT, bandwidth: 0 });
    expect(info!.cur).toBe(info!.end);

    const completed = conn.waitForBlockJob(
      jobEvent(vm, BlockJobStatus.COMPLETED, BlockJobType.ACTIVE_COMMIT),
      EVENT_TIMEOUT,
    );
    await dom.blockJobAbort(DISK, { pivot: true });
    const pivotReturnedAt = performance.now();
    const done = await completed;
    console.log(
      `active commit: READY event ${(readyEvent.receivedAt - commitReturnedAt).toFixed(2)} ms after blockCommit returned; ` +
        `COMPLETED event ${(done.receivedAt - pivotReturnedAt).toFixed(2)} ms relative to the pivot call returning`,
    );
    expect(await dom.blockJobInfo(DISK)).toBeNull();
    expect(await liveChain(dom)).toEqual(['base.qcow2']);
    expect(events.map((e) => nameOf(BlockJobStatus, e.status))).toEqual(['READY', 'COMPLETED']);

    await dom.destroy();
    await expectPattern(base, 0x41, '0', '64k');
    await expectPattern(base, 0x42, '64k', '64k');
    await expectPattern(base, 0x43, '128k', '64k');
    await expectPattern(base, 0x44, '192k', '64k');
    await expectNotPattern(base, 0x41, '64k', '64k'); // negative control: s1's data did override base
    await expectNotPattern(base, 0x44, '0', '64k');
  });

  it('intermediate commit (RELATIVE) emits COMPLETED and leaves the leaf on base with a relative backing name', async () => {
    const dir = (await createTempDir()).path;
    const base = join(dir, 'base.qcow2');
    await qemuImgCreate(base, { size: '16M' });
    const vm = await createTestVm(conn, { disks: [{ path: base, format: 'qcow2' }] });
    const dom = vm.domain;
    await hmpQemuIo(dom, QDEV, 'write -P 0x41 0 64k');
    await snapshotReuse(dom, dir, 's1.qcow2', 'base.qcow2');
    await hmpQemuIo(dom, QDEV, 'write -P 0x42 64k 64k');
    await snapshotReuse(dom, dir, 's2.qcow2', 's1.qcow2');
    await hmpQemuIo(dom, QDEV, 'write -P 0x43 128k 64k');
    expect(await liveChain(dom)).toEqual(['s2.qcow2', 's1.qcow2', 'base.qcow2']);

    const completed = conn.waitForBlockJob(
      jobEvent(vm, BlockJobStatus.COMPLETED, BlockJobType.COMMIT),
      EVENT_TIMEOUT,
    );
    await dom.blockCommit(DISK, base, join(dir, 's1.qcow2'), 0, { relative: true });
    await completed;
    expect(await dom.blockJobInfo(DISK)).toBeNull();
    expect(await liveChain(dom)).toEqual(['s2.qcow2', 'base.qcow2']);
    expect((await qemuImgChain(join(dir, 's2.qcow2')))[0]?.['backing-filename']).toBe('base.qcow2');
    await hmpQemuIo(dom, QDEV, 'write -P 0x45 192k 64k'); // guest keeps writing after the merge

    await dom.destroy();
    const leaf = join(dir, 's2.qcow2');
    await expectPattern(leaf, 0x41, '0', '64k');
    await expectPattern(leaf, 0x42, '64k', '64k');
    await expectPattern(leaf, 0x43, '128k', '64k');
    await expectPattern(leaf, 0x45, '192k', '64k');
    await expectPattern(base, 0x42, '64k', '64k'); // s1's data is now in base
    await expectNotPattern(base, 0x43, '128k', '64k'); // but not the leaf's
  });

  it('block pull: blockRebase onto base, then a full blockPull, each with a COMPLETED event', async () => {
    const dir = (await createTempDir()).path;
    const base = join(dir, 'base.qcow2');
    await qemuImgCreate(base, { size: '16M' });
    const vm = await createTestVm(conn, { disks: [{ path: base, format: 'qcow2' }] });
    const dom = vm.domain;
    await hmpQemuIo(dom, QDEV, 'write -P 0x41 0 64k');
    await snapshotReuse(dom, dir, 's1.qcow2', 'base.qcow2');
    await hmpQemuIo(dom, QDEV, 'write -P 0x42 64k 64k');
    await snapshotReuse(dom, dir, 's2.qcow2', 's1.qcow2');
    await hmpQemuIo(dom, QDEV, 'write -P 0x43 128k 64k');

    const rebased = conn.waitForBlockJob(
      jobEvent(vm, BlockJobStatus.COMPLETED, BlockJobType.PULL),
      EVENT_TIMEOUT,
    );
    await dom.blockRebase(DISK, base, 0, { relative: true });
    await rebased;
    expect(await liveChain(dom)).toEqual(['s2.qcow2', 'base.qcow2']);
    expect((await qemuImgChain(join(dir, 's2.qcow2')))[0]?.['backing-filename']).toBe('base.qcow2');

    const pulled = conn.waitForBlockJob(
      jobEvent(vm, BlockJobStatus.COMPLETED, BlockJobType.PULL),
      EVENT_TIMEOUT,
    );
    await dom.blockPull(DISK, 0);
    await pulled;
    expect(await liveChain(dom)).toEqual(['s2.qcow2']);

    await dom.destroy();
    const leaf = join(dir, 's2.qcow2');
    expect((await qemuImgChain(leaf))[0]?.['backing-filename']).toBeUndefined();
    await expectPattern(leaf, 0x41, '0', '64k');
    await expectPattern(leaf, 0x42, '64k', '64k');
    await expectPattern(leaf, 0x43, '128k', '64k');
    await expectNotPattern(leaf, 0x43, '0', '64k');
  });

  it('bandwidth-limited job: info reports bytes/s, setSpeed changes it, abort without pivot cancels and keeps the chain', async () => {
    const dir = (await createTempDir()).path;
    const base = join(dir, 'base.qcow2');
    await qemuImgCreate(base, { size: '64M' });
    const vm = await createTestVm(conn, { disks: [{ path: base, format: 'qcow2' }] });
    const events = recordJobEvents(vm);
    const dom = vm.domain;
    await hmpQemuIo(dom, QDEV, 'write -P 0x41 0 64k');
    await snapshotReuse(dom, dir, 's1.qcow2', 'base.qcow2');
    // More than QEMU's mirror buffer (16 MiB, copied before the rate limit first applies), so a
    // throttled job is still far from done when we look at it.
    await hmpQemuIo(dom, QDEV, 'write -P 0x42 0 40M');

    // 1) throttled active commit, then abort before READY → CANCELED, nothing pivoted.
    await dom.blockCommit(DISK, null, null, 64 * 1024, { active: true, relative: true });
    const info = await dom.blockJobInfo(DISK);
    expect(info).toMatchObject({ type: BlockJobType.ACTIVE_COMMIT, bandwidth: 64 * 1024 });
    expect(info!.end).toBeGreaterThan(0);
    await dom.blockJobSetSpeed(DISK, 128 * 1024);
    expect((await dom.blockJobInfo(DISK))?.bandwidth).toBe(128 * 1024);
    const progress = await dom.blockJobInfo(DISK);
    expect(progress!.cur).toBeLessThan(progress!.end);

    const canceled = conn.waitForBlockJob(
      jobEvent(vm, BlockJobStatus.CANCELED, BlockJobType.ACTIVE_COMMIT),
      EVENT_TIMEOUT,
    );
    await dom.blockJobAbort(DISK, { async: true });
    await canceled;
    await pollUntil(async () => (await dom.blockJobInfo(DISK)) === null, 10_000, 'job gone after cancel');
    expect(await liveChain(dom)).toEqual(['s1.qcow2', 'base.qcow2']);

    // 2) again throttled, then lifted with setSpeed(0) → READY; abort without pivot keeps the chain.
    const ready = conn.waitForBlockJob(jobEvent(vm, BlockJobStatus.READY), EVENT_TIMEOUT);
    await dom.blockCommit(DISK, null, null, 64 * 1024, { active: true, relative: true });
    expect((await dom.blockJobInfo(DISK))?.bandwidth).toBe(64 * 1024);
    await dom.blockJobSetSpeed(DISK, 0);
    expect((await dom.blockJobInfo(DISK))?.bandwidth).toBe(0);
    await ready;
    // libvirt reports an abort without pivot after READY as CANCELED too (QEMU says COMPLETED).
    const finished = conn.waitForBlockJob(
      jobEvent(vm, BlockJobStatus.CANCELED, BlockJobType.ACTIVE_COMMIT),
      EVENT_TIMEOUT,
    );
    await dom.blockJobAbort(DISK); // no pivot, synchronous
    await finished;
    expect(await dom.blockJobInfo(DISK)).toBeNull();
    expect(await liveChain(dom)).toEqual(['s1.qcow2', 'base.qcow2']);
    expect(events.map((e) => `${nameOf(BlockJobType, e.type)}/${nameOf(BlockJobStatus, e.status)}`)).toEqual([
      'ACTIVE_COMMIT/CANCELED',
      'ACTIVE_COMMIT/READY',
      'ACTIVE_COMMIT/CANCELED',
    ]);

    await dom.destroy();
    const leaf = join(dir, 's1.qcow2');
    await expectPattern(leaf, 0x42, '0', '40M'); // the leaf still holds its data
    await expectNotPattern(leaf, 0x41, '0', '64k'); // and still overrides base's data
    // Still a valid 2-deep chain (base may hold committed data; the leaf overrides it: DESIGN).
    expect((await qemuImgChain(leaf)).map((i) => basename(i.filename))).toEqual(['s1.qcow2', 'base.qcow2']);
  });
});
