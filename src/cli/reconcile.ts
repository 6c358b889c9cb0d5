import type { Command } from 'commander';
import { loadConfig } from '../config';
import type { ReconcileResult } from '../workflows/reconcile';
import { OperationFailed, UsageError, printJson } from './output';
import { ENGINE_TASK_QUEUE } from '../common/task-queues';

export function registerReconcile(program: Command): void {
  program
    .command('reconcile')
    .description(
      'delete ILLEGAL volumes no chain references, and report chains whose metadata, qcow2 headers and ' +
        'libvirt definition disagree (waits)',
    )
    .requiredOption('--storage-domain <uuid>', 'storage domain id')
    .option('--json', 'machine-readable output')
    .action(async (opts: { storageDomain: string; json?: boolean }) => {
      const { ReconcileInput } = await import('../schemas/inputs');
      const { uuidArg, validInput } = await import('./args');
      const { listStorageDomains } = await import('./vms');
      const { announce, outcomeOf, withTemporal } = await import('./workflows');
      const storageDomainId = uuidArg('--storage-domain', opts.storageDomain);
      const input = validInput(ReconcileInput, { storageDomainId });
      const config = loadConfig();
      if (!(await listStorageDomains(config.storageRoot)).includes(storageDomainId))
        throw new UsageError(`no storage domain ${storageDomainId} under ${config.storageRoot}`);
      const workflowId = `reconcile:${storageDomainId}:${Date.now()}`;
      const out = await withTemporal(config, async (client) => {
        const handle = await client.workflow.start('reconcile', {
          taskQueue: ENGINE_TASK_QUEUE,
          workflowId,
          args: [input],
        });
        announce(config, opts.json, workflowId, 'started');
        const o = await outcomeOf(handle);
        if (o.status !== 'COMPLETED')
          throw new OperationFailed(
            `${workflowId} ${o.status}${o.failureType ? ` (${o.failureType})` : ''}: ${o.message ?? ''}`,
          );
        return { workflowId, ...(o.result as ReconcileResult) };
      });
      if (opts.json) return printJson(out);
      process.stdout.write(
        `storage domain ${out.storageDomainId}: deleted ${out.deleted.length} orphan volume(s)` +
          (out.deleted.length ? `: ${out.deleted.map((v) => v.volumeId).join(', ')}` : '') +
          '\n',
      );
      for (const r of out.reports)
        process.stdout.write(
          `  image ${r.imageId}: ${r.ok ? 'ok' : 'DISAGREES'}` +
            r.disagreements
              .map((d) => `\n    ${d.kind}${d.volumeId ? ` ${d.volumeId}` : ''}: ${d.detail}`)
              .join('') +
            '\n',
        );
    });
}
