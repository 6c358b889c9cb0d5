import type { Command } from 'commander';
import { loadConfig } from '../../config';
import { MAX_DEV_HOSTS, planDevHosts } from '../../devstack/hosts';
import { UsageError, printJson } from '../output';

export function registerDev(program: Command): void {
  const dev = program
    .command('dev')
    .description('the local dev stack: libvirtd, Temporal dev server, engine, host agent');
  const say = (line: string) => process.stdout.write(`[dev] ${line}\n`);
  dev
    .command('up')
    .description('start each part that is not already running')
    .option(
      '--hosts <n>',
      `hypervisor hosts (1-${MAX_DEV_HOSTS}): host 1 is the system libvirtd, hosts 2..n sim hosts ` +
        '(a libvirtd each in its own mount namespace, ids <host id>-h<n>); default: those of the running stack, else 1',
    )
    .option('--storage-host <id>', 'the host whose agent holds the storage role (default: the first)')
    .action(async (opts: { hosts?: string; storageHost?: string }) => {
      const { DevStackConflict, devUp, stackHosts } = await import('../../devstack/stack');
      const { intArg } = await import('../args');
      const config = loadConfig();
      const hosts = opts.hosts === undefined ? undefined : intArg('--hosts', opts.hosts, 1, MAX_DEV_HOSTS);
      if (opts.storageHost !== undefined) {
        try {
          planDevHosts(config, hosts ?? stackHosts(config).length, opts.storageHost);
        } catch (e) {
          throw new UsageError(`--storage-host: ${(e as Error).message}`);
        }
      }
      try {
        await devUp(config, say, {
          ...(hosts !== undefined ? { hosts } : {}),
          ...(opts.storageHost !== undefined ? { storageHost: opts.storageHost } : {}),
        });
      } catch (e) {
        if (e instanceof DevStackConflict) throw new UsageError(e.message);
        throw e;
      }
    });
  dev
    .command('down')
    .description('stop exactly what `dev up` started')
    .action(async () => {
      const { devDown } = await import('../../devstack/stack');
      await devDown(loadConfig(), say);
    });
  dev
    .command('status')
    .option('--json', 'machine-readable output')
    .action(async (opts: { json?: boolean }) => {
      const { devStatus } = await import('../../devstack/stack');
      const parts = await devStatus(loadConfig());
      if (opts.json) return printJson(parts);
      for (const p of parts)
        say(`${p.part.padEnd(22)} ${p.state.padEnd(9)} ${String(p.pid ?? '-').padEnd(8)} ${p.detail}`);
    });
}
