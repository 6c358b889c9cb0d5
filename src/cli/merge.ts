import type { Command } from 'commander';
import { loadConfig } from '../config';
import type { MergeDiskInput } from '../schemas/inputs';
import { UsageError } from './output';

/** The same merge is the same disk, volumes, direction and rate (the host is found by the engine). */
const normaliseMerge = (schema: typeof MergeDiskInput) => (raw: unknown) => {
  const r = schema.safeParse(raw);
  return r.success ? { ...r.data, hostId: undefined } : raw;
};

export function registerMerge(program: Command): void {
  program
    .command('merge')
    .description("merge part of one disk's chain: base..top (one merge per disk at a time)")
    .requiredOption('--vm <vm>', 'VM name or UUID')
    .requiredOption('--image <uuid>', "the disk's image id")
    .requiredOption('--base <uuid>', 'base volume id')
    .requiredOption('--top <uuid>', 'top volume id')
    .option('--direction <dir>', 'backward (default: commit base..top into base) or forward (pull into top)')
    .option('--bandwidth <bytes/s>', 'copy rate limit in bytes per second (k/M/G suffixes allowed)')
    .option('--wait', 'wait for the result (with a progress bar on a terminal)')
    .option('--json', 'machine-readable output')
    .action(
      async (opts: {
        vm: string;
        image: string;
        base: string;
        top: string;
        direction?: string;
        bandwidth?: string;
        wait?: boolean;
        json?: boolean;
      }) => {
        const { MergeDiskInput } = await import('../schemas/inputs');
        const { bandwidthArg, directionArg, uuidArg, validInput, vmRefArg } = await import('./args');
        const { runMergeLike } = await import('./run');
        const { StorageDomains, diskChain, viewVm } = await import('./vms');
        const { withTemporal } = await import('./workflows');
        vmRefArg(opts.vm);
        const imageId = uuidArg('--image', opts.image);
        const baseVolumeId = uuidArg('--base', opts.base);
        const topVolumeId = uuidArg('--top', opts.top);
        const direction = directionArg(opts.direction);
        const bandwidth = bandwidthArg(opts.bandwidth);
        const config = loadConfig();
        const vm = await viewVm(config, opts.vm);
        const disk = vm.disks.find((d) => d.volume?.imageId === imageId);
        if (!disk?.volume)
          throw new UsageError(
            `VM ${vm.name} has no disk of image ${imageId} (disks: ${vm.disks
              .map((d) => `${d.target}=${d.volume?.imageId ?? d.path}`)
              .join(', ')})`,
          );
        const input = validInput(MergeDiskInput, {
          vmId: vm.vmId,
          storageDomainId: disk.volume.storageDomainId,
          imageId,
          baseVolumeId,
          topVolumeId,
          ...(direction ? { direction } : {}),
          ...(bandwidth ? { bandwidthBytesPerSec: bandwidth } : {}),
        });
        // base must lie below top in the disk's chain.
        const chain = (await diskChain(new StorageDomains(config.storageRoot), disk)).map((v) => v.volumeId);
        const b = chain.indexOf(baseVolumeId);
        const t = chain.indexOf(topVolumeId);
        if (b < 0 || t < 0 || b >= t)
          throw new UsageError(
            `--base and --top must be volumes of disk ${disk.target}'s chain with base below top ` +
              `(chain, base first: ${chain.join(' <- ')})`,
          );
        const workflowId = `merge-disk:${vm.vmId}:${imageId}`;
        await withTemporal(config, (client) =>
          runMergeLike(client, config, {
            workflowType: 'mergeDisk',
            workflowId,
            input,
            normalise: normaliseMerge(MergeDiskInput),
            what: `a merge of disk ${disk.target} of VM ${vm.name}`,
            vm,
            wait: opts.wait === true,
            json: opts.json === true,
          }),
        );
      },
    );
}
