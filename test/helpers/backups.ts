// Backups from tests as a user's service starts them (by type, id and JSON input), and their checks.
import { randomUUID } from 'node:crypto';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { WorkflowHandle } from '@temporalio/client';
import { ENGINE_TASK_QUEUE } from '../../src/common/task-queues';
import type { BackupVmInput, PruneBackupsInput, RestoreBackupInput } from '../../src/schemas/inputs';
import type { BackupVmResult, PruneBackupsResult, RestoreBackupResult } from '../../src/schemas/results';
import { dumpGuestView } from './data';
import type { Stack } from './stack';

const exec = promisify(execFile);

export function startBackup(s: Stack, input: BackupVmInput): Promise<WorkflowHandle> {
  const backupId = input.backupId ?? randomUUID();
  return s.client.workflow.start('backupVm', {
    taskQueue: ENGINE_TASK_QUEUE,
    workflowId: `backup:${input.vmId}:${backupId}`,
    args: [{ ...input, backupId }],
  });
}

export async function backupVm(s: Stack, input: BackupVmInput): Promise<BackupVmResult> {
  return (await (await startBackup(s, input)).result()) as BackupVmResult;
}

export async function restoreBackup(s: Stack, input: RestoreBackupInput): Promise<RestoreBackupResult> {
  return await s.client.workflow.execute<(i: RestoreBackupInput) => Promise<RestoreBackupResult>>(
    'restoreBackup',
    {
      taskQueue: ENGINE_TASK_QUEUE,
      workflowId: `restore-backup:${input.vmId}:${input.backupId}:${randomUUID()}`,
      args: [input],
    },
  );
}

export async function pruneBackups(s: Stack, input: PruneBackupsInput): Promise<PruneBackupsResult> {
  return await s.client.workflow.execute<(i: PruneBackupsInput) => Promise<PruneBackupsResult>>(
    'pruneBackups',
    {
      taskQueue: ENGINE_TASK_QUEUE,
      workflowId: `prune-backups:${input.vmId}:${randomUUID()}`,
      args: [input],
    },
  );
}

/** What the guest reads on each disk now, as raw files (`<dir>/<tag>-<target>.raw`), by target. */
export async function guestViews(
  leaves: Array<{ target: string; path: string }>,
  dir: string,
  tag: string,
): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const l of leaves)
    out[l.target] = await dumpGuestView(l.path, 'qcow2', `${dir}/${tag}-${l.target}.raw`);
  return out;
}

/** qemu-img compare of a restored (self-contained qcow2) disk with a raw view: '' when identical, else its output. */
export async function compareWithView(restored: string, view: string): Promise<string> {
  try {
    await exec('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', restored, view]);
    return '';
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    return `${e.stdout ?? ''}${e.stderr ?? ''}`.trim() || String(err);
  }
}

/** The ranges a qcow2 file holds data for itself (not through its backing), merged. */
export async function ownExtents(file: string): Promise<Array<{ offset: number; length: number }>> {
  const { stdout } = await exec('qemu-img', ['map', '--output=json', '-U', '-f', 'qcow2', file]);
  const entries = JSON.parse(stdout) as Array<{
    start: number;
    length: number;
    depth: number;
    data: boolean;
  }>;
  const out: Array<{ offset: number; length: number }> = [];
  for (const e of entries) {
    if (e.depth !== 0 || !e.data) continue;
    const last = out[out.length - 1];
    if (last && last.offset + last.length === e.start) last.length += e.length;
    else out.push({ offset: e.start, length: e.length });
  }
  return out;
}

/** Whether `ranges` lie inside the union of `within`. */
export function inside(
  ranges: ReadonlyArray<{ offset: number; length: number }>,
  within: ReadonlyArray<{ offset: number; length: number }>,
): boolean {
  return ranges.every((r) =>
    within.some((w) => w.offset <= r.offset && r.offset + r.length <= w.offset + w.length),
  );
}
