import type { Command } from 'commander';
import type { AuditRecord } from '../audit/audit-log';
import { isUuid } from '../common/ids';
import { loadConfig } from '../config';
import { printJson, table } from './output';

export interface AuditOutput {
  file: string;
  events: AuditRecord[];
}

export function registerAudit(program: Command): void {
  program
    .command('audit')
    .description('the audit log: one event per workflow outcome (started, completed, failed, cancelled)')
    .option('--vm <vm>', 'only events of this VM (name, or UUID also for a deleted VM)')
    .option('--json', 'machine-readable output')
    .action(async (opts: { vm?: string; json?: boolean }) => {
      const { AuditLog } = await import('../audit/audit-log');
      const { vmRefArg } = await import('./args');
      const { viewVm } = await import('./vms');
      const config = loadConfig();
      let vmId: string | undefined;
      if (opts.vm !== undefined) {
        vmRefArg(opts.vm);
        vmId = isUuid(opts.vm) ? opts.vm : (await viewVm(config, opts.vm)).vmId;
      }
      const events = await new AuditLog(config.auditLogFile).read(vmId ? { vmId } : {});
      if (opts.json) return printJson({ file: config.auditLogFile, events } satisfies AuditOutput);
      if (events.length === 0)
        return void process.stdout.write(`no audit events in ${config.auditLogFile}\n`);
      process.stdout.write(
        table([
          ['TIME', 'OUTCOME', 'WORKFLOW', 'DETAIL'],
          ...events.map((e) => [e.at, e.outcome, e.workflowId, summary(e)]),
        ]) + '\n',
      );
    });
}

function summary(e: AuditRecord): string {
  const d = e.detail;
  const parts: string[] = [];
  const input = typeof d.input === 'object' && d.input !== null ? (d.input as Record<string, unknown>) : {};
  const snapshotId = d.snapshotId ?? input.snapshotId;
  if (typeof snapshotId === 'string') parts.push(`snapshot ${snapshotId}`);
  if (typeof d.failureType === 'string') parts.push(d.failureType);
  if (typeof d.mode === 'string') parts.push(d.mode);
  if (typeof d.diskTarget === 'string') parts.push(d.diskTarget);
  if (Array.isArray(d.removedVolumeIds) && d.removedVolumeIds.length)
    parts.push(`removes ${d.removedVolumeIds.map(String).join(',')}`);
  if (typeof d.message === 'string') parts.push(d.message.slice(0, 120));
  return parts.join(' ');
}
