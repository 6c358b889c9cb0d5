import type { Command } from 'commander';
import { loadConfig } from '../config';
import { printJson } from './output';
import type { AnyProgress, CliStatus } from './workflows';

export interface StatusOutput {
  workflowId: string;
  type: string;
  status: CliStatus;
  failureType?: string;
  progress: AnyProgress | null;
}

export function registerStatus(program: Command): void {
  program
    .command('status')
    .description(
      "a workflow's status and progress; with --follow, a live progress bar until it closes " +
        '(exit 0 when it completed, 1 when it failed, was cancelled or terminated)',
    )
    .argument('<workflow-id>', 'e.g. remove-snapshot:<vmId>:<snapshotId> or merge-disk:<vmId>:<imageId>')
    .option('--follow', 'refresh until the workflow closes')
    .option('--json', 'machine-readable output (with --follow: once, when it has closed)')
    .action(async (workflowId: string, opts: { follow?: boolean; json?: boolean }) => {
      const { ProgressView, RateMeter, follow, observe, renderLines } = await import('./progress-view');
      const { failureTypeOf, withTemporal } = await import('./workflows');
      const { WorkflowFailedError } = await import('@temporalio/client');
      const config = loadConfig();
      const out = await withTemporal(config, async (client) => {
        const handle = client.workflow.getHandle(workflowId);
        let o;
        if (opts.follow) {
          const view = opts.json
            ? process.stderr.isTTY
              ? new ProgressView(process.stderr)
              : null
            : new ProgressView(process.stdout);
          o = await follow(client, handle, view);
          if (o.status !== 'COMPLETED') process.exitCode = 1;
        } else {
          o = await observe(client, handle, new RateMeter());
        }
        let failureType: string | undefined;
        if (o.status === 'FAILED' || o.status === 'CANCELLED' || o.status === 'TERMINATED') {
          try {
            await handle.result();
          } catch (err) {
            if (err instanceof WorkflowFailedError) failureType = failureTypeOf(err.cause);
          }
        }
        const result: StatusOutput = {
          workflowId,
          type: o.type,
          status: o.status,
          ...(failureType ? { failureType } : {}),
          progress: o.progress,
        };
        return result;
      });
      if (opts.json) return printJson(out);
      if (opts.follow) {
        process.stdout.write(
          `${out.workflowId}: ${out.status}${out.failureType ? ` (${out.failureType})` : ''}\n`,
        );
        return;
      }
      process.stdout.write(
        `${out.type} ${out.workflowId}: ${out.status}${out.failureType ? ` (${out.failureType})` : ''}\n`,
      );
      for (const l of renderLines({ ...out, status: 'RUNNING' })) process.stdout.write(`  ${l}\n`);
      if (out.progress?.removedVolumeIds.length)
        process.stdout.write(`  removed volumes: ${out.progress.removedVolumeIds.join(', ')}\n`);
    });
}
