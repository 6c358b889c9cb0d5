// Per-test-file access to the run's Temporal dev server, and workers that stop when the file ends.
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import type { Worker } from '@temporalio/worker';
import { DefaultLogger, NativeConnection, Runtime, bundleWorkflowCode } from '@temporalio/worker';
import { afterAll, inject } from 'vitest';

import type { TemporalTls } from '../../src/config';
import { temporalConnectionOptions } from '../../src/config';
import { workflowBundleOptions } from '../../src/workers/workflow-bundle';
import { poolNamespace } from './namespaces';

export const NAMESPACE = poolNamespace();

export interface TemporalHarness {
  address: string;
  client: Client;
  connection: Connection;
  nativeConnection: NativeConnection;
}

let harness: Promise<TemporalHarness> | undefined;

// Hooks registered inside a test body never run: these file-level ones are registered when a test file
// imports this module (during collection) and release whatever the file's tests started, last first.
const closers: Array<() => Promise<void>> = [];
afterAll(async () => {
  const errors: unknown[] = [];
  for (const close of closers.splice(0).reverse()) await close().catch((e: unknown) => errors.push(e));
  if (errors.length > 0) throw new AggregateError(errors, 'cleanup at the end of the test file failed');
});

/** Runs `fn` when the test file ends (pass or fail), after everything registered later. */
export function atFileEnd(fn: () => Promise<void>): void {
  closers.push(fn);
}

// Worker state changes and expected workflow failures (logged as warnings) would drown the report.
Runtime.install({ logger: new DefaultLogger('ERROR') });

export function temporal(): Promise<TemporalHarness> {
  harness ??= (async () => {
    const address = inject('temporalAddress');
    const options = temporalConnectionOptions({
      temporalAddress: address,
      temporalTls: inject('temporalTls'),
      temporalApiKey: undefined,
    });
    const connection = await Connection.connect(options);
    const nativeConnection = await NativeConnection.connect(options);
    closers.push(async () => {
      await nativeConnection.close();
      await connection.close();
    });
    return {
      address,
      connection,
      nativeConnection,
      client: new Client({ connection, namespace: NAMESPACE }),
    };
  })();
  return harness;
}

/** The run's server for a child process (a worker, the CLI): its address and, on the cluster, mTLS files. */
export function temporalEnv(): Record<string, string> {
  const tls: TemporalTls | undefined = inject('temporalTls');
  return {
    TEMPORAL_ADDRESS: inject('temporalAddress'),
    ...(tls?.certFile ? { TEMPORAL_TLS_CERT: tls.certFile } : {}),
    ...(tls?.keyFile ? { TEMPORAL_TLS_KEY: tls.keyFile } : {}),
    ...(tls?.caFile ? { TEMPORAL_TLS_CA: tls.caFile } : {}),
    ...(tls?.serverName ? { TEMPORAL_TLS_SERVER_NAME: tls.serverName } : {}),
  };
}

let bundle: ReturnType<typeof bundleWorkflowCode> | undefined;
/** The workflow bundle is built once per test file (webpack takes seconds). */
export function workflowBundle(): ReturnType<typeof bundleWorkflowCode> {
  bundle ??= bundleWorkflowCode(workflowBundleOptions(path.resolve(__dirname, '../../src/workflows'), '.ts'));
  return bundle;
}

/** Runs workers in the background until the test file ends (or `stop()` is called). */
export function runWorkers(workers: Worker[]): { stop: () => Promise<void> } {
  const runs = workers.map((w) => w.run());
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    for (const w of workers) if (w.getState() === 'RUNNING') w.shutdown();
    await Promise.all(runs);
  };
  atFileEnd(stop);
  return { stop };
}

export function uniqueId(prefix: string): string {
  return `${prefix}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
}
