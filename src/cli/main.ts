// `livemerge`: the command line. Exit 0 on success, 1 when the operation failed, 2 for bad usage or input.
import { Command, CommanderError } from 'commander';
import { registerAudit } from './audit';
import { registerBackup, registerRestore } from './backup';
import { registerCancel } from './cancel';
import { registerChain } from './chain';
import { registerDeployment } from './deployment';
import { registerDemo, registerDev, registerVm } from './dev';
import { registerMerge } from './merge';
import { EXIT_FAILED, EXIT_USAGE, OperationFailed, UsageError } from './output';
import { registerReconcile } from './reconcile';
import { registerSnapshot } from './snapshot';
import { registerStatus } from './status';
import { registerWorker } from './worker';

const program = new Command('livemerge')
  .description('Delete snapshots of running KVM VMs by merging their qcow2 chains, durably (Temporal)')
  .exitOverride()
  .showHelpAfterError()
  // A command's options are read by that command only (`backup --vm …` has subcommands with a --vm of their own).
  .enablePositionalOptions();
registerDemo(program);
registerDev(program);
registerWorker(program);
registerVm(program);
registerSnapshot(program);
registerMerge(program);
registerStatus(program);
registerCancel(program);
registerChain(program);
registerAudit(program);
registerReconcile(program);
registerBackup(program);
registerRestore(program);
registerDeployment(program);

program.parseAsync(process.argv).then(
  () => process.exit(process.exitCode ?? 0),
  (err: unknown) => {
    if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? 0 : EXIT_USAGE);
    const usage = ['InvalidIdError', 'ConfigError']; // by name: main.ts imports no implementation
    if (err instanceof UsageError || (err instanceof Error && usage.includes(err.name))) {
      process.stderr.write(`livemerge: ${err.message}\n`);
      process.exit(EXIT_USAGE);
    }
    if (err instanceof OperationFailed) {
      process.stderr.write(`livemerge: ${err.message}\n`);
      process.exit(EXIT_FAILED);
    }
    process.stderr.write(`livemerge: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(EXIT_FAILED);
  },
);
