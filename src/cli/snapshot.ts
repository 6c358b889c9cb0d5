import { randomUUID } from 'node:crypto';
import type { Command } from 'commander';
import type { Client } from '@temporalio/client';
import { loadConfig } from '../config';
import type { CreateSnapshotInput, RemoveSnapshotInput } from '../schemas/inputs';
import type { CreateSnapshotResult } from '../workflows/create-snapshot';
import { OperationFailed, UsageError, printJson, table } from './output';
import type { StorageDomains, VmView } from './vms';

export interface SnapshotCreateOutput {
  workflowId: string;
  snapshotId: string;
  disks: Array<{ target: string; imageId: string; frozenVolumeId: string; leafVolumeId: string }>;
}

export interface SnapshotListOutput {
  vmId: string;
  name: string;
  snapshots: Array<{
    snapshotId: string;
    disks: Array<{ target: string; storageDomainId: string; imageId: string; volumeId: string }>;
  }>;
}

/** Ignores what a caller may leave out or the workflow adds: the same request is the same snapshot. */
const normaliseCreate = (schema: typeof CreateSnapshotInput) => (raw: unknown) => {
  const r = schema.safeParse(raw);
  return r.success
    ? { vmId: r.data.vmId, snapshotId: r.data.snapshotId, description: r.data.description }
    : raw;
};
const normaliseRemove = (schema: typeof RemoveSnapshotInput) => (raw: unknown) => {
  const r = schema.safeParse(raw);
  return r.success ? { ...r.data, hostId: undefined } : raw;
};

export function registerSnapshot(program: Command): void {
  const snapshot = program.command('snapshot').description("snapshots of a VM's disks");

  snapshot
    .command('create')
    .description('take a snapshot of all disks of a VM at once (waits for it)')
    .requiredOption('--vm <vm>', 'VM name or UUID')
    .option('--id <uuid>', 'snapshot id (default: a new UUID)')
    .option('--description <text>', 'description')
    .option('--json', 'machine-readable output')
    .action(async (opts: { vm: string; id?: string; description?: string; json?: boolean }) => {
      const { CreateSnapshotInput } = await import('../schemas/inputs');
      const { uuidArg, validInput, vmRefArg } = await import('./args');
      const { StorageDomains, viewVm } = await import('./vms');
      const { announce, outcomeOf, startOrAttach, withTemporal } = await import('./workflows');
      vmRefArg(opts.vm);
      const snapshotId = opts.id === undefined ? randomUUID() : uuidArg('--id', opts.id);
      const config = loadConfig();
      const vm = await viewVm(config, opts.vm);
      const input = validInput(CreateSnapshotInput, {
        vmId: vm.vmId,
        snapshotId,
        ...(opts.description !== undefined ? { description: opts.description } : {}),
      });
      if (
        (await listSnapshots(new StorageDomains(config.storageRoot), vm)).snapshots.some(
          (x) => x.snapshotId === snapshotId,
        )
      )
        throw new UsageError(`VM ${vm.name} already has a snapshot ${snapshotId}`);
      const workflowId = `create-snapshot:${vm.vmId}:${snapshotId}`;
      const out = await withTemporal(config, async (client) => {
        const { handle, attached } = await startOrAttach(client, {
          workflowType: 'createSnapshot',
          workflowId,
          input,
          normalise: normaliseCreate(CreateSnapshotInput),
          what: `snapshot ${snapshotId}`,
          vm,
        });
        announce(config, opts.json, workflowId, attached ? 'already running: attached' : 'started');
        const o = await outcomeOf(handle);
        if (o.status !== 'COMPLETED')
          throw new OperationFailed(
            `snapshot ${snapshotId} of VM ${vm.name} ${o.status}${o.failureType ? ` (${o.failureType})` : ''}: ${o.message ?? ''}`,
          );
        const r = o.result as CreateSnapshotResult;
        return {
          workflowId,
          snapshotId: r.snapshotId,
          disks: r.disks.map((d) => ({
            target: d.target,
            imageId: d.imageId,
            frozenVolumeId: d.frozenVolumeId,
            leafVolumeId: d.leafVolumeId,
          })),
        } satisfies SnapshotCreateOutput;
      });
      if (opts.json) return printJson(out);
      process.stdout.write(
        `snapshot ${out.snapshotId} of VM ${vm.name}:\n` +
          table(
            out.disks.map((d) => [
              `  ${d.target}`,
              `frozen ${d.frozenVolumeId}`,
              `new leaf ${d.leafVolumeId}`,
            ]),
          ) +
          '\n',
      );
    });

  snapshot
    .command('list')
    .description("a VM's snapshots, from the storage metadata of its disks' chains (oldest first)")
    .requiredOption('--vm <vm>', 'VM name or UUID')
    .option('--json', 'machine-readable output')
    .action(async (opts: { vm: string; json?: boolean }) => {
      const { vmRefArg } = await import('./args');
      const { StorageDomains, viewVm } = await import('./vms');
      vmRefArg(opts.vm);
      const config = loadConfig();
      const vm = await viewVm(config, opts.vm);
      const out = await listSnapshots(new StorageDomains(config.storageRoot), vm);
      if (opts.json) return printJson(out);
      if (out.snapshots.length === 0) return void process.stdout.write(`VM ${vm.name} has no snapshots\n`);
      process.stdout.write(`snapshots of VM ${vm.name} (oldest first):\n`);
      for (const s of out.snapshots) {
        process.stdout.write(`  ${s.snapshotId}\n`);
        process.stdout.write(table(s.disks.map((d) => [`    ${d.target}`, `volume ${d.volumeId}`])) + '\n');
      }
    });

  snapshot
    .command('remove')
    .description('delete a snapshot of a running (or shut-off) VM by merging each of its disks')
    .requiredOption('--vm <vm>', 'VM name or UUID')
    .requiredOption('--snapshot <uuid>', 'snapshot id')
    .option('--direction <dir>', 'backward (default: commit into the snapshot volume) or forward (pull)')
    .option('--bandwidth <bytes/s>', 'copy rate limit in bytes per second (k/M/G suffixes allowed)')
    .option('--wait', 'wait for the result (with a progress bar on a terminal)')
    .option('--json', 'machine-readable output')
    .action(
      async (opts: {
        vm: string;
        snapshot: string;
        direction?: string;
        bandwidth?: string;
        wait?: boolean;
        json?: boolean;
      }) => {
        const { RemoveSnapshotInput } = await import('../schemas/inputs');
        const { bandwidthArg, directionArg, uuidArg, validInput, vmRefArg } = await import('./args');
        const { runMergeLike } = await import('./run');
        const { StorageDomains, viewVm } = await import('./vms');
        const { withTemporal } = await import('./workflows');
        vmRefArg(opts.vm);
        const snapshotId = uuidArg('--snapshot', opts.snapshot);
        const direction = directionArg(opts.direction);
        const bandwidth = bandwidthArg(opts.bandwidth);
        const config = loadConfig();
        const vm = await viewVm(config, opts.vm);
        const input = validInput(RemoveSnapshotInput, {
          vmId: vm.vmId,
          snapshotId,
          ...(direction ? { direction } : {}),
          ...(bandwidth ? { bandwidthBytesPerSec: bandwidth } : {}),
        });
        const list = await listSnapshots(new StorageDomains(config.storageRoot), vm);
        const snap = list.snapshots.find((s) => s.snapshotId === snapshotId);
        if (!snap) throw new UsageError(`VM ${vm.name} has no snapshot ${snapshotId}`);
        const workflowId = `remove-snapshot:${vm.vmId}:${snapshotId}`;
        await withTemporal(config, async (client) => {
          await refuseOtherMerges(client, vm, workflowId, snap.disks);
          await runMergeLike(client, config, {
            workflowType: 'removeSnapshot',
            workflowId,
            input,
            normalise: normaliseRemove(RemoveSnapshotInput),
            what: `removal of snapshot ${snapshotId}`,
            vm,
            wait: opts.wait === true,
            json: opts.json === true,
          });
        });
      },
    );
}

/** Snapshots in chain order (oldest first), each with its volume on every disk that has one. */
export async function listSnapshots(storageDomains: StorageDomains, vm: VmView): Promise<SnapshotListOutput> {
  const { diskChain } = await import('./vms');
  const order: string[] = [];
  const byId = new Map<string, SnapshotListOutput['snapshots'][number]>();
  for (const disk of vm.disks) {
    if (!disk.volume) continue;
    for (const v of await diskChain(storageDomains, disk)) {
      if (!v.snapshotId) continue;
      let s = byId.get(v.snapshotId);
      if (!s) {
        s = { snapshotId: v.snapshotId, disks: [] };
        byId.set(v.snapshotId, s);
        order.push(v.snapshotId);
      }
      s.disks.push({
        target: disk.target,
        storageDomainId: v.storageDomainId,
        imageId: v.imageId,
        volumeId: v.volumeId,
      });
    }
  }
  return { vmId: vm.vmId, name: vm.name, snapshots: order.map((id) => byId.get(id)!) };
}

/** A merge already running on one of the snapshot's disks, for another request, makes this one fail: say so now. */
async function refuseOtherMerges(
  client: Client,
  vm: VmView,
  workflowId: string,
  disks: Array<{ target: string; imageId: string }>,
): Promise<void> {
  for (const d of disks) {
    const id = `merge-disk:${vm.vmId}:${d.imageId}`;
    const desc = await client.workflow
      .getHandle(id)
      .describe()
      .catch(() => null);
    if (desc?.status.name === 'RUNNING' && desc.parentExecution?.workflowId !== workflowId)
      throw new UsageError(
        `a merge is already running on disk ${d.target} of VM ${vm.name} (workflow ${id})`,
      );
  }
}
