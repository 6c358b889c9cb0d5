import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import type { Command } from 'commander';
import type { Client } from '@temporalio/client';
import { ENGINE_TASK_QUEUE } from '../../common/task-queues';
import type { Config } from '../../config';
import { loadConfig, temporalConnectionOptions } from '../../config';
import { parseDomainDiskChains } from '../../inspect/domain-xml';
import type { Format } from '../../schemas/volume';
import type { Domain, LibvirtConnection } from '../../libvirt';
import { volumeRefFromPath } from '../../storage/paths';
import type { StorageDomain } from '../../storage/storage-domain';
import type { VolumeInfo } from '../../schemas/volume';
import { OperationFailed, UsageError, formatBytes, info, printJson, table, workflowUiLink } from '../output';
import { diskTarget, testVmXml } from './vm-xml';

export interface VmCreateResult {
  vmId: string;
  name: string;
  hostId: string;
  disks: Array<{ target: string; storageDomainId: string; imageId: string; volumeId: string; path: string }>;
}

export interface VmDeleteResult {
  vmId: string;
  name: string;
  deletedImageIds: string[];
  deletedVolumeIds: string[];
}

export function registerVm(program: Command): void {
  const vm = program.command('vm').description('virtual machines');
  vm.command('list')
    .description("list a host's VMs through its host agent (a smoke check of the whole stack)")
    .option('--host <id>', 'host id (default LIVEMERGE_HOST_ID)')
    .option('--json', 'machine-readable output')
    .action(async (opts: { host?: string; json?: boolean }) => {
      const { Client: TemporalClient, Connection } = await import('@temporalio/client');
      const config = loadConfig();
      const hostId = opts.host ?? config.hostId;
      const connection = await Connection.connect(temporalConnectionOptions(config));
      try {
        const client = new TemporalClient({ connection, namespace: config.temporalNamespace });
        const workflowId = `list-vms:${hostId}:${Date.now()}`;
        const result: unknown = await client.workflow.execute('listHostVms', {
          taskQueue: ENGINE_TASK_QUEUE,
          workflowId,
          args: [{ hostId }],
        });
        if (opts.json) return printJson({ workflowId, ...(result as object) });
        const r = result as { hostId: string; vms: Array<{ name: string; uuid: string; state: string }> };
        process.stdout.write(
          `VMs on host ${r.hostId} (workflow ${workflowUiLink(config.temporalUiUrl, config.temporalNamespace, workflowId)}):\n`,
        );
        for (const v of r.vms) process.stdout.write(`  ${v.name.padEnd(32)} ${v.uuid}  ${v.state}\n`);
        if (r.vms.length === 0) process.stdout.write('  (none)\n');
      } finally {
        await connection.close();
      }
    });

  vm.command('create')
    .description('create a TCG test VM whose disks are new images in a storage domain, and start it')
    .requiredOption('--name <name>', 'VM name')
    .option('--disks <n>', 'number of disks (vda, vdb, ...)', '1')
    .option('--size <size>', 'virtual size of each disk (e.g. 64M, 1G)', '64M')
    .option('--format <format>', 'format of the base volumes: raw or qcow2', 'qcow2')
    .option('--no-start', 'define the VM but leave it shut off')
    .option('--storage-domain <uuid>', 'storage domain (default: the only one under the storage root)')
    .option('--host <id>', 'a host of the dev stack (`dev up --hosts N`) to create it on (default: host 1)')
    .option('--json', 'machine-readable output')
    .action(
      async (opts: {
        name: string;
        disks: string;
        size: string;
        format: string;
        start: boolean;
        storageDomain?: string;
        host?: string;
        json?: boolean;
      }) => {
        const { diskSizeArg, intArg, uuidArg, vmNameArg } = await import('../args');
        const { withLibvirt } = await import('../vms');
        const name = vmNameArg(opts.name);
        const count = intArg('--disks', opts.disks, 1, 26);
        const capacity = diskSizeArg(opts.size);
        if (opts.format !== 'raw' && opts.format !== 'qcow2')
          throw new UsageError(`--format must be raw or qcow2, got ${JSON.stringify(opts.format)}`);
        const format = opts.format;
        const sdArg =
          opts.storageDomain === undefined ? undefined : uuidArg('--storage-domain', opts.storageDomain);
        const config = await onHost(loadConfig(), opts.host);
        const result = await withLibvirt(config, async (conn) => {
          const existing = await conn.findByName(name);
          if (existing) {
            existing.free();
            throw new UsageError(`a VM named ${JSON.stringify(name)} already exists`);
          }
          const sd = await chooseStorageDomain(config, sdArg, opts.json);
          return await createVm(conn, config, sd, { name, count, capacity, format, start: opts.start });
        });
        if (opts.json) return printJson(result);
        process.stdout.write(
          `VM ${result.name} ${result.vmId} on host ${result.hostId}${opts.start ? ' (running)' : ' (shut off)'}\n` +
            table(
              result.disks.map((d) => [
                `  ${d.target}`,
                `${formatBytes(capacity)} ${format}`,
                `image ${d.imageId}`,
                d.path,
              ]),
            ) +
            '\n',
        );
      },
    );

  vm.command('delete')
    .description(
      'destroy and undefine a VM and delete its images (only when every volume is in a storage domain)',
    )
    .argument('<vm>', 'VM name or UUID')
    .option('--host <id>', 'the dev stack host the VM is on (default: host 1)')
    .option('--json', 'machine-readable output')
    .action(async (ref: string, opts: { host?: string; json?: boolean }) => {
      const { vmRefArg } = await import('../args');
      const { withLibvirt } = await import('../vms');
      vmRefArg(ref);
      const config = await onHost(loadConfig(), opts.host);
      const result = await withLibvirt(config, (conn) => deleteVm(conn, config, ref));
      if (opts.json) return printJson(result);
      process.stdout.write(
        `VM ${result.name} ${result.vmId} deleted with ${result.deletedImageIds.length} image(s), ` +
          `${result.deletedVolumeIds.length} volume(s)\n`,
      );
    });
}

/** The config of a dev stack host: its id and libvirt URI as `dev up` recorded them (dev-hosts.json). */
async function onHost(config: Config, hostId: string | undefined): Promise<Config> {
  if (hostId === undefined) return config;
  const { stackHosts } = await import('../../devstack/stack');
  const hosts = stackHosts(config);
  const host = hosts.find((h) => h.id === hostId);
  if (!host)
    throw new UsageError(
      `--host ${JSON.stringify(hostId)} is not a host of the dev stack (${hosts.map((h) => h.id).join(', ')})`,
    );
  return { ...config, hostId: host.id, libvirtUri: host.uri };
}

async function chooseStorageDomain(
  config: Config,
  id: string | undefined,
  json?: boolean,
): Promise<StorageDomain> {
  const { StorageDomain } = await import('../../storage/storage-domain');
  const { listStorageDomains } = await import('../vms');
  const existing = await listStorageDomains(config.storageRoot);
  if (id !== undefined) {
    if (!existing.includes(id))
      throw new UsageError(
        `no storage domain ${id} under ${config.storageRoot} (have: ${existing.join(', ') || 'none'})`,
      );
    return StorageDomain.open(config.storageRoot, id);
  }
  if (existing.length > 1)
    throw new UsageError(
      `${existing.length} storage domains under ${config.storageRoot}: choose one with --storage-domain (${existing.join(', ')})`,
    );
  if (existing.length === 1) return StorageDomain.open(config.storageRoot, existing[0]!);
  const sd = await StorageDomain.create(config.storageRoot, randomUUID());
  info(json, `created storage domain ${sd.id} in ${sd.dir}`);
  return sd;
}

async function createVm(
  conn: LibvirtConnection,
  config: Config,
  sd: StorageDomain,
  o: { name: string; count: number; capacity: number; format: Format; start: boolean },
): Promise<VmCreateResult> {
  const bases: VolumeInfo[] = [];
  let dom: Domain | undefined;
  try {
    for (let i = 0; i < o.count; i++)
      bases.push(
        await sd.createImage({
          format: o.format,
          capacity: o.capacity,
          description: `VM ${o.name} disk ${diskTarget(i)}`,
        }),
      );
    dom = await conn.defineXml(
      testVmXml(
        o.name,
        bases.map((b) => ({ path: b.path, format: b.format })),
      ),
    );
    if (o.start) await dom.create();
    return {
      vmId: dom.uuid,
      name: dom.name,
      hostId: config.hostId,
      disks: bases.map((b, i) => ({
        target: diskTarget(i),
        storageDomainId: b.storageDomainId,
        imageId: b.imageId,
        volumeId: b.volumeId,
        path: b.path,
      })),
    };
  } catch (err) {
    // Leave nothing behind: the VM definition, then the new images.
    if (dom) await undefineVm(dom).catch(() => undefined);
    for (const b of bases) await deleteImage(sd, b.imageId).catch(() => undefined);
    throw err;
  } finally {
    dom?.free();
  }
}

async function undefineVm(dom: Domain): Promise<void> {
  const { DomainUndefineFlags, isNoDomainError } = await import('../../libvirt');
  const ignoreGone = (err: unknown) => {
    if (!isNoDomainError(err)) throw err;
  };
  if (await dom.isActive()) await dom.destroy().catch(ignoreGone);
  await dom
    .undefine(
      DomainUndefineFlags.SNAPSHOTS_METADATA |
        DomainUndefineFlags.CHECKPOINTS_METADATA |
        DomainUndefineFlags.NVRAM |
        DomainUndefineFlags.MANAGED_SAVE,
    )
    .catch(ignoreGone);
}

/** Every volume of the image, children before parents, then its (then empty) directory. */
async function deleteImage(sd: StorageDomain, imageId: string): Promise<string[]> {
  const deleted: string[] = [];
  for (;;) {
    const volumes = await sd.listVolumes(imageId);
    if (volumes.length === 0) break;
    const parents = new Set(volumes.map((v) => v.parentId));
    const leaves = volumes.filter((v) => !parents.has(v.volumeId));
    if (leaves.length === 0) throw new OperationFailed(`image ${imageId}: its volumes' parents form a cycle`);
    for (const v of leaves) {
      await sd.deleteVolume(imageId, v.volumeId, { refuseIfLegalChild: true });
      deleted.push(v.volumeId);
    }
  }
  try {
    await fs.rmdir(sd.imageDir(imageId));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  return deleted;
}

/** Paths of every disk source and backing store of a domain, live and persistent. */
function chainEntries(xml: string): Array<{ target: string; device: string; path: string | null }> {
  return parseDomainDiskChains(xml).flatMap((d) =>
    d.chain.map((e) => ({ target: d.target, device: d.device, path: e.path })),
  );
}

async function domainPaths(
  dom: Domain,
): Promise<Array<{ target: string; device: string; path: string | null }>> {
  const xmls = [await dom.xml({ inactive: true })];
  if (await dom.isActive()) xmls.push(await dom.xml());
  return xmls.flatMap(chainEntries);
}

async function deleteVm(conn: LibvirtConnection, config: Config, ref: string): Promise<VmDeleteResult> {
  const { findPathUsers } = await import('../../guard/path-users');
  const { domainLabel } = await import('../../libvirt/domain-xmls');
  const { fleetDomainXmls } = await import('../../workers/libvirt-provider');
  const { stackHosts } = await import('../../devstack/stack');
  const { StorageDomains, lookupVm } = await import('../vms');
  const { withTemporal } = await import('../workflows');
  const dom = await lookupVm(conn, ref);
  try {
    const vmId = dom.uuid;
    const name = dom.name;
    // Refuse unless every disk, and every volume of its chains, is in a storage domain under our root.
    const images = new Map<string, { storageDomainId: string; imageId: string }>();
    for (const e of await domainPaths(dom)) {
      const r = e.path ? volumeRefFromPath(config.storageRoot, e.path) : null;
      if (!r)
        throw new UsageError(
          `refusing to delete VM ${name}: ${e.device} ${e.target} uses ${e.path ?? 'a non-file source'}, ` +
            `which is not a volume of a storage domain under ${config.storageRoot}`,
        );
      images.set(r.imageId, { storageDomainId: r.storageDomainId, imageId: r.imageId });
    }
    // ... and no other domain uses any volume of these images.
    const storageDomains = new StorageDomains(config.storageRoot);
    const files: string[] = [];
    for (const img of images.values())
      for (const v of await (await storageDomains.get(img.storageDomainId)).listVolumes(img.imageId))
        files.push(v.path);
    // Any domain on any host of the stack (fails closed: a host that does not answer refuses).
    const uris = {
      ...config.hostUris,
      ...Object.fromEntries(stackHosts(config).map((h) => [h.id, h.uri])),
      [config.hostId]: config.libvirtUri,
    };
    const fleet = fleetDomainXmls({ hostId: config.hostId, libvirt: () => Promise.resolve(conn) }, uris, [
      ...config.hosts,
    ]);
    const [other] = await findPathUsers(files, fleet, { except: vmId }).finally(() => fleet.close());
    if (other)
      throw new UsageError(
        `refusing to delete VM ${name}: VM ${domainLabel(other.domain)} also uses image ` +
          `${volumeRefFromPath(config.storageRoot, other.path)?.imageId} (${other.entry})`,
      );
    // Fails closed: with Temporal unreachable, whether a merge of this VM runs cannot be told, so it refuses.
    await withTemporal(config, (client) => refuseIfBusy(client, vmId, name, [...images.keys()]));

    await undefineVm(dom);
    const deletedVolumeIds: string[] = [];
    for (const img of images.values())
      deletedVolumeIds.push(
        ...(await deleteImage(await storageDomains.get(img.storageDomainId), img.imageId)),
      );
    return { vmId, name, deletedImageIds: [...images.keys()], deletedVolumeIds };
  } finally {
    dom.free();
  }
}

/** A VM with a running livemerge workflow is not deleted under it. */
async function refuseIfBusy(client: Client, vmId: string, name: string, imageIds: string[]): Promise<void> {
  const busy: string[] = [];
  try {
    // vmId is a libvirt UUID (validated by libvirt's own lookup), safe inside the query string.
    for await (const w of client.workflow.list({
      query: `LivemergeVmId = '${vmId}' AND ExecutionStatus = 'Running'`,
    })) {
      // Visibility lags a little behind: confirm with the workflow itself.
      const d = await client.workflow
        .getHandle(w.workflowId, w.runId)
        .describe()
        .catch(() => null);
      if (d?.status.name === 'RUNNING') busy.push(w.workflowId);
    }
  } catch {
    // No such search attribute on this server: check the per-disk merge ids at least.
  }
  for (const imageId of imageIds) {
    const id = `merge-disk:${vmId}:${imageId}`;
    const d = await client.workflow
      .getHandle(id)
      .describe()
      .catch(() => null);
    if (d?.status.name === 'RUNNING' && !busy.includes(id)) busy.push(id);
  }
  if (busy.length > 0)
    throw new UsageError(`refusing to delete VM ${name}: workflow(s) running on it: ${busy.join(', ')}`);
}
