// Real libvirtd/QEMU: connection, domain lifecycle, XML, errors, events, event-loop behaviour.
import { execFile } from 'node:child_process';
import { stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LifecycleEventInfo } from '../../src/libvirt';
import {
  DomainStartFlags,
  DomainState,
  DomainUndefineFlags,
  ErrorCode,
  ErrorDomain,
  LibvirtConnection,
  LibvirtError,
  LifecycleEvent,
  LifecycleStoppedDetail,
  hmpQemuIo,
  isLibvirtError,
} from '../../src/libvirt';
import { eventLoop } from '../../src/libvirt/event-loop';
import {
  createTempDir,
  createTestVm,
  pollUntil,
  qemuImgCreate,
  testVmXml,
  uniqueVmName,
} from '../helpers/vm-fixture';

const execFileAsync = promisify(execFile);

let conn: LibvirtConnection;

beforeAll(async () => {
  conn = await LibvirtConnection.open();
});

afterAll(async () => {
  await conn?.close();
});

async function oneDiskVm(start: boolean) {
  const dir = await createTempDir();
  const image = join(dir.path, 'disk.qcow2');
  await qemuImgCreate(image, { size: '16M' });
  return createTestVm(conn, { disks: [{ path: image, format: 'qcow2' }], start });
}

describe('libvirt connection and domains', () => {
  it('opens qemu:///system (or LIBVIRT_DEFAULT_URI) and reports it alive', async () => {
    expect(conn.uri).toBe(process.env.LIBVIRT_DEFAULT_URI ?? 'qemu:///system');
    expect(await conn.isAlive()).toBe(true);
  });

  it('defines, lists, looks up, reads XML, starts (paused), destroys and undefines a domain', async () => {
    const vm = await oneDiskVm(false);
    expect(vm.name).toMatch(/^lm-test-[0-9a-f]{12}$/);
    expect(vm.uuid).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);

    const listed = (await conn.listDomains()).find((d) => d.name === vm.name);
    expect(listed).toMatchObject({ uuid: vm.uuid, state: DomainState.SHUTOFF, stateName: 'shutoff' });

    const byName = await conn.lookupByName(vm.name);
    const byUuid = await conn.lookupByUuid(vm.uuid);
    expect(byName.uuid).toBe(vm.uuid);
    expect(byUuid.name).toBe(vm.name);
    expect(await byName.state()).toEqual({
      state: DomainState.SHUTOFF,
      reason: expect.any(Number) as number,
    });
    expect(await byName.isActive()).toBe(false);

    const inactiveXml = await byName.xml({ inactive: true });
    expect(inactiveXml).toContain(`<name>${vm.name}</name>`);
    expect(inactiveXml).toContain(`<uuid>${vm.uuid}</uuid>`);
    expect(inactiveXml).toContain("<memballoon model='none'/>");
    expect(await byName.xml({ secure: true })).toContain("<target dev='vda' bus='virtio'/>");

    await byName.create(DomainStartFlags.PAUSED);
    expect((await byName.state()).state).toBe(DomainState.PAUSED);
    const running = (await conn.listDomains()).find((d) => d.uuid === vm.uuid);
    expect(running?.state).toBe(DomainState.PAUSED);
    const liveXml = await byUuid.xml();
    expect(liveXml).toContain("<alias name='virtio-disk0'/>");
    expect(liveXml).toMatch(/<domain type='qemu' id='\d+'/);

    await byName.destroy();
    expect((await byUuid.state()).state).toBe(DomainState.SHUTOFF);
    await byName.undefine(DomainUndefineFlags.SNAPSHOTS_METADATA);
    expect((await conn.listDomains()).some((d) => d.uuid === vm.uuid)).toBe(false);
    const err = await conn.lookupByUuid(vm.uuid).catch((e: unknown) => e);
    expect(isLibvirtError(err, ErrorCode.NO_DOMAIN)).toBe(true);
    byName.free();
    byUuid.free();
    await vm.cleanup(); // already gone: must not throw
  });

  it('images in a fresh temp dir are usable by QEMU: libvirt DAC-labels them while the VM runs', async () => {
    const vm = await oneDiskVm(true);
    const image = /<source file='([^']+)'/.exec(vm.xml)![1]!;
    const live = await vm.domain.xml();
    const label =
      /<seclabel type='dynamic' model='dac' relabel='yes'>\s*<label>\+(\d+):\+(\d+)<\/label>/.exec(live);
    expect(label, live).not.toBeNull();
    const st = await stat(image);
    expect([st.uid, st.gid]).toEqual([Number(label![1]), Number(label![2])]);
    await vm.domain.destroy();
    const after = await stat(image);
    expect(after.uid).toBe(process.getuid?.()); // ownership restored on shutdown
  });

  it('defineXml redefines an existing domain (same uuid) and accepts VALIDATE', async () => {
    const vm = await oneDiskVm(false);
    const xml = (await vm.domain.xml({ inactive: true })).replace(
      "<vcpu placement='static'>1</vcpu>",
      "<vcpu placement='static'>2</vcpu>",
    );
    const again = await conn.defineXml(xml, 1 /* VALIDATE */);
    expect(again.uuid).toBe(vm.uuid);
    expect(await again.xml({ inactive: true })).toContain("<vcpu placement='static'>2</vcpu>");
    again.free();
  });
});

describe('LibvirtError', () => {
  it('unknown domain → code 42 (VIR_ERR_NO_DOMAIN) from the QEMU driver, with the function name', async () => {
    const name = `lm-test-missing-${Date.now()}`;
    const err = await conn.lookupByName(name).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LibvirtError);
    const e = err as LibvirtError;
    expect(e.code).toBe(ErrorCode.NO_DOMAIN);
    expect(e.code).toBe(42);
    expect(e.domain).toBe(ErrorDomain.QEMU);
    expect(e.functionName).toBe('virDomainLookupByName');
    expect(e.libvirtMessage).toContain(name);
    expect(e.codeName).toBe('VIR_ERR_NO_DOMAIN');
    expect(e.message).toContain('virDomainLookupByName failed');
    expect(await conn.findByName(name)).toBeNull();
  });

  it('reports each concurrent failure with its own error (errors are captured per call)', async () => {
    const names = Array.from({ length: 6 }, (_, i) => `lm-test-missing-${i}-${Date.now()}`);
    const results = await Promise.all([
      ...names.map((n) => conn.lookupByName(n).catch((e: unknown) => e)),
      conn.lookupByUuid('not-a-uuid').catch((e: unknown) => e),
      conn.defineXml('<domain type=').catch((e: unknown) => e),
    ]);
    names.forEach((n, i) => {
      const e = results[i] as LibvirtError;
      expect(e.code).toBe(ErrorCode.NO_DOMAIN);
      expect(e.libvirtMessage).toContain(n);
    });
    expect((results[names.length] as LibvirtError).code).toBe(ErrorCode.INVALID_ARG);
    expect((results[names.length] as LibvirtError).functionName).toBe('virDomainLookupByUUIDString');
    expect([ErrorCode.XML_ERROR, ErrorCode.XML_DETAIL]).toContain(
      (results[names.length + 1] as LibvirtError).code,
    );
    expect((results[names.length + 1] as LibvirtError).functionName).toBe('virDomainDefineXMLFlags');
  });

  it('a failing open is typed too (connection-less error)', async () => {
    const err = await LibvirtConnection.open('qemu+unix:///system?socket=/nonexistent/libvirt-sock').catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(LibvirtError);
    expect((err as LibvirtError).functionName).toBe('virConnectOpen');
    expect((err as LibvirtError).code).toBe(ErrorCode.SYSTEM_ERROR);
    expect((err as LibvirtError).domain).toBe(ErrorDomain.RPC);
    expect((err as LibvirtError).libvirtMessage).toContain('/nonexistent/libvirt-sock');
  });

  it('operations on a domain that vanished fail with NO_DOMAIN; a bad HMP command is reported', async () => {
    const vm = await oneDiskVm(true);
    await expect(hmpQemuIo(vm.domain, 'virtio-disk9', 'write -P 0x41 0 4k')).rejects.toThrow(/virtio-disk9/);
    await vm.cleanup();
    const err = await vm.domain.state().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error); // handle freed by cleanup
    const fresh = await conn.lookupByName(vm.name).catch((e: unknown) => e);
    expect(isLibvirtError(fresh, ErrorCode.NO_DOMAIN)).toBe(true);
  });
});

describe('events and the event loop', () => {
  it('delivers LIFECYCLE events (defined, started, stopped/destroyed, undefined) with no call to wake it', async () => {
    const seen: LifecycleEventInfo[] = [];
    const dispose = conn.onLifecycle((e) => seen.push(e));
    try {
      const dir = await createTempDir();
      const image = join(dir.path, 'disk.qcow2');
      await qemuImgCreate(image);
      const name = uniqueVmName();
      const defined = conn.waitForLifecycle(
        (e) => e.domainName === name && e.event === LifecycleEvent.DEFINED,
        10_000,
      );
      // Each event is awaited with no other call on the connection meanwhile: libvirt's event loop runs
      // on its own, not as a side effect of the next call. (How soon is a benchmark's question:
      // bench/notice-latency measures it for the block job events a merge waits on.)
      const dom = await conn.defineXml(testVmXml(name, [{ path: image, format: 'qcow2' }]));
      await defined;

      const started = conn.waitForLifecycle(
        (e) => e.domainUuid === dom.uuid && e.event === LifecycleEvent.STARTED,
        20_000,
      );
      await dom.create();
      await started;
      const stopped = conn.waitForLifecycle(
        (e) => e.domainUuid === dom.uuid && e.event === LifecycleEvent.STOPPED,
        20_000,
      );
      await dom.destroy();
      expect((await stopped).detail).toBe(LifecycleStoppedDetail.DESTROYED);
      const undefinedEv = conn.waitForLifecycle(
        (e) => e.domainUuid === dom.uuid && e.event === LifecycleEvent.UNDEFINED,
        10_000,
      );
      await dom.undefine();
      await undefinedEv;
      dom.free();
      expect(seen.filter((e) => e.domainName === name).map((e) => e.event)).toEqual(
        expect.arrayContaining([
          LifecycleEvent.DEFINED,
          LifecycleEvent.STARTED,
          LifecycleEvent.STOPPED,
          LifecycleEvent.UNDEFINED,
        ]),
      );
    } finally {
      dispose();
    }
  });

  it('unsubscribing stops delivery to that listener only', async () => {
    const a: LifecycleEventInfo[] = [];
    const b: LifecycleEventInfo[] = [];
    const disposeA = conn.onLifecycle((e) => a.push(e));
    const disposeB = conn.onLifecycle((e) => b.push(e));
    disposeA();
    disposeA(); // idempotent
    const vm = await oneDiskVm(false); // DEFINED (may arrive before defineXml's reply: B listens already)
    await pollUntil(() => b.some((e) => e.domainUuid === vm.uuid), 10_000, 'DEFINED event for listener B');
    disposeB();
    expect(a).toHaveLength(0);
    expect(b.some((e) => e.domainUuid === vm.uuid && e.event === LifecycleEvent.DEFINED)).toBe(true);
  });

  it('runs slow libvirt calls (create, destroy) off the JS thread: the event loop turns meanwhile', async () => {
    const vm = await oneDiskVm(false);
    // Counts the event loop's turns while the call is outstanding. A call made on the JS thread returns a
    // settled promise whose continuation runs before any turn (0); a call on a libuv thread lets the loop
    // turn until its answer comes (starting and killing a QEMU takes many turns). How long the loop may
    // stall is not asserted here: the workers' event-loop delay is measured by bench/merge-scale --profile.
    const turnsDuring = async (call: () => Promise<void>): Promise<number> => {
      let turns = 0;
      let pending = true;
      const turn = () => {
        if (!pending) return;
        turns++;
        setImmediate(turn);
      };
      setImmediate(turn);
      try {
        await call();
      } finally {
        pending = false;
      }
      return turns;
    };
    const turns = {
      create: await turnsDuring(() => vm.domain.create()),
      destroy: await turnsDuring(() => vm.domain.destroy()),
    };
    console.log('event-loop turns during libvirt calls:', turns);
    expect(turns.create).toBeGreaterThan(0);
    expect(turns.destroy).toBeGreaterThan(0);
  });

  it('close() stops the event loop, and a process that closed its connection exits by itself', async () => {
    const other = await LibvirtConnection.open();
    expect(eventLoop.running).toBe(true);
    await other.close();
    await other.close(); // idempotent
    expect(other.isClosed).toBe(true);
    await expect(other.lookupByName('x')).rejects.toThrow(/closed/);
    expect(eventLoop.running).toBe(true); // `conn` still holds it

    const dir = await createTempDir();
    const script = join(dir.path, 'exit-check.ts');
    const lib = resolve(__dirname, '../../src/libvirt/index.ts');
    await writeFile(
      script,
      `import { LibvirtConnection } from ${JSON.stringify(lib)};
(async () => {
  const c = await LibvirtConnection.open();
  await c.listDomains();
  c.onBlockJob(() => undefined);
  await c.close();
  console.log('closed');
})();
`,
    );
    // A process still held by the event loop would never exit: execFile kills it at the timeout and rejects.
    const { stdout } = await execFileAsync(process.execPath, ['--import', 'tsx', script], {
      timeout: 30_000,
      cwd: resolve(__dirname, '../..'),
    });
    expect(stdout.trim()).toBe('closed');
  });
});
