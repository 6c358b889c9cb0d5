// Starting a merge-like workflow (removeSnapshot, mergeDisk) and, with --wait, watching it to the end.
import type { Client } from '@temporalio/client';
import type { Config } from '../config';
import { info, printJson } from './output';
import { ProgressView, follow } from './progress-view';
import type { CliStatus, StartOptions } from './workflows';
import { announce, outcomeOf, startOrAttach } from './workflows';

export interface MergeRunOutput {
  workflowId: string;
  status: Exclude<CliStatus, 'RUNNING'>;
  failureType?: string;
  removedVolumeIds: string[];
}

export async function runMergeLike<T>(
  client: Client,
  config: Config,
  o: StartOptions<T> & { wait: boolean; json: boolean },
): Promise<MergeRunOutput | undefined> {
  const { handle, attached } = await startOrAttach(client, o);
  announce(
    config,
    o.json,
    o.workflowId,
    attached ? 'was already running with the same request: attached' : 'started',
  );
  if (!o.wait) {
    if (o.json) printJson({ workflowId: o.workflowId });
    else info(false, `follow it with: livemerge status ${o.workflowId} --follow`);
    return undefined;
  }
  // The bars go where a person looks: stdout normally, stderr (if a terminal) with --json.
  const view = o.json
    ? process.stderr.isTTY
      ? new ProgressView(process.stderr)
      : null
    : new ProgressView(process.stdout);
  const last = await follow(client, handle, view);
  const outcome = await outcomeOf(handle);
  const result = outcome.result as { removedVolumeIds?: string[] } | undefined;
  const status = outcome.status === 'RUNNING' ? 'FAILED' : outcome.status;
  const out: MergeRunOutput = {
    workflowId: o.workflowId,
    status,
    ...(outcome.failureType ? { failureType: outcome.failureType } : {}),
    removedVolumeIds: result?.removedVolumeIds ?? last.progress?.removedVolumeIds ?? [],
  };
  if (status !== 'COMPLETED') {
    process.exitCode = 1;
    process.stderr.write(
      `livemerge: ${o.workflowId} ${status}${out.failureType ? ` (${out.failureType})` : ''}: ${outcome.message ?? ''}\n`,
    );
  }
  if (o.json) printJson(out);
  else if (status === 'COMPLETED')
    info(false, `${o.workflowId} COMPLETED; removed volumes: ${out.removedVolumeIds.join(', ') || 'none'}`);
  return out;
}
