// `livemerge deployment …`: the operator's steps of an upgrade with Worker Deployments (docs/upgrades.md).
import type { Command } from 'commander';
import { loadConfig } from '../config';
import { UsageError, printJson } from './output';

function deploymentArg(option: string | undefined, fallback: string | undefined): string {
  const name = option ?? fallback;
  if (!name) throw new UsageError('--deployment is required (or set LIVEMERGE_DEPLOYMENT)');
  return name;
}

export function registerDeployment(program: Command): void {
  const dep = program
    .command('deployment')
    .description('Worker Deployments: which build new merges start on (docs/upgrades.md)');
  dep
    .command('describe')
    .description("the deployment's current and ramping builds, and each build's status and drainage")
    .option('--deployment <name>', 'deployment name (default $LIVEMERGE_DEPLOYMENT)')
    .option('--json', 'machine-readable output')
    .action(async (opts: { deployment?: string; json?: boolean }) => {
      const config = loadConfig();
      const name = deploymentArg(opts.deployment, config.deploymentName);
      const { describeDeployment, formatDeployment } = await import('./deployment-ops');
      const out = await describeDeployment(config, name);
      if (opts.json) return printJson(out);
      process.stdout.write(formatDeployment(out));
    });
  dep
    .command('set-current')
    .description(
      'make a build the current version: new merges start on it, running ones stay on their build ' +
        '(waits until the routing change reached every task queue)',
    )
    .option('--build-id <id>', "the build's LIVEMERGE_BUILD_ID")
    .option('--unversioned', 'route new workflows to unversioned workers again (leaving versioning)')
    .option('--deployment <name>', 'deployment name (default $LIVEMERGE_DEPLOYMENT)')
    .option(
      '--ignore-missing-task-queues',
      'allow it although the build does not poll every task queue the current one polls (a removed host)',
    )
    .option('--allow-no-pollers', 'allow it although no worker of the target has polled yet')
    .option('--json', 'machine-readable output')
    .action(
      async (opts: {
        buildId?: string;
        unversioned?: boolean;
        deployment?: string;
        ignoreMissingTaskQueues?: boolean;
        allowNoPollers?: boolean;
        json?: boolean;
      }) => {
        const config = loadConfig();
        const name = deploymentArg(opts.deployment, config.deploymentName);
        const buildId = opts.buildId?.trim() ?? '';
        if ((buildId === '') === (opts.unversioned !== true))
          throw new UsageError('give either --build-id ID (not empty) or --unversioned');
        const { setCurrentVersion } = await import('./deployment-ops');
        const out = await setCurrentVersion(config, {
          deploymentName: name,
          buildId, // '': the unversioned workers (the API's nil version)
          ignoreMissingTaskQueues: opts.ignoreMissingTaskQueues === true,
          allowNoPollers: opts.allowNoPollers === true,
        });
        if (opts.json) return printJson(out);
        process.stdout.write(
          `deployment ${name}: current build ${out.current ?? '(none: unversioned workers)'}` +
            ` (was ${out.previous ?? 'unversioned'})\n`,
        );
      },
    );
}
