// src/config.ts: the Temporal connection from TEMPORAL_TLS_* and TEMPORAL_API_KEY (one set of options for
// every client), and LIVEMERGE_DEPLOYMENT / LIVEMERGE_BUILD_ID (a worker versioned with both, unversioned with
// neither).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  ConfigError,
  loadConfig,
  temporalConnectionOptions,
  workerDeploymentVersion,
} from '../../src/config';
import { deploymentOptions } from '../../src/workers/versioning';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lm-tls-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
const file = (name: string, text: string) => {
  const p = path.join(dir, name);
  fs.writeFileSync(p, text);
  return p;
};

describe('Temporal connection options from the environment', () => {
  it('is plaintext without any TLS variable', () => {
    const c = loadConfig({ TEMPORAL_ADDRESS: 'h:1' });
    expect(c.temporalTls).toBeUndefined();
    expect(temporalConnectionOptions(c)).toEqual({ address: 'h:1' });
  });

  it('reads the certificate, key and CA files, the server name and the API key', () => {
    const c = loadConfig({
      TEMPORAL_ADDRESS: 'h:1',
      TEMPORAL_TLS_CERT: file('c.pem', 'CERT'),
      TEMPORAL_TLS_KEY: file('c.key', 'KEY'),
      TEMPORAL_TLS_CA: file('ca.pem', 'CA'),
      TEMPORAL_TLS_SERVER_NAME: 'temporal',
      TEMPORAL_API_KEY: 'k',
    });
    const o = temporalConnectionOptions(c);
    expect(o.tls?.serverNameOverride).toBe('temporal');
    expect(o.tls?.serverRootCACertificate?.toString()).toBe('CA');
    expect(o.tls?.clientCertPair?.crt.toString()).toBe('CERT');
    expect(o.tls?.clientCertPair?.key.toString()).toBe('KEY');
    expect(o.apiKey).toBe('k');
  });

  it('turns TLS on with TEMPORAL_TLS=true alone (the system roots)', () => {
    expect(temporalConnectionOptions(loadConfig({ TEMPORAL_TLS: 'true' })).tls).toEqual({});
  });

  it('refuses a certificate without its key, and names a file it cannot read', () => {
    expect(() => loadConfig({ TEMPORAL_TLS_CERT: file('only.pem', 'CERT') })).toThrow(/go together/);
    const c = loadConfig({ TEMPORAL_TLS_CA: path.join(dir, 'missing.pem') });
    expect(() => temporalConnectionOptions(c)).toThrow(/TEMPORAL_TLS_CA .*missing\.pem/);
  });
});

describe('worker deployment configuration', () => {
  it('is unversioned without either variable', () => {
    const config = loadConfig({});
    expect(workerDeploymentVersion(config)).toBeUndefined();
    expect(deploymentOptions(undefined)).toEqual({});
  });

  it('is one PINNED deployment version with both', () => {
    const v = workerDeploymentVersion(
      loadConfig({ LIVEMERGE_DEPLOYMENT: 'livemerge', LIVEMERGE_BUILD_ID: ' 0.2.0-abc ' }),
    );
    expect(v).toEqual({ deploymentName: 'livemerge', buildId: '0.2.0-abc' });
    expect(deploymentOptions(v)).toEqual({
      workerDeploymentOptions: {
        useWorkerVersioning: true,
        version: { deploymentName: 'livemerge', buildId: '0.2.0-abc' },
        defaultVersioningBehavior: 'PINNED',
      },
    });
  });

  it('refuses one without the other, and a deployment name with a dot', () => {
    for (const env of [{ LIVEMERGE_DEPLOYMENT: 'livemerge' }, { LIVEMERGE_BUILD_ID: 'b1' }])
      expect(() => workerDeploymentVersion(loadConfig(env))).toThrow(ConfigError);
    // The CLI's `deployment` commands need only the name.
    expect(loadConfig({ LIVEMERGE_DEPLOYMENT: 'livemerge' }).deploymentName).toBe('livemerge');
    expect(() => loadConfig({ LIVEMERGE_DEPLOYMENT: 'a.b' })).toThrow(ConfigError);
  });
});
