// Configuration by environment, with the documented defaults (README "Configuration").
import os from 'node:os';
import path from 'node:path';

export interface Config {
  temporalAddress: string;
  temporalNamespace: string;
  dataDir: string;
  storageRoot: string;
  libvirtUri: string;
  hostId: string;
  /** Hosts the engine may find a VM on (LIVEMERGE_HOSTS, comma separated). */
  hosts: string[];
  /** Seconds finding a VM waits for hosts that do not answer (LIVEMERGE_LOCATE_TIMEOUT, default 300). */
  locateTimeoutSeconds: number;
  temporalUiUrl: string;
  auditLogFile: string;
}

export const REPO_ROOT = path.resolve(__dirname, '..');

export function defaultHostId(): string {
  return (
    os
      .hostname()
      .replace(/[^A-Za-z0-9_.-]/g, '-')
      .slice(0, 63) || 'local'
  );
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const dataDir = path.resolve(env.LIVEMERGE_DATA_DIR ?? path.join(REPO_ROOT, '.data'));
  const hostId = env.LIVEMERGE_HOST_ID ?? defaultHostId();
  return {
    temporalAddress: env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233',
    temporalNamespace: env.TEMPORAL_NAMESPACE ?? 'default',
    dataDir,
    storageRoot: path.resolve(env.LIVEMERGE_STORAGE_ROOT ?? path.join(dataDir, 'storage')),
    libvirtUri: env.LIBVIRT_DEFAULT_URI ?? 'qemu:///system',
    hostId,
    hosts: (env.LIVEMERGE_HOSTS ?? hostId)
      .split(',')
      .map((h) => h.trim())
      .filter(Boolean),
    locateTimeoutSeconds: positiveNumber('LIVEMERGE_LOCATE_TIMEOUT', env.LIVEMERGE_LOCATE_TIMEOUT, 300),
    temporalUiUrl: env.LIVEMERGE_UI_URL ?? 'http://localhost:8233',
    auditLogFile: path.resolve(env.LIVEMERGE_AUDIT_LOG ?? path.join(dataDir, 'audit.jsonl')),
  };
}

function positiveNumber(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined || value === '') return fallback;
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0)
    throw new Error(`${name} must be a positive number of seconds, not ${value}`);
  return n;
}
