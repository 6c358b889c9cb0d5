// `livemerge demo`: the whole product in one run, through the CLI. A VM with two disks gets distinct data in
// its base and in three snapshots, layer by layer (the AAAA/BBBB/CCCC/DD picture of libvirt's active-commit
// kbase); then an intermediate snapshot and the active layer (with pivot) are removed while the VM runs and
// the guest writes, every byte is verified through the leaf, and the chains, the audit log and the Temporal
// UI links are shown. Cleans up unless --keep (or KEEP=1).
import { execFile, spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Command } from 'commander';
import type { Client, Connection } from '@temporalio/client';
import { ENGINE_TASK_QUEUE, hostTaskQueue } from '../../common/task-queues';
import type { Config } from '../../config';
import { REPO_ROOT, loadConfig, temporalConnectionOptions } from '../../config';
import { parseDomainDiskChains } from '../../inspect/domain-xml';
import type { Domain, LibvirtConnection } from '../../libvirt';
import type { VolumeInfo } from '../../schemas/volume';
import { OperationFailed, formatBytes, workflowUiLink } from '../output';
import type { AnyProgress } from '../workflows';
import { diskQdevId } from './vm-xml';
import { readDevHosts } from '../../devstack/hosts';

const exec = promisify(execFile);
const CLI = path.join(REPO_ROOT, 'bin', 'livemerge.cjs');
const DISKS = 2;

/** One layer of the picture: byte ranges in MiB, written with the layer's letter (upper case on vda, lower on vdb). */
interface Layer {
  name: string;
  letter: string;
  ranges: Array<[number, number]>;
}
const LAYERS: Layer[] = [
  { name: 'base', letter: 'A', ranges: [[0, 4]] },
  { name: 'layer 1', letter: 'B', ranges: [[2, 6]] },
  { name: 'layer 2', letter: 'C', ranges: [[5, 9]] },
  {
    name: 'leaf',
    letter: 'D',
    ranges: [
      [0, 1],
      [8, 10],
    ],
  },
];
/** Written by the guest while the active layer is being committed. */
const DURING_MERGE: Layer = { name: 'during the merge', letter: 'E', ranges: [[12, 13]] };
const WIDTH = 14; // MiB shown in the picture

const byteOf = (letter: string, disk: number): number => letter.charCodeAt(0) + 0x20 * disk;
const hex = (b: number): string => `0x${b.toString(16)}`;

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description(
      'create a VM with two disks and three snapshots, remove snapshots live (intermediate, then the active ' +
        'layer with pivot), verify every byte, show chains, audit log and UI links, clean up',
    )
    .option('--keep', 'keep the demo VM and its images (also KEEP=1)')
    .option('--bandwidth <bytes/s>', 'merge rate limit, so that the progress bars are visible', '512k')
    .action(async (opts: { keep?: boolean; bandwidth: string }) => {
      const { bandwidthArg } = await import('../args');
      const bandwidth = bandwidthArg(opts.bandwidth)!;
      await runDemo(loadConfig(), { keep: opts.keep === true || process.env.KEEP === '1', bandwidth });
    });
}

const say = (s = ''): void => void process.stdout.write(s + '\n');
const section = (title: string): void => say(`\n\x1b[1m== ${title}\x1b[0m`);
const ok = (s: string): void => say(`  \u2714 ${s}`);

/** Runs `livemerge ARGS` as its own process, as a user would, showing the command and its output. */
async function cli(args: string[], capture = false): Promise<string> {
  say(
    `\n$ livemerge ${args.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ')}`,
  );
  return await new Promise<string>((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      stdio: ['ignore', capture ? 'pipe' : 'inherit', 'inherit'],
    });
    let out = '';
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0
        ? resolve(out)
        : reject(new OperationFailed(`\`livemerge ${args.join(' ')}\` exited with code ${code ?? 'null'}`)),
    );
  });
}

function picture(disk: number): string {
  const row = (layer: Layer) => {
    const cells = Array.from({ length: WIDTH }, () => '.');
    for (const [a, b] of layer.ranges)
      for (let i = a; i < b; i++) cells[i] = String.fromCharCode(byteOf(layer.letter, disk));
    return cells.join('');
  };
  const guest = Array.from({ length: WIDTH }, () => '.');
  for (const l of LAYERS)
    for (const [a, b] of l.ranges)
      for (let i = a; i < b; i++) guest[i] = String.fromCharCode(byteOf(l.letter, disk));
  const labels = [
    'base (frozen by snapshot 1)',
    'frozen by snapshot 2',
    'frozen by snapshot 3',
    'active leaf',
  ];
  return [
    `    ${'one column per MiB'.padEnd(30)} ${Array.from({ length: WIDTH }, (_, i) => String(i % 10)).join('')}`,
    ...[...LAYERS].reverse().map((l, i) => `    ${labels[LAYERS.length - 1 - i]!.padEnd(30)} ${row(l)}`),
    `    ${'the guest reads'.padEnd(30)} ${guest.join('')}`,
  ].join('\n');
}

async function guestWrite(dom: Domain, disk: number, layer: Layer): Promise<void> {
  const { hmpQemuIo } = await import('../../libvirt');
  const b = byteOf(layer.letter, disk);
  for (const [a, e] of layer.ranges)
    await hmpQemuIo(dom, diskQdevId(disk), `write -P ${hex(b)} ${a}M ${e - a}M`);
  await hmpQemuIo(dom, diskQdevId(disk), 'flush');
}

/** What the guest must read afterwards, MiB by MiB (0 = never written). */
function expectedBytes(disk: number, layers: Layer[]): number[] {
  const out = Array.from({ length: 64 }, () => 0);
  for (const l of layers)
    for (const [a, b] of l.ranges) for (let i = a; i < b; i++) out[i] = byteOf(l.letter, disk);
  return out;
}

async function qemuIoRead(image: string, byte: number, offMiB: number, lenMiB: number): Promise<boolean> {
  try {
    const { stdout } = await exec('qemu-io', [
      '-U',
      '-r',
      '-f',
      'qcow2',
      '-c',
      `read -P ${hex(byte)} ${offMiB}M ${lenMiB}M`,
      image,
    ]);
    return !stdout.includes('Pattern verification failed');
  } catch (err) {
    if (((err as { stdout?: string }).stdout ?? '').includes('Pattern verification failed')) return false;
    throw err;
  }
}

async function sameBytes(raw: string, leaf: VolumeInfo): Promise<boolean> {
  try {
    await exec('qemu-img', ['compare', '-U', '-f', 'raw', '-F', leaf.format, raw, leaf.path]);
    return true;
  } catch (err) {
    if ((err as { code?: number }).code === 1) return false;
    throw err;
  }
}

interface DemoState {
  name: string;
  vmId?: string;
  workflowIds: string[];
}

export async function runDemo(config: Config, opts: { keep: boolean; bandwidth: number }): Promise<void> {
  const { Client, Connection } = await import('@temporalio/client');
  const { withLibvirt } = await import('../vms');
  const t0 = Date.now();
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'lm-demo-'));
  const state: DemoState = { name: `lm-demo-${randomBytes(3).toString('hex')}`, workflowIds: [] };
  const connection = await Connection.connect({
    ...temporalConnectionOptions(config),
    connectTimeout: '5s',
  }).catch((err: unknown) => {
    throw new OperationFailed(
      `cannot reach Temporal at ${config.temporalAddress}: run \`npx livemerge dev up\` first (${String(err)})`,
    );
  });
  const client = new Client({ connection, namespace: config.temporalNamespace });
  let failed = true;
  try {
    await withLibvirt(config, async (conn) => {
      await demoSteps(config, conn, client, state, tmp, opts.bandwidth);
    });
    failed = false;
  } finally {
    if (state.vmId && !opts.keep) {
      section('Clean up');
      await cli(['vm', 'delete', state.name]).catch((err: unknown) =>
        say(`  cleanup failed (${String(err)}); remove it with: npx livemerge vm delete ${state.name}`),
      );
    } else if (state.vmId) {
      say(`\nKept VM ${state.name} (${state.vmId}); remove it with: npx livemerge vm delete ${state.name}`);
    }
    await fs.rm(tmp, { recursive: true, force: true });
    await connection.close();
    say(`\ndemo ${failed ? 'FAILED' : 'finished'} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  }
}

async function demoSteps(
  config: Config,
  conn: LibvirtConnection,
  client: Client,
  state: DemoState,
  tmp: string,
  bandwidth: number,
): Promise<void> {
  const { pollerCount } = await import('../../devstack/health');
  const { StorageDomains, describeDomain, diskChain } = await import('../vms');
  section('The stack');
  for (const [queue, kind] of [
    [ENGINE_TASK_QUEUE, 'workflow'],
    [hostTaskQueue(config.hostId), 'activity'],
  ] as const) {
    const n = await pollerCount(connection(client), config.temporalNamespace, queue, kind);
    if (n === 0) throw new OperationFailed(`no worker polls ${queue}: run \`npx livemerge dev up\` first`);
    ok(`${queue}: ${n} poller(s)`);
  }
  ok(`Temporal UI: ${config.temporalUiUrl}/namespaces/${config.temporalNamespace}/workflows`);

  section(`1. A running VM with ${DISKS} disks (TCG, no OS: QEMU's block layer is all we need)`);
  const sd = await demoStorageDomain(config);
  await cli([
    'vm',
    'create',
    '--name',
    state.name,
    '--disks',
    String(DISKS),
    '--size',
    '64M',
    '--storage-domain',
    sd,
  ]);
  const dom = await conn.lookupByName(state.name);
  try {
    state.vmId = dom.uuid;
    const storageDomains = new StorageDomains(config.storageRoot);
    const view = async () => describeDomain(dom, config.storageRoot, config.hostId);
    const link = (id: string) => workflowUiLink(config.temporalUiUrl, config.temporalNamespace, id);

    section('2. Distinct data in the base and in each of three snapshots, layer by layer');
    const snaps = [randomUUID(), randomUUID(), randomUUID()];
    for (let i = 0; i < LAYERS.length; i++) {
      const layer = LAYERS[i]!;
      for (let d = 0; d < DISKS; d++) await guestWrite(dom, d, layer);
      say(
        `\n  guest wrote ${layer.letter}/${layer.letter.toLowerCase()} at ` +
          layer.ranges.map(([a, b]) => `${a}-${b} MiB`).join(' and ') +
          ` into the ${layer.name} (HMP qemu-io through virtio-disk0/1)`,
      );
      const s = snaps[i];
      if (s) {
        await cli([
          'snapshot',
          'create',
          '--vm',
          state.name,
          '--id',
          s,
          '--description',
          `demo snapshot ${i + 1}`,
        ]);
        state.workflowIds.push(`create-snapshot:${dom.uuid}:${s}`);
      }
    }
    say(`\n  vda now looks like this (vdb alike, in lower case):\n${picture(0)}`);
    await cli(['chain', '--vm', state.name]);
    await cli(['snapshot', 'list', '--vm', state.name]);

    // The guest's view of every disk before any merge, read through the leaf.
    const before: string[] = [];
    for (const disk of (await view()).disks) {
      const leaf = (await diskChain(storageDomains, disk)).at(-1)!;
      const out = path.join(tmp, `before-${disk.target}.raw`);
      await exec('qemu-img', ['convert', '-U', '-f', leaf.format, '-O', 'raw', leaf.path, out]);
      before.push(out);
    }
    ok(`dumped the guest's view of each disk (qemu-img convert -U) for the comparison afterwards`);

    section(`3. Remove snapshot 2 live: an intermediate commit, at ${formatBytes(bandwidth)}/s`);
    say('  the volume of snapshot 2 absorbs its child (layer C); the leaf stays where it is');
    await cli([
      'snapshot',
      'remove',
      '--vm',
      state.name,
      '--snapshot',
      snaps[1]!,
      '--bandwidth',
      String(bandwidth),
      '--wait',
    ]);
    state.workflowIds.push(`remove-snapshot:${dom.uuid}:${snaps[1]!}`);
    for (const [d, disk] of (await view()).disks.entries()) {
      const leaf = (await diskChain(storageDomains, disk)).at(-1)!;
      if (!(await sameBytes(before[d]!, leaf)))
        throw new OperationFailed(`${disk.target}: the guest's view changed after the intermediate commit`);
      ok(`${disk.target}: qemu-img compare: the guest reads exactly the same bytes as before`);
    }

    section(
      '4. Remove snapshot 3 live: the active layer, an active commit with pivot, while the guest writes',
    );
    const removal = `remove-snapshot:${dom.uuid}:${snaps[2]!}`;
    const running = cli([
      'snapshot',
      'remove',
      '--vm',
      state.name,
      '--snapshot',
      snaps[2]!,
      '--bandwidth',
      String(bandwidth),
      '--wait',
    ]);
    running.catch(() => undefined); // awaited below
    // Once the data is moving, the guest writes E/e: it must survive the merge and the pivot.
    const stageAtWrite = await waitForStage(client, removal, running);
    for (let d = 0; d < DISKS; d++) await guestWrite(dom, d, DURING_MERGE);
    const stillRunning = (await client.workflow.getHandle(removal).describe()).status.name === 'RUNNING';
    await running;
    say(
      stillRunning && stageAtWrite
        ? `  the guest wrote E/e at 12-13 MiB while the removal was running (stage ${stageAtWrite} when it began)`
        : `  the guest wrote E/e at 12-13 MiB (the removal had already finished)`,
    );
    state.workflowIds.push(removal);

    section('5. Every byte, verified through the leaf');
    const final = await view();
    for (const [d, disk] of final.disks.entries()) {
      const chain = await diskChain(storageDomains, disk);
      const leaf = chain.at(-1)!;
      // Expected: the dump from before, plus the write made during the merge.
      const expected = path.join(tmp, `expected-${disk.target}.raw`);
      await fs.copyFile(before[d]!, expected);
      for (const [a, b] of DURING_MERGE.ranges)
        await exec('qemu-io', [
          '-f',
          'raw',
          '-c',
          `write -P ${hex(byteOf('E', d))} ${a}M ${b - a}M`,
          expected,
        ]);
      if (!(await sameBytes(expected, leaf)))
        throw new OperationFailed(`${disk.target}: the guest's data differs from before the merges`);
      ok(
        `${disk.target}: qemu-img compare: identical to the view before the merges plus the write made during them`,
      );
      const bytes = expectedBytes(d, [...LAYERS, DURING_MERGE]);
      const runs: Array<[number, number, number]> = [];
      for (let i = 0; i < bytes.length; i++) {
        const last = runs.at(-1);
        if (last && last[2] === bytes[i]) last[1] = i + 1;
        else runs.push([i, i + 1, bytes[i]!]);
      }
      for (const [a, b, byte] of runs) {
        if (!(await qemuIoRead(leaf.path, byte, a, b - a)))
          throw new OperationFailed(`${disk.target}: ${a}-${b} MiB does not read ${hex(byte)}`);
      }
      ok(
        `${disk.target}: qemu-io read -P: ` +
          runs.map(([a, b, byte]) => `${a}-${b}M=${byte ? String.fromCharCode(byte) : '0'}`).join(' '),
      );
      // libvirt agrees with the metadata: the live chain is the metadata chain.
      const live = parseDomainDiskChains(await dom.xml()).find((x) => x.target === disk.target)!;
      const livePaths = live.chain.map((e) => e.path);
      const metaPaths = [...chain].reverse().map((v) => v.path);
      if (JSON.stringify(livePaths) !== JSON.stringify(metaPaths))
        throw new OperationFailed(`${disk.target}: live chain ${livePaths.join(' <- ')} != metadata chain`);
      ok(`${disk.target}: libvirt's live chain equals the metadata chain (${chain.length} volumes)`);
    }

    section(
      '6. The chains now: snapshot 1 (base) and the new leaf, which took over the data of the merged layers',
    );
    await cli(['chain', '--vm', state.name]);
    await cli(['snapshot', 'list', '--vm', state.name]);

    section('7. The audit log of this VM');
    await cli(['audit', '--vm', state.name]);

    section('8. Reconcile: no orphan volume is left, and every chain agrees');
    await cli(['reconcile', '--storage-domain', sd]);

    await backups(config, dom, state, tmp);

    await otherHost(config, sd, state);

    section('In the Temporal UI');
    const children = (await view()).disks.map((d) => `merge-disk:${dom.uuid}:${d.volume!.imageId}`);
    for (const id of [...state.workflowIds, ...children]) say(`  ${id}\n    ${link(id)}`);
  } finally {
    dom.free();
  }
}

/** The snapshot → backup → merge flow: a full backup, guest writes, an incremental of only them, a restore. */
async function backups(config: Config, dom: Domain, state: DemoState, tmp: string): Promise<void> {
  const { StorageDomains, describeDomain, diskChain } = await import('../vms');
  const repo = path.join(tmp, 'backups');
  const restored = path.join(tmp, 'restored');
  await fs.mkdir(repo, { recursive: true });
  await fs.mkdir(restored, { recursive: true });
  type Disk = { target: string; mode: string; changedBytes: number; copiedBytes: number; reason?: string };
  const backup = async (): Promise<{ backupId: string; disks: Disk[] }> => {
    const out = await cli(['backup', '--vm', state.name, '--repository', repo, '--wait', '--json'], true);
    const r = JSON.parse(out) as { workflowId: string; backupId: string; disks: Disk[] };
    state.workflowIds.push(r.workflowId);
    for (const d of r.disks)
      ok(
        `${d.target}: ${d.mode}${d.reason ? ` (${d.reason})` : ''}: ${formatBytes(d.changedBytes)} changed, ` +
          `${formatBytes(d.copiedBytes)} copied`,
      );
    return r;
  };

  section('10. Backups: full, then an incremental with only the changed blocks, then a restore');
  say('  a dirty bitmap starts before a snapshot; the frozen disks are copied, the snapshot merged back');
  await backup();
  const written: Layer = { name: 'after the full backup', letter: 'F', ranges: [[20, 21]] };
  await guestWrite(dom, 0, written);
  say('\n  guest wrote F at 20-21 MiB into vda (vdb unchanged)');
  const storageDomains = new StorageDomains(config.storageRoot);
  const views: Record<string, string> = {};
  for (const disk of (await describeDomain(dom, config.storageRoot, config.hostId)).disks) {
    const leaf = (await diskChain(storageDomains, disk)).at(-1)!;
    views[disk.target] = path.join(tmp, `backup-view-${disk.target}.raw`);
    await exec('qemu-img', ['convert', '-U', '-f', leaf.format, '-O', 'raw', leaf.path, views[disk.target]!]);
  }
  const inc = await backup();
  const vda = inc.disks.find((d) => d.target === 'vda');
  if (vda?.mode !== 'incremental' || vda.changedBytes !== 1 << 20)
    throw new OperationFailed(
      `the incremental backup of vda should hold exactly the 1 MiB written: ${JSON.stringify(vda)}`,
    );
  ok('the incremental copied only the megabyte the guest wrote');
  await cli(['backup', 'list', '--vm', state.name, '--repository', repo]);
  const out = await cli(
    [
      'restore',
      '--vm',
      state.name,
      '--backup',
      inc.backupId,
      '--repository',
      repo,
      '--to',
      restored,
      '--json',
    ],
    true,
  );
  for (const d of (JSON.parse(out) as { disks: Array<{ target: string; path: string }> }).disks) {
    await exec('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', d.path, views[d.target]!]);
    ok(
      `${d.target}: the restore (${d.path}) reads exactly what the guest read at the backup (qemu-img compare)`,
    );
  }
}

/**
 * With a second host in the dev stack (`dev up --hosts 2`): a VM on that host, found, snapshotted and merged
 * through its agent, its merged volume deleted by the storage role on host 1 (docs/hosts.md).
 */
async function otherHost(config: Config, sd: string, state: DemoState): Promise<void> {
  const hosts = readDevHosts(config.dataDir) ?? [];
  const other = hosts.find((h) => !h.storage);
  const storage = hosts.find((h) => h.storage);
  if (!other || !storage) {
    say(
      '\n(one host in this stack: `npx livemerge dev down && npx livemerge dev up --hosts 2` adds a second)',
    );
    return;
  }
  section(`9. A VM on host ${other.id}; the storage role on host ${storage.id}`);
  const name = `${state.name}-b`;
  await cli([
    'vm',
    'create',
    '--host',
    other.id,
    '--name',
    name,
    '--disks',
    '1',
    '--size',
    '16M',
    '--storage-domain',
    sd,
  ]);
  try {
    const snap = JSON.parse(await cli(['snapshot', 'create', '--vm', name, '--json'], true)) as {
      snapshotId: string;
      workflowId: string;
    };
    state.workflowIds.push(snap.workflowId);
    await cli(['chain', '--vm', name]);
    const removed = JSON.parse(
      await cli(
        ['snapshot', 'remove', '--vm', name, '--snapshot', snap.snapshotId, '--wait', '--json'],
        true,
      ),
    ) as { workflowId: string; status: string; removedVolumeIds: string[] };
    state.workflowIds.push(removed.workflowId);
    const merge = await cli(['chain', '--vm', name, '--json'], true);
    const left = (JSON.parse(merge) as { disks: Array<{ volumes: unknown[] }> }).disks[0]?.volumes.length;
    if (removed.status !== 'COMPLETED' || left !== 1)
      throw new OperationFailed(
        `the removal on host ${other.id} ended ${removed.status} with ${left} volume(s)`,
      );
    ok(
      `merged on host ${other.id}'s agent; ${removed.removedVolumeIds.join(', ')} deleted by the storage role on ${storage.id}`,
    );
  } finally {
    await cli(['vm', 'delete', '--host', other.id, name]).catch((err: unknown) =>
      say(
        `  cleanup failed (${String(err)}); remove it with: npx livemerge vm delete --host ${other.id} ${name}`,
      ),
    );
  }
}

/**
 * The demo's own storage domain (its id kept in the data dir), so that it never works in, or reconciles,
 * a domain that other work on this machine uses. Created on the first run.
 */
async function demoStorageDomain(config: Config): Promise<string> {
  const { StorageDomain } = await import('../../storage/storage-domain');
  const { listStorageDomains } = await import('../vms');
  const file = path.join(config.dataDir, 'demo-storage-domain');
  const saved = (await fs.readFile(file, 'utf8').catch(() => '')).trim();
  if (saved && (await listStorageDomains(config.storageRoot)).includes(saved)) return saved;
  const sd = await StorageDomain.create(config.storageRoot, randomUUID());
  await fs.mkdir(config.dataDir, { recursive: true });
  await fs.writeFile(file, sd.id + '\n');
  ok(`created the demo's storage domain ${sd.id} in ${sd.dir}`);
  return sd.id;
}

function connection(client: Client): Connection {
  return client.connection as Connection;
}

/** Polls the removal's progress until its data is moving; the stage then, or null when it ended first. */
async function waitForStage(
  client: Client,
  workflowId: string,
  running: Promise<unknown>,
): Promise<string | null> {
  let ended = false;
  void running.finally(() => (ended = true)).catch(() => undefined);
  const deadline = Date.now() + 120_000;
  while (!ended && Date.now() < deadline) {
    const p = await client.workflow
      .getHandle(workflowId)
      .query<AnyProgress>('progress')
      .catch(() => null);
    if (p && ['copying', 'ready', 'pivoting', 'verifying', 'recording', 'deleting'].includes(p.stage))
      return p.stage;
    if (p?.stage === 'done') return null;
    await new Promise((r) => setTimeout(r, 200));
  }
  return null;
}
