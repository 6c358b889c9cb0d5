import type { Command } from 'commander';
import { loadConfig } from '../config';
import { OperationFailed, info, printJson } from './output';
import type { Outcome } from './workflows';

export interface CancelOutput {
  workflowId: string;
  /** The request was delivered to a running workflow. */
  requested: true;
  /** With --wait: how the workflow ended (a merge past its pivot completes: DESIGN's cancellation table). */
  outcome?: Outcome;
}

export function registerCancel(program: Command): void {
  program
    .command('cancel')
    .description(
      'ask a running workflow to cancel; a merge before its pivot aborts and keeps the chain as it was, ' +
        'one past its pivot finishes (exit 0 when the request was delivered, 1 when the workflow is closed)',
    )
    .argument('<workflow-id>', 'e.g. remove-snapshot:<vmId>:<snapshotId> or merge-disk:<vmId>:<imageId>')
    .option('--wait', 'wait for the workflow to close and print how it ended')
    .option('--json', 'machine-readable output')
    .action(async (workflowId: string, opts: { wait?: boolean; json?: boolean }) => {
      const { describeOrUsage, mapStatus, outcomeOf, withTemporal } = await import('./workflows');
      const out = await withTemporal(loadConfig(), async (client): Promise<CancelOutput> => {
        const handle = client.workflow.getHandle(workflowId);
        const status = mapStatus((await describeOrUsage(handle)).status.name);
        if (status !== 'RUNNING') throw new OperationFailed(`workflow ${workflowId} is already ${status}`);
        await handle.cancel();
        info(opts.json, `cancellation of ${workflowId} requested`);
        return { workflowId, requested: true, ...(opts.wait ? { outcome: await outcomeOf(handle) } : {}) };
      });
      if (opts.json) return printJson(out);
      if (out.outcome)
        process.stdout.write(
          `${workflowId}: ${out.outcome.status}${out.outcome.failureType ? ` (${out.outcome.failureType})` : ''}\n`,
        );
    });
}
