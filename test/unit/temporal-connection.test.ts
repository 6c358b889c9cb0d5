// The TEMPORAL_TLS_* and TEMPORAL_API_KEY variables become one set of connection options for every client.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig, temporalConnectionOptions } from '../../src/config';

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
