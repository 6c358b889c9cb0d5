// docker-compose.yml's Temporal server config (deploy/temporal/config) read by the very server binary this
// stage runs (scripts/temporal-cluster.sh build): its template renders and loads with the compose network's
// values, and its dynamic config has only keys and types the server knows. test/unit/compose.test.ts checks
// that it carries the script's settings.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { REPO_ROOT } from '../../src/config';

const SCRIPT = fs.readFileSync(path.join(REPO_ROOT, 'scripts', 'temporal-cluster.sh'), 'utf8');
const VERSION = /^V=(\S+)$/m.exec(SCRIPT)?.[1];
const SERVER = path.join(
  process.env.LIVEMERGE_CLUSTER_CACHE ?? `/var/cache/livemerge/temporal-${VERSION}`,
  'go',
  'bin',
  'server',
);
const DEPLOY = path.join(REPO_ROOT, 'deploy', 'temporal');

describe("the compose file's Temporal config, read by the cluster's own server binary", () => {
  it('renders and loads with the values compose gives it', () => {
    const out = execFileSync(
      SERVER,
      ['--root', DEPLOY, '--config', 'config', '--env', 'production', 'render-config'],
      {
        // The config dir is read relative to the working directory, as in the image (WORKDIR /etc/temporal).
        cwd: DEPLOY,
        encoding: 'utf8',
        env: {
          PATH: process.env.PATH ?? '',
          POSTGRES_USER: 'temporal',
          POSTGRES_PWD: 'secret',
          TEMPORAL_BROADCAST_ADDRESS: '172.18.0.3',
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    const cfg = parse(out) as {
      global: {
        membership: { broadcastAddress: string };
        tls: { frontend: { server: { requireClientAuth: boolean } } };
      };
      persistence: {
        datastores: Record<string, { sql: { user: string; connectAddr: string; databaseName: string } }>;
      };
      services: Record<string, { rpc: { grpcPort: number; bindOnIP: string } }>;
    };
    expect(cfg.global.membership.broadcastAddress).toBe('172.18.0.3');
    expect(cfg.global.tls.frontend.server.requireClientAuth).toBe(true);
    expect(cfg.persistence.datastores.default?.sql).toMatchObject({
      user: 'temporal',
      connectAddr: 'postgresql:5432',
      databaseName: 'temporal',
    });
    expect(cfg.persistence.datastores.visibility?.sql).toMatchObject({ databaseName: 'temporal_visibility' });
    expect(cfg.services.frontend?.rpc).toMatchObject({ grpcPort: 7233, bindOnIP: '0.0.0.0' });
  });

  it('has a dynamic config of known keys and types only', () => {
    const file = path.join(DEPLOY, 'config', 'dynamicconfig', 'production.yaml');
    const out = execFileSync(SERVER, ['validate-dynamic-config', file], { encoding: 'utf8' });
    expect(out.trim()).toBe(file);
    // The check can fail: a key it does not know and a value of the wrong type are reported.
    const bad = path.join(fs.mkdtempSync('/tmp/lm-dc-'), 'bad.yaml');
    fs.writeFileSync(bad, 'no.such.key:\n  - value: true\nlimit.maxIDLength:\n  - value: "x"\n');
    const warned = execFileSync(SERVER, ['validate-dynamic-config', bad], { encoding: 'utf8' });
    expect(warned).toMatch(/unregistered key "no.such.key"/);
    expect(warned).toMatch(/validation failed: key "limit.maxidlength"/);
    fs.rmSync(path.dirname(bad), { recursive: true });
  });
});
