// Once per test run: libvirtd running, and a real Temporal dev server (the CLI installed by set-up)
// with livemerge's search attributes. Torn down at the end of the run.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { defineSearchAttributeKey } from '@temporalio/common';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import type { TestProject } from 'vitest/node';
import type { TemporalTls } from '../../src/config';
import { SEARCH_ATTRIBUTES } from '../../src/common/search-attributes';
import { temporalCliPath } from '../../src/devstack/temporal-server';
import { POOL_NAMESPACES } from './namespaces';

declare module 'vitest' {
  export interface ProvidedContext {
    temporalAddress: string;
    /** Set by the production-shaped stage (test/production): the cluster's mTLS client files. */
    temporalTls: TemporalTls | undefined;
    /** The production-shaped stage's cluster directory (scripts/temporal-cluster.sh), for kill/start. */
    clusterDir: string | undefined;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  execFileSync('bash', ['scripts/ensure-libvirtd.sh'], { stdio: 'inherit' });
  const cli = temporalCliPath();
  if (!fs.existsSync(cli)) throw new Error(`${cli} is missing: run 'bash scripts/setup.sh' first`);
  const env = await TestWorkflowEnvironment.createLocal({
    server: {
      executable: { type: 'existing-path', path: cli },
      searchAttributes: SEARCH_ATTRIBUTES.map((name) => defineSearchAttributeKey(name, 'KEYWORD')),
      // One namespace per vitest fork: livemerge's task queue names are fixed, so test files running at
      // the same time must not share a namespace (their workers would take each other's tasks).
      extraArgs: ['--log-level', 'error', ...POOL_NAMESPACES.flatMap((ns) => ['--namespace', ns])],
    },
  });
  project.provide('temporalAddress', env.address);
  project.provide('temporalTls', undefined);
  project.provide('clusterDir', undefined);
  return async () => {
    await env.teardown();
  };
}
