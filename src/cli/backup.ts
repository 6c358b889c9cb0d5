// `livemerge backup …` and `livemerge restore`: the backupVm, restoreBackup and pruneBackups workflows
// (DESIGN.md "Backups"), and the repository's catalog read directly. Implementations are imported in the
// actions, so that `--help` loads no Temporal, zod or libvirt code.
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Command } from 'commander';
import type { Client, WorkflowHandle } from '@temporalio/client';
import { loadConfig } from '../config';
import type { Config } from '../config';
import type { BackupVmInput } from '../schemas/inputs';
import type { BackupProgress } from '../schemas/progress';
import type { BackupVmResult, PruneBackupsResult, RestoreBackupResult } from '../schemas/results';
import { OperationFailed, UsageError, formatBytes, info, printJson, table } from './output';

type OutDisk = {
  target: string;
  imageId: string;
  mode: 'full' | 'incremental';
  reason?: string;
  changedBytes: number;
  copiedBytes: number;
  extents: number;
  file: string;
};
type NbdExport = NonNullable<BackupProgress['exports']>[number];

export interface BackupOutput {
  workflowId: string;
  status: 'RUNNING' | 'COMPLETED';
  backupId: string;
  disks: OutDisk[];
  /** NBD export mode with --wait: what was served until backupDone. */
  exports?: NbdExport[];
}

export interface BackupListOutput {
  vmId: string;
  backups: Array<{ backupId: string; createdAt: string; parentBackupId: string | null; disks: OutDisk[] }>;
}

export interface RestoreOutput {
  disks: Array<{ target: string; imageId: string; path: string }>;
}

export interface PruneOutput {
  removed: string[];
  kept: string[];
}

export const backupWorkflowId = (vmId: string, backupId: string): string => `backup:${vmId}:${backupId}`;

/** The same backup request is the same VM, id, mode, repository and rate (the host is found by the engine). */
const normaliseBackup = (schema: typeof BackupVmInput) => (raw: unknown) => {
  const r = schema.safeParse(raw);
  return r.success ? { ...r.data, hostId: undefined } : raw;
};

const outDisk = (d: OutDisk): OutDisk => ({
  target: d.target,
  imageId: d.imageId,
  mode: d.mode,
  ...(d.reason !== undefined ? { reason: d.reason } : {}),
  changedBytes: d.changedBytes,
  copiedBytes: d.copiedBytes,
  extents: d.extents,
  file: d.file,
});

/** An existing directory, absolute (a relative one resolved against the current directory); else exit 2. */
async function dirArg(option: string, value: string): Promise<string> {
  const abs = path.resolve(value);
  const st = await fs.stat(abs).catch(() => null);
  if (!st?.isDirectory())
    throw new UsageError(`${option}: ${JSON.stringify(value)} is not an existing directory`);
  return abs;
}

function required(option: string, value: string | undefined): string {
  if (value === undefined) throw new UsageError(`required option '${option}' not specified`);
  return value;
}

/**
 * The VM's UUID: a UUID is taken as it is (backups outlive their VM: the catalog, a restore and a prune
 * need no running VM); a name is resolved through the hosts' agents, as every command does.
 */
async function vmIdOf(config: Config, ref: string): Promise<{ vmId: string; name: string }> {
  const { isUuid } = await import('../common/ids');
  if (isUuid(ref)) return { vmId: ref, name: ref };
  const { viewVm } = await import('./vms');
  const vm = await viewVm(config, ref);
  return { vmId: vm.vmId, name: vm.name };
}

/** Starts a workflow on the engine, announces it and waits for it: its result, or OperationFailed naming `what`. */
async function runToEnd(
  config: Config,
  json: boolean | undefined,
  req: { workflowType: string; workflowId: string; input: unknown; what: string },
): Promise<unknown> {
  const { announce, outcomeOf, withTemporal } = await import('./workflows');
  const { ENGINE_TASK_QUEUE } = await import('../common/task-queues');
  return await withTemporal(config, async (client) => {
    const handle = await client.workflow.start(req.workflowType, {
      taskQueue: ENGINE_TASK_QUEUE,
      workflowId: req.workflowId,
      args: [req.input],
    });
    announce(config, json, req.workflowId, 'started');
    const o = await outcomeOf(handle);
    if (o.status !== 'COMPLETED') throw failed(req.what, o);
    return o.result;
  });
}

function failed(
  what: string,
  o: { status: string; failureType?: string; message?: string },
): OperationFailed {
  return new OperationFailed(
    `${what} ${o.status}${o.failureType ? ` (${o.failureType})` : ''}: ${o.message ?? ''}`,
  );
}

/**
 * NBD export mode: waits for the exports (the `progress` query, once the stage is `ready`) while the
 * workflow runs; undefined when it closed first. The query is asked again every half second: it is the
 * only way to see a stage change from outside, and a closed workflow ends the wait at once.
 */
async function waitForExports(client: Client, handle: WorkflowHandle): Promise<NbdExport[] | undefined> {
  const { queryProgress } = await import('./workflows');
  let closed = false;
  const end = handle.result().then(
    () => (closed = true),
    () => (closed = true),
  );
  for (;;) {
    const p = (await queryProgress(client, handle)) as BackupProgress | null;
    if (p?.stage === 'ready' && p.exports.length > 0) return p.exports;
    if (closed) return undefined;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([end, new Promise((r) => (timer = setTimeout(r, 500)))]);
    clearTimeout(timer);
  }
}

export function registerBackup(program: Command): void {
  const backup = program
    .command('backup')
    .description(
      'back up all disks of a VM (full, or incremental since its last recorded backup) into a repository, or without --repository export them read-only over NBD for a backup application',
    )
    // `backup list --vm …`: the subcommands' options are theirs, not taken by `backup` itself (main.ts
    // enables positional options on the program, so every command inherits it).
    .option('--vm <vm>', 'VM name or UUID (required)')
    .option('--repository <dir>', 'the backup repository (an existing directory); absent: NBD export mode')
    .option('--full', 'every disk in full (default: incremental where possible)')
    .option('--id <uuid>', 'backup id (default: a new UUID)')
    .option('--bandwidth <bytes/s>', 'copy rate limit in bytes per second (k/M/G suffixes allowed)')
    .option(
      '--wait',
      'wait for the result; in NBD mode print the export URIs on stderr and wait until `backup done`',
    )
    .option('--json', 'machine-readable output')
    .action(
      async (opts: {
        vm?: string;
        repository?: string;
        full?: boolean;
        id?: string;
        bandwidth?: string;
        wait?: boolean;
        json?: boolean;
      }) => {
        const { BackupVmInput } = await import('../schemas/inputs');
        const { bandwidthArg, uuidArg, validInput, vmRefArg } = await import('./args');
        const { viewVm } = await import('./vms');
        const { announce, outcomeOf, startOrAttach, withTemporal } = await import('./workflows');
        vmRefArg(required('--vm', opts.vm));
        const backupId = opts.id === undefined ? randomUUID() : uuidArg('--id', opts.id);
        const bandwidth = bandwidthArg(opts.bandwidth);
        const repository =
          opts.repository === undefined ? null : await dirArg('--repository', opts.repository);
        const config = loadConfig();
        const vm = await viewVm(config, opts.vm!);
        const input = validInput(BackupVmInput, {
          vmId: vm.vmId,
          backupId,
          mode: opts.full ? 'full' : 'auto',
          repository,
          ...(bandwidth ? { bandwidthBytesPerSec: bandwidth } : {}),
        } satisfies BackupVmInput);
        const workflowId = backupWorkflowId(vm.vmId, backupId);
        const out = await withTemporal(config, async (client): Promise<BackupOutput> => {
          const { handle, attached } = await startOrAttach(client, {
            workflowType: 'backupVm',
            workflowId,
            input,
            normalise: normaliseBackup(BackupVmInput),
            what: `backup ${backupId}`,
            vm,
          });
          announce(config, opts.json, workflowId, attached ? 'already running: attached' : 'started');
          if (!opts.wait) return { workflowId, status: 'RUNNING', backupId, disks: [] };
          if (repository === null) {
            const exports = await waitForExports(client, handle);
            if (exports) {
              // On stderr either way: stdout carries the result once the backup application is done.
              if (opts.json) process.stderr.write(JSON.stringify({ workflowId, backupId, exports }) + '\n');
              else {
                process.stderr.write(`backup ${backupId} of VM ${vm.name} is exported over NBD:\n`);
                for (const e of exports)
                  process.stderr.write(
                    `  ${e.target}  ${e.uri}${e.bitmap ? `  (dirty bitmap ${e.bitmap})` : ''}\n`,
                  );
                process.stderr.write(
                  `when your backup application is done: livemerge backup done --vm ${vm.vmId} --backup ${backupId}\n`,
                );
              }
            }
          }
          const o = await outcomeOf(handle);
          if (o.status !== 'COMPLETED') throw failed(`backup ${backupId} of VM ${vm.name}`, o);
          const r = o.result as BackupVmResult;
          return {
            workflowId,
            status: 'COMPLETED',
            backupId: r.backupId,
            disks: r.disks.map(outDisk),
            ...(r.exports.length > 0 ? { exports: r.exports } : {}),
          };
        });
        if (opts.json) return printJson(out);
        if (out.status === 'RUNNING')
          return info(false, `follow it with: livemerge status ${workflowId} --follow`);
        process.stdout.write(
          `backup ${out.backupId} of VM ${vm.name} COMPLETED:\n` +
            table(
              out.disks.map((d) => [
                `  ${d.target}`,
                d.mode,
                `changed ${formatBytes(d.changedBytes)}`,
                `copied ${formatBytes(d.copiedBytes)}`,
                d.file || '(exported)',
              ]),
            ) +
            '\n',
        );
      },
    );

  backup
    .command('done')
    .description(
      'NBD export mode: the backup application has read the exports; stop them and finish the backup',
    )
    .requiredOption('--vm <vm>', 'VM name or UUID')
    .requiredOption('--backup <uuid>', 'backup id')
    .option('--json', 'machine-readable output')
    .action(async (opts: { vm: string; backup: string; json?: boolean }) => {
      const { uuidArg, vmRefArg } = await import('./args');
      const { describeOrUsage, mapStatus, queryProgress, withTemporal } = await import('./workflows');
      vmRefArg(opts.vm);
      const backupId = uuidArg('--backup', opts.backup);
      const config = loadConfig();
      const { vmId } = await vmIdOf(config, opts.vm);
      const workflowId = backupWorkflowId(vmId, backupId);
      await withTemporal(config, async (client) => {
        const handle = client.workflow.getHandle(workflowId);
        const status = mapStatus((await describeOrUsage(handle)).status.name);
        if (status !== 'RUNNING')
          throw new OperationFailed(`backup workflow ${workflowId} is already ${status}`);
        const p = (await queryProgress(client, handle)) as BackupProgress | null;
        // Before the exports are served the signal would stop them as soon as they start.
        if (p && p.exports.length === 0)
          throw new OperationFailed(`backup ${backupId} is not serving NBD exports (stage ${p.stage})`);
        await handle.signal('backupDone');
      });
      if (opts.json) return printJson({ workflowId, signalled: true });
      info(false, `backupDone sent to ${workflowId}`);
    });

  backup
    .command('list')
    .description("a VM's restore points in a repository, oldest first (reads its catalog)")
    .requiredOption('--vm <vm>', 'VM name or UUID (a UUID needs no running VM)')
    .requiredOption('--repository <dir>', 'the backup repository')
    .option('--json', 'machine-readable output')
    .action(async (opts: { vm: string; repository: string; json?: boolean }) => {
      const { vmRefArg } = await import('./args');
      vmRefArg(opts.vm);
      const repository = await dirArg('--repository', opts.repository);
      const { vmId } = await vmIdOf(loadConfig(), opts.vm);
      const { readCatalog } = await import('../backup/repository');
      const catalog = await readCatalog(repository, vmId).catch((err: unknown) => {
        throw new OperationFailed(err instanceof Error ? err.message : String(err));
      });
      const out: BackupListOutput = {
        vmId,
        backups: catalog.backups.map((b) => ({
          backupId: b.backupId,
          createdAt: b.createdAt,
          parentBackupId: b.parentBackupId,
          disks: b.disks.map(outDisk),
        })),
      };
      if (opts.json) return printJson(out);
      if (out.backups.length === 0)
        return void process.stdout.write(`no backups of VM ${opts.vm} in ${repository}\n`);
      process.stdout.write(`backups of VM ${opts.vm} in ${repository} (oldest first):\n`);
      process.stdout.write(
        table([
          ['  backup', 'created', 'parent', 'disks'],
          ...out.backups.map((b) => [
            `  ${b.backupId}`,
            b.createdAt,
            b.parentBackupId ?? '-',
            b.disks.map((d) => `${d.target} ${d.mode} ${formatBytes(d.copiedBytes)}`).join(', '),
          ]),
        ]) + '\n',
      );
    });

  backup
    .command('prune')
    .description('merge the oldest restore points into their children until --keep remain (waits)')
    .requiredOption('--vm <vm>', 'VM name or UUID (a UUID needs no running VM)')
    .requiredOption('--repository <dir>', 'the backup repository')
    .requiredOption('--keep <n>', 'how many restore points remain (the newest), at least 1')
    .option('--json', 'machine-readable output')
    .action(async (opts: { vm: string; repository: string; keep: string; json?: boolean }) => {
      const { PruneBackupsInput } = await import('../schemas/inputs');
      const { intArg, validInput, vmRefArg } = await import('./args');
      vmRefArg(opts.vm);
      const keep = intArg('--keep', opts.keep, 1, 10000);
      const repository = await dirArg('--repository', opts.repository);
      const config = loadConfig();
      const { vmId } = await vmIdOf(config, opts.vm);
      const input = validInput(PruneBackupsInput, { vmId, repository, keep });
      const r = (await runToEnd(config, opts.json, {
        workflowType: 'pruneBackups',
        workflowId: `prune-backups:${vmId}:${randomUUID()}`,
        input,
        what: `prune of the backups of VM ${opts.vm}`,
      })) as PruneBackupsResult;
      const out: PruneOutput = { removed: r.removed, kept: r.kept };
      if (opts.json) return printJson(out);
      process.stdout.write(
        `removed ${out.removed.length} restore point(s)${out.removed.length ? `: ${out.removed.join(', ')}` : ''}\n` +
          `kept ${out.kept.length}: ${out.kept.join(', ') || 'none'}\n`,
      );
    });
}

export function registerRestore(program: Command): void {
  program
    .command('restore')
    .description(
      'write one self-contained qcow2 per disk of a backup, as the guest saw it at the backup (waits)',
    )
    .requiredOption('--vm <vm>', 'VM name or UUID (a UUID needs no running VM)')
    .requiredOption('--backup <uuid>', 'backup id (the restore point)')
    .requiredOption('--repository <dir>', 'the backup repository')
    .requiredOption('--to <dir>', 'an existing directory for the images (<imageId>.qcow2)')
    .option('--json', 'machine-readable output')
    .action(async (opts: { vm: string; backup: string; repository: string; to: string; json?: boolean }) => {
      const { RestoreBackupInput } = await import('../schemas/inputs');
      const { uuidArg, validInput, vmRefArg } = await import('./args');
      vmRefArg(opts.vm);
      const backupId = uuidArg('--backup', opts.backup);
      const repository = await dirArg('--repository', opts.repository);
      const targetDir = await dirArg('--to', opts.to);
      const config = loadConfig();
      const { vmId } = await vmIdOf(config, opts.vm);
      const input = validInput(RestoreBackupInput, { vmId, backupId, repository, targetDir });
      const r = (await runToEnd(config, opts.json, {
        workflowType: 'restoreBackup',
        workflowId: `restore-backup:${vmId}:${backupId}:${randomUUID()}`,
        input,
        what: `restore of backup ${backupId}`,
      })) as RestoreBackupResult;
      const out: RestoreOutput = {
        disks: r.disks.map((d) => ({ target: d.target, imageId: d.imageId, path: d.path })),
      };
      if (opts.json) return printJson(out);
      process.stdout.write(
        `backup ${backupId} restored:\n` + table(out.disks.map((d) => [`  ${d.target}`, d.path])) + '\n',
      );
    });
}
