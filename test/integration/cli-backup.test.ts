// `livemerge backup …` and `livemerge restore` as a user runs them: a separate process (node
// bin/livemerge.cjs) against this file's stack, on a running 2-disk qcow2 VM. Full, then incremental
// backups into a repository, the catalog, restores compared byte for byte with what the guest read before
// each backup, a prune, NBD export mode handed to a "backup application", and bad input.
import type { ChildProcess } from 'node:child_process';
import { execFile, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it, onTestFinished } from 'vitest';
import { parseDomainDiskChains } from '../../src/inspect/domain-xml';
import { compareWithView, guestViews } from '../helpers/backups';
import { exists, writeThroughGuest } from '../helpers/data';
import type { Stack } from '../helpers/stack';
import { createStackVm, useStack } from '../helpers/stack';
import type { Run } from '../helpers/cli';
import { BIN, anyUuid, cli, cliEnv, cliJson } from '../helpers/cli';
import type { TestVm } from '../helpers/vm-fixture';
import { createTempDir } from '../helpers/vm-fixture';

const exec = promisify(execFile);
const KiB = 1024;

interface BackupOut {
  workflowId: string;
  status: string;
  backupId: string;
  disks: Array<{
    target: string;
    imageId: string;
    mode: string;
    reason?: string;
    changedBytes: number;
    copiedBytes: number;
    extents: number;
    file: string;
  }>;
  exports?: Array<{ target: string; uri: string; bitmap?: string }>;
}

async function leaves(vm: TestVm): Promise<Array<{ target: string; path: string }>> {
  return parseDomainDiskChains(await vm.domain.xml())
    .filter((d) => d.device === 'disk')
    .map((d) => ({ target: d.target, path: d.chain[0]!.path! }));
}

/** `restore` through the CLI into a fresh temp dir; each disk compared with the guest's view. */
async function expectRestores(
  s: Stack,
  vmId: string,
  backupId: string,
  repo: string,
  views: Record<string, string>,
) {
  const to = await createTempDir('lm-cli-restore-');
  const r = await cliJson<{ disks: Array<{ target: string; imageId: string; path: string }> }>(s, [
    'restore',
    '--vm',
    vmId,
    '--backup',
    backupId,
    '--repository',
    repo,
    '--to',
    to.path,
  ]);
  expect(r.out.disks.map((d) => d.target).sort()).toEqual(Object.keys(views).sort());
  for (const d of r.out.disks) {
    expect(d.path).toBe(path.join(to.path, `${d.imageId}.qcow2`));
    expect(await compareWithView(d.path, views[d.target]!), d.target).toBe('');
  }
}

describe('livemerge backup / restore', () => {
  it('backup --full --wait, incremental, list, restore each, prune --keep 1, without --wait; bad input exit 2, failures exit 1', async () => {
    const s = await useStack();
    const { vm, disks } = await createStackVm(s, { disks: 2, format: 'qcow2' });
    const repo = (await createTempDir('lm-cli-repo-')).path;
    const work = (await createTempDir('lm-cli-views-')).path;
    await writeThroughGuest(vm.domain, 0, { byte: 0x11, offset: 0, length: 1024 * KiB });
    await writeThroughGuest(vm.domain, 1, { byte: 0x12, offset: 4096 * KiB, length: 512 * KiB });
    const before = await leaves(vm);

    // Full (asked for), by name.
    const v1 = await guestViews(before, work, 'b1');
    const b1 = await cliJson<BackupOut>(s, [
      'backup',
      '--vm',
      vm.name,
      '--repository',
      repo,
      '--full',
      '--wait',
    ]);
    const b1Id = b1.out.backupId;
    const fileOf = (imageId: string, backupId: string) =>
      path.join(repo, vm.uuid, imageId, `${backupId}.qcow2`);
    expect(b1.out).toEqual({
      workflowId: `backup:${vm.uuid}:${b1Id}`,
      status: 'COMPLETED',
      backupId: anyUuid(),
      disks: disks.map((d) => ({
        target: d.target,
        imageId: d.imageId,
        mode: 'full',
        reason: 'a full backup was asked for',
        changedBytes: expect.any(Number) as unknown,
        copiedBytes: expect.any(Number) as unknown,
        extents: expect.any(Number) as unknown,
        file: fileOf(d.imageId, b1Id),
      })),
    });
    expect(b1.out.disks[0]!.changedBytes).toBeGreaterThanOrEqual(1024 * KiB);
    expect(b1.stderr).toContain(`workflow ${b1.out.workflowId} started`);
    // The chain is back to its length, on the same leaves.
    expect(await leaves(vm)).toEqual(before);

    // Incremental, by UUID, with an id and a repository relative to the current directory.
    await writeThroughGuest(vm.domain, 0, { byte: 0x21, offset: 2048 * KiB, length: 128 * KiB });
    await writeThroughGuest(vm.domain, 1, { byte: 0x22, offset: 8192 * KiB, length: 64 * KiB });
    const v2 = await guestViews(before, work, 'b2');
    const b2Id = randomUUID();
    const b2 = await cliJson<BackupOut>(s, [
      'backup',
      '--vm',
      vm.uuid,
      '--repository',
      path.relative(process.cwd(), repo),
      '--id',
      b2Id,
      '--wait',
    ]);
    expect(b2.out).toEqual({
      workflowId: `backup:${vm.uuid}:${b2Id}`,
      status: 'COMPLETED',
      backupId: b2Id,
      disks: disks.map((d, i) => ({
        target: d.target,
        imageId: d.imageId,
        mode: 'incremental',
        changedBytes: [128 * KiB, 64 * KiB][i],
        copiedBytes: expect.any(Number) as unknown,
        extents: 1,
        file: fileOf(d.imageId, b2Id),
      })),
    });

    // The catalog, read directly: both restore points, oldest first.
    const list = await cliJson<unknown>(s, ['backup', 'list', '--vm', vm.name, '--repository', repo]);
    expect(list.out).toEqual({
      vmId: vm.uuid,
      backups: [
        { b: b1.out, parentBackupId: null },
        { b: b2.out, parentBackupId: b1Id },
      ].map(({ b, parentBackupId }) => ({
        backupId: b.backupId,
        createdAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT/) as unknown,
        parentBackupId,
        disks: b.disks,
      })),
    });
    const table = await cli(s, ['backup', 'list', '--vm', vm.uuid, '--repository', repo]);
    expect(table.code).toBe(0);
    expect(table.stdout).toContain(b1Id);
    expect(table.stdout).toContain(b2Id);

    // Each restores what the guest read before it.
    await expectRestores(s, vm.uuid, b1Id, repo, v1);
    await expectRestores(s, vm.name, b2Id, repo, v2);

    // Bad input: exit 2 before anything starts, nothing on stdout.
    const missing = path.join(work, 'no-such-dir');
    for (const args of [
      ['backup', '--vm', vm.name, '--repository', repo, '--id', 'not-a-uuid', '--wait'],
      ['backup', '--vm', vm.name, '--repository', repo, '--id', b2Id.toUpperCase()],
      ['backup', '--vm', vm.name, '--repository', missing],
      ['backup', '--vm', vm.name, '--repository', repo, '--bandwidth', '-5'],
      ['backup', '--repository', repo],
      ['backup', '--vm', 'bad name;rm', '--repository', repo],
      ['backup', '--vm', `no-such-vm-${randomUUID().slice(0, 8)}`, '--repository', repo],
      ['backup', 'list', '--vm', vm.name, '--repository', missing],
      ['backup', 'prune', '--vm', vm.name, '--repository', repo, '--keep', '0'],
      ['backup', 'prune', '--vm', vm.name, '--repository', repo, '--keep', 'two'],
      ['backup', 'done', '--vm', vm.name, '--backup', 'nope'],
      ['backup', 'done', '--vm', vm.name, '--backup', randomUUID()],
      ['restore', '--vm', vm.name, '--backup', b1Id, '--repository', repo, '--to', missing],
      ['restore', '--vm', vm.name, '--backup', 'b1', '--repository', repo, '--to', work],
    ]) {
      const r = await cli(s, [...args, '--json']);
      expect({ args, code: r.code, stdout: r.stdout }).toEqual({ args, code: 2, stdout: '' });
      expect(r.stderr).toMatch(/^livemerge: |error: /);
    }
    expect(
      (await cli(s, ['backup', 'prune', '--vm', vm.name, '--repository', repo, '--keep', '0'])).stderr,
    ).toContain('--keep must be an integer from 1');
    // A failed workflow: exit 1 naming the failure type.
    const unknownBackup = randomUUID();
    const notFound = await cli(s, [
      'restore',
      '--vm',
      vm.uuid,
      '--backup',
      unknownBackup,
      '--repository',
      repo,
      '--to',
      work,
      '--json',
    ]);
    expect({ code: notFound.code, stdout: notFound.stdout }).toEqual({ code: 1, stdout: '' });
    expect(notFound.stderr).toContain('(BackupNotFound)');

    // Prune to one: the first restore point is merged into the second, which still restores exactly.
    const pruned = await cliJson<unknown>(s, [
      'backup',
      'prune',
      '--vm',
      vm.name,
      '--repository',
      repo,
      '--keep',
      '1',
    ]);
    expect(pruned.out).toEqual({ removed: [b1Id], kept: [b2Id] });
    for (const d of b1.out.disks) expect(await exists(d.file)).toBe(false);
    await expectRestores(s, vm.uuid, b2Id, repo, v2);
    const afterPrune = await cliJson<{ backups: Array<{ backupId: string; parentBackupId: string | null }> }>(
      s,
      ['backup', 'list', '--vm', vm.uuid, '--repository', repo],
    );
    expect(afterPrune.out.backups.map((b) => [b.backupId, b.parentBackupId])).toEqual([[b2Id, null]]);

    // Without --wait: started and running; it completes as an incremental of the kept one.
    await writeThroughGuest(vm.domain, 0, { byte: 0x31, offset: 0, length: 64 * KiB });
    const b3 = await cliJson<BackupOut>(s, ['backup', '--vm', vm.name, '--repository', repo]);
    expect(b3.out).toEqual({
      workflowId: `backup:${vm.uuid}:${b3.out.backupId}`,
      status: 'RUNNING',
      backupId: anyUuid(),
      disks: [],
    });
    const r3: unknown = await s.client.workflow.getHandle(b3.out.workflowId).result();
    expect(r3).toMatchObject({ backupId: b3.out.backupId, parentBackupId: b2Id });
    // It is closed now: `backup done` has nothing to signal (exit 1).
    const late = await cli(s, ['backup', 'done', '--vm', vm.name, '--backup', b3.out.backupId]);
    expect(late.code).toBe(1);
    expect(late.stderr).toContain('is already COMPLETED');
  });

  it('NBD export mode: --wait prints the exports, a backup application reads them, `backup done` finishes it', async () => {
    const s = await useStack();
    const { vm, disks } = await createStackVm(s, { disks: 2, format: 'qcow2' });
    const work = (await createTempDir('lm-cli-nbd-')).path;
    await writeThroughGuest(vm.domain, 0, { byte: 0x41, offset: 0, length: 256 * KiB });
    await writeThroughGuest(vm.domain, 1, { byte: 0x42, offset: 1024 * KiB, length: 256 * KiB });
    const views = await guestViews(await leaves(vm), work, 'nbd');
    const backupId = randomUUID();
    const workflowId = `backup:${vm.uuid}:${backupId}`;

    const child = spawn(
      process.execPath,
      [BIN, 'backup', '--vm', vm.name, '--id', backupId, '--wait', '--json'],
      {
        env: cliEnv(s),
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    onTestFinished(() => stopChild(child));
    // Whatever happens to the test, the exports do not outlive it.
    onTestFinished(async () => {
      const h = s.client.workflow.getHandle(workflowId);
      const d = await h.describe().catch(() => null);
      if (d?.status.name === 'RUNNING') {
        await h.cancel();
        await h.result().catch(() => undefined);
      }
    });
    const ended = collect(child);
    const announced = await firstStderrJson<{
      workflowId: string;
      backupId: string;
      exports: BackupOut['exports'];
    }>(child);
    expect(announced).toEqual({
      workflowId,
      backupId,
      exports: disks.map((d) => ({
        target: d.target,
        uri: expect.stringMatching(/^nbd\+unix:\/\/\//) as unknown,
      })),
    });
    // The backup application: it reads each export; they are what the guest read before the backup.
    for (const e of announced.exports!) {
      const out = path.join(work, `read-${e.target}.raw`);
      await exec('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', e.uri, out]);
      expect(await compareRaw(out, views[e.target]!), e.target).toBe('');
    }
    const done = await cliJson<unknown>(s, ['backup', 'done', '--vm', vm.name, '--backup', backupId]);
    expect(done.out).toEqual({ workflowId, signalled: true });

    const r = await ended;
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({
      workflowId,
      status: 'COMPLETED',
      backupId,
      disks: disks.map((d) => ({
        target: d.target,
        imageId: d.imageId,
        mode: 'full',
        reason: expect.any(String) as unknown,
        changedBytes: expect.any(Number) as unknown,
        copiedBytes: 0,
        extents: expect.any(Number) as unknown,
        file: '',
      })),
      exports: announced.exports,
    });
  });
});

async function compareRaw(a: string, b: string): Promise<string> {
  try {
    await exec('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', a, b]);
    return '';
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    return `${e.stdout ?? ''}${e.stderr ?? ''}`.trim() || String(err);
  }
}

/** The process's whole output and exit code, once it exits. */
function collect(child: ChildProcess): Promise<Run> {
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (b: Buffer) => (stdout += b.toString()));
  child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  return new Promise((resolve) =>
    child.once('close', (code) => resolve({ code: code ?? -1, stdout, stderr })),
  );
}

/** The first line on the process's stderr that is a JSON document (it fails if the process exits first). */
function firstStderrJson<T>(child: ChildProcess): Promise<T> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const onData = (b: Buffer) => {
      buf += b.toString();
      for (const line of buf.split('\n').slice(0, -1)) {
        if (!line.startsWith('{')) continue;
        child.stderr!.off('data', onData);
        resolve(JSON.parse(line) as T);
        return;
      }
    };
    child.stderr!.on('data', onData);
    child.once('close', (code) =>
      reject(new Error(`livemerge exited ${code} before printing the exports: ${buf}`)),
    );
  });
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const closed = new Promise((r) => child.once('close', r));
  child.kill('SIGTERM');
  await closed;
}
