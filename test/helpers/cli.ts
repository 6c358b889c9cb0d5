// The `livemerge` CLI as a user runs it from tests: a separate process (node bin/livemerge.cjs) against the
// file's stack (its Temporal namespace, workers and storage domain).
import { execFile } from 'node:child_process';
import path from 'node:path';
import { expect, inject } from 'vitest';
import type { Stack } from './stack';
import { NAMESPACE } from './temporal';

export const BIN = path.resolve(__dirname, '../../bin/livemerge.cjs');
export const UI = 'http://ui.livemerge.test';
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
export const anyUuid = () => expect.stringMatching(UUID_RE) as unknown;

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** The environment the CLI reads its configuration from: this stack's. */
export function cliEnv(s: Stack): NodeJS.ProcessEnv {
  return {
    ...process.env,
    TEMPORAL_ADDRESS: inject('temporalAddress'),
    TEMPORAL_NAMESPACE: NAMESPACE,
    LIVEMERGE_HOST_ID: s.hostId,
    LIVEMERGE_HOSTS: s.hostId,
    LIVEMERGE_STORAGE_ROOT: s.storageRoot,
    LIVEMERGE_AUDIT_LOG: s.auditLog.file,
    LIVEMERGE_DATA_DIR: path.dirname(s.storageRoot),
    LIVEMERGE_UI_URL: UI,
  };
}

/** Runs the CLI asynchronously (this process's workers must keep running meanwhile). */
export function cli(s: Stack, args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      { env: cliEnv(s), maxBuffer: 16 << 20 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

/** Runs with --json, expects exit 0 and exactly one JSON document on stdout. */
export async function cliJson<T>(s: Stack, args: string[]): Promise<{ out: T; stderr: string }> {
  const r = await cli(s, [...args, '--json']);
  if (r.code !== 0) throw new Error(`livemerge ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return { out: JSON.parse(r.stdout) as T, stderr: r.stderr };
}
