import type { Command } from 'commander';
import { loadConfig } from '../config';
import type { VolumeInfo } from '../schemas/volume';
import { printJson, table } from './output';

export interface ChainOutput {
  disks: Array<{
    target: string;
    storageDomainId: string;
    imageId: string;
    volumes: Array<Pick<VolumeInfo, 'volumeId' | 'parentId' | 'format' | 'legality' | 'snapshotId' | 'path'>>;
  }>;
}

export function registerChain(program: Command): void {
  program
    .command('chain')
    .description("each disk's volume chain from storage metadata, base first")
    .requiredOption('--vm <vm>', 'VM name or UUID')
    .option('--json', 'machine-readable output')
    .action(async (opts: { vm: string; json?: boolean }) => {
      const { vmRefArg } = await import('./args');
      const { StorageDomains, diskChain, viewVm } = await import('./vms');
      vmRefArg(opts.vm);
      const config = loadConfig();
      const vm = await viewVm(config, opts.vm);
      const storageDomains = new StorageDomains(config.storageRoot);
      const out: ChainOutput = { disks: [] };
      for (const disk of vm.disks) {
        if (!disk.volume) {
          process.stderr.write(
            `livemerge: disk ${disk.target} (${disk.path}) is not in a storage domain: skipped\n`,
          );
          continue;
        }
        out.disks.push({
          target: disk.target,
          storageDomainId: disk.volume.storageDomainId,
          imageId: disk.volume.imageId,
          volumes: (await diskChain(storageDomains, disk)).map((v) => ({
            volumeId: v.volumeId,
            parentId: v.parentId,
            format: v.format,
            legality: v.legality,
            snapshotId: v.snapshotId,
            path: v.path,
          })),
        });
      }
      if (opts.json) return printJson(out);
      process.stdout.write(`chains of VM ${vm.name} ${vm.vmId} (base first):\n`);
      for (const d of out.disks) {
        process.stdout.write(`  ${d.target}  image ${d.imageId}  storage domain ${d.storageDomainId}\n`);
        process.stdout.write(
          table(
            d.volumes.map((v, i) => [
              `    ${i === d.volumes.length - 1 ? 'leaf' : i === 0 ? 'base' : '    '}`,
              v.volumeId,
              v.format,
              v.legality,
              v.snapshotId ? `snapshot ${v.snapshotId}` : '-',
            ]),
          ) + '\n',
        );
      }
    });
}
