import type { Command } from 'commander';
import { isHostId } from '../common/ids';
import { loadConfig, workerDeploymentVersion } from '../config';
import { UsageError } from './output';

export function registerWorker(program: Command): void {
  const worker = program.command('worker').description('run a Temporal worker in the foreground');
  worker
    .command('engine')
    .description('the workflow worker on livemerge-engine')
    .action(async () => {
      const { connectWorker } = await import('../workers/connection');
      const { createEngineWorker } = await import('../workers/engine');
      const { runUntilShutdown } = await import('../workers/run');
      const { createEngineActivities } = await import('../activities/engine');
      const { AuditLog } = await import('../audit/audit-log');
      const config = loadConfig();
      const deployment = workerDeploymentVersion(config);
      const connection = await connectWorker(config);
      const w = await createEngineWorker({
        connection,
        namespace: config.temporalNamespace,
        activities: createEngineActivities({
          auditLog: new AuditLog(config.auditLogFile),
          hosts: config.hosts,
          locateTimeoutSeconds: config.locateTimeoutSeconds,
        }),
        deployment,
      });
      await runUntilShutdown([w]);
      await connection.close();
    });
  worker
    .command('host')
    .description('a host agent on livemerge-host-<id> (with --storage also on livemerge-storage)')
    .requiredOption('--host-id <id>', 'this host id')
    .option('--storage', 'also take the storage role')
    .action(async (opts: { hostId: string; storage?: boolean }) => {
      if (!isHostId(opts.hostId)) throw new UsageError(`invalid --host-id ${JSON.stringify(opts.hostId)}`);
      const { connectWorker } = await import('../workers/connection');
      const { createHostWorkers } = await import('../workers/host');
      const { runUntilShutdown } = await import('../workers/run');
      const { fleetDomainXmls, libvirtProvider } = await import('../workers/libvirt-provider');
      const config = loadConfig({ ...process.env, LIVEMERGE_HOST_ID: opts.hostId });
      const deployment = workerDeploymentVersion(config);
      const connection = await connectWorker(config);
      const libvirt = libvirtProvider(config.libvirtUri);
      const domainXmls = fleetDomainXmls({ hostId: opts.hostId, libvirt }, config.hostUris, config.hosts);
      const workers = await createHostWorkers({
        connection,
        namespace: config.temporalNamespace,
        hostId: opts.hostId,
        storageRoot: config.storageRoot,
        storage: opts.storage === true,
        libvirt,
        domainXmls,
        deployment,
      });
      await runUntilShutdown(workers);
      await domainXmls.close();
      await libvirt.close();
      await connection.close();
    });
}
