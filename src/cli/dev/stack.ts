import type { Command } from 'commander';
import { loadConfig } from '../../config';
import { devDown, devStatus, devUp } from '../../devstack/stack';
import { printJson } from '../output';

export function registerDev(program: Command): void {
  const dev = program
    .command('dev')
    .description('the local dev stack: libvirtd, Temporal dev server, engine, host agent');
  const say = (line: string) => process.stdout.write(`[dev] ${line}\n`);
  dev
    .command('up')
    .description('start each part that is not already running')
    .action(async () => {
      await devUp(loadConfig(), say);
    });
  dev
    .command('down')
    .description('stop exactly what `dev up` started')
    .action(async () => {
      await devDown(loadConfig(), say);
    });
  dev
    .command('status')
    .option('--json', 'machine-readable output')
    .action(async (opts: { json?: boolean }) => {
      const parts = await devStatus(loadConfig());
      if (opts.json) return printJson(parts);
      for (const p of parts)
        say(`${p.part.padEnd(22)} ${p.state.padEnd(9)} ${String(p.pid ?? '-').padEnd(8)} ${p.detail}`);
    });
}
