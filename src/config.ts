// Configuration by environment, with the documented defaults (README "Configuration").
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export interface Config {
  temporalAddress: string;
  temporalNamespace: string;
  /** mTLS to the frontend (TEMPORAL_TLS_CERT/KEY/CA/SERVER_NAME, or TEMPORAL_TLS=true); undefined: plaintext. */
  temporalTls: TemporalTls | undefined;
  /** Sent as a bearer token with every call (TEMPORAL_API_KEY). */
  temporalApiKey: string | undefined;
  dataDir: string;
  storageRoot: string;
  libvirtUri: string;
  hostId: string;
  /** Hosts the engine may find a VM on (LIVEMERGE_HOSTS, comma separated; default the keys of hostUris). */
  hosts: string[];
  /**
   * Every host's libvirt URI, for the checks that speak of "any domain on any host" (LIVEMERGE_HOST_URIS,
   * `id=uri` entries separated by commas; default this host only). This host's own entry is libvirtUri.
   */
  hostUris: Record<string, string>;
  /** Seconds finding a VM waits for hosts that do not answer (LIVEMERGE_LOCATE_TIMEOUT, default 300). */
  locateTimeoutSeconds: number;
  temporalUiUrl: string;
  auditLogFile: string;
  /** The Worker Deployment of this build (LIVEMERGE_DEPLOYMENT; docs/upgrades.md); the CLI's default. */
  deploymentName: string | undefined;
  /** This build's id in the deployment (LIVEMERGE_BUILD_ID); a worker needs both or neither. */
  buildId: string | undefined;
}

/** A Worker Deployment version: the deployment's name and one build of it. */
export interface DeploymentVersion {
  deploymentName: string;
  buildId: string;
}

/** A configuration value that cannot be used; the worker or CLI refuses to start. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

/** Paths of PEM files; each one optional (a server CA of the system's store, no client certificate). */
export interface TemporalTls {
  certFile?: string;
  keyFile?: string;
  caFile?: string;
  serverName?: string;
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
  const libvirtUri = env.LIBVIRT_DEFAULT_URI ?? 'qemu:///system';
  const hostUris = { ...parseHostUris(env.LIVEMERGE_HOST_URIS ?? ''), [hostId]: libvirtUri };
  return {
    temporalAddress: env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233',
    temporalNamespace: env.TEMPORAL_NAMESPACE ?? 'default',
    temporalTls: temporalTls(env),
    temporalApiKey: env.TEMPORAL_API_KEY || undefined,
    dataDir,
    storageRoot: path.resolve(env.LIVEMERGE_STORAGE_ROOT ?? path.join(dataDir, 'storage')),
    libvirtUri,
    hostId,
    hosts: env.LIVEMERGE_HOSTS
      ? env.LIVEMERGE_HOSTS.split(',')
          .map((h) => h.trim())
          .filter(Boolean)
      : env.LIVEMERGE_HOST_URIS
        ? Object.keys(hostUris)
        : [hostId],
    hostUris,
    locateTimeoutSeconds: positiveNumber('LIVEMERGE_LOCATE_TIMEOUT', env.LIVEMERGE_LOCATE_TIMEOUT, 300),
    temporalUiUrl: env.LIVEMERGE_UI_URL ?? 'http://localhost:8233',
    auditLogFile: path.resolve(env.LIVEMERGE_AUDIT_LOG ?? path.join(dataDir, 'audit.jsonl')),
    deploymentName: deploymentName(env.LIVEMERGE_DEPLOYMENT),
    buildId: env.LIVEMERGE_BUILD_ID?.trim() || undefined,
  };
}

function deploymentName(value: string | undefined): string | undefined {
  const name = value?.trim() ?? '';
  if (name === '') return undefined;
  // The server names a version `<deployment>.<build id>` (the SDK's toCanonicalString).
  if (name.includes('.'))
    throw new ConfigError(`LIVEMERGE_DEPLOYMENT ${JSON.stringify(name)} must not contain '.'`);
  return name;
}

/**
 * A worker's deployment version, or undefined (unversioned). LIVEMERGE_DEPLOYMENT and LIVEMERGE_BUILD_ID
 * go together: one without the other would silently run an unversioned worker next to versioned ones.
 */
export function workerDeploymentVersion(
  config: Pick<Config, 'deploymentName' | 'buildId'>,
): DeploymentVersion | undefined {
  const { deploymentName, buildId } = config;
  if (deploymentName === undefined && buildId === undefined) return undefined;
  if (deploymentName === undefined || buildId === undefined)
    throw new ConfigError(
      'LIVEMERGE_DEPLOYMENT and LIVEMERGE_BUILD_ID go together: set both (a versioned worker) or neither',
    );
  return { deploymentName, buildId };
}

function temporalTls(env: NodeJS.ProcessEnv): TemporalTls | undefined {
  const tls: TemporalTls = {};
  if (env.TEMPORAL_TLS_CERT) tls.certFile = path.resolve(env.TEMPORAL_TLS_CERT);
  if (env.TEMPORAL_TLS_KEY) tls.keyFile = path.resolve(env.TEMPORAL_TLS_KEY);
  if (env.TEMPORAL_TLS_CA) tls.caFile = path.resolve(env.TEMPORAL_TLS_CA);
  if (env.TEMPORAL_TLS_SERVER_NAME) tls.serverName = env.TEMPORAL_TLS_SERVER_NAME;
  if (!tls.certFile !== !tls.keyFile)
    throw new Error('TEMPORAL_TLS_CERT and TEMPORAL_TLS_KEY go together: a client certificate needs its key');
  const on = Object.keys(tls).length > 0 || env.TEMPORAL_TLS === 'true';
  return on ? tls : undefined;
}

/** What Connection.connect and NativeConnection.connect take: one reading of the TLS files for both. */
export interface TemporalConnectionOptions {
  address: string;
  tls?: {
    serverNameOverride?: string;
    serverRootCACertificate?: Buffer;
    clientCertPair?: { crt: Buffer; key: Buffer };
  };
  apiKey?: string;
}

export function temporalConnectionOptions(
  config: Pick<Config, 'temporalAddress' | 'temporalTls' | 'temporalApiKey'>,
): TemporalConnectionOptions {
  const opts: TemporalConnectionOptions = { address: config.temporalAddress };
  const t = config.temporalTls;
  if (t) {
    const read = (name: string, file: string) => {
      try {
        return fs.readFileSync(file);
      } catch (err) {
        throw new Error(`${name} ${file}: ${err instanceof Error ? err.message : String(err)}`);
      }
    };
    opts.tls = {};
    if (t.serverName) opts.tls.serverNameOverride = t.serverName;
    if (t.caFile) opts.tls.serverRootCACertificate = read('TEMPORAL_TLS_CA', t.caFile);
    if (t.certFile && t.keyFile)
      opts.tls.clientCertPair = {
        crt: read('TEMPORAL_TLS_CERT', t.certFile),
        key: read('TEMPORAL_TLS_KEY', t.keyFile),
      };
  }
  if (config.temporalApiKey) opts.apiKey = config.temporalApiKey;
  return opts;
}

/** `id=uri,id=uri`: each entry split at its first '=' (URIs carry '=' in their query). */
export function parseHostUris(value: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const entry of value.split(',').map((e) => e.trim())) {
    if (entry === '') continue;
    const eq = entry.indexOf('=');
    if (eq <= 0 || eq === entry.length - 1)
      throw new Error(`LIVEMERGE_HOST_URIS: entry ${JSON.stringify(entry)} is not id=uri`);
    out[entry.slice(0, eq).trim()] = entry.slice(eq + 1).trim();
  }
  return out;
}

/** The inverse of parseHostUris; an id may hold no '=' or ',', a URI no ','. */
export function formatHostUris(uris: Record<string, string>): string {
  return Object.entries(uris)
    .map(([id, uri]) => {
      if (id.includes('=') || id.includes(',') || uri.includes(','))
        throw new Error(`host ${id} (${uri}): neither id nor URI may contain ','; an id no '='`);
      return `${id}=${uri}`;
    })
    .join(',');
}

function positiveNumber(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined || value === '') return fallback;
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0)
    throw new Error(`${name} must be a positive number of seconds, not ${value}`);
  return n;
}
