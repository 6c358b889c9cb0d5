// Once per production-shaped run (vitest.production.config.mts): libvirtd running, and a real Temporal
// cluster (scripts/temporal-cluster.sh: the pinned server on PostgreSQL, mTLS) with the pool namespaces.
// The tests reach it through the same inject() names as the dev-server stage, plus its client TLS files.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import type { TemporalTls } from '../../src/config';
import { REPO_ROOT } from '../../src/config';
import { temporalCliPath } from '../../src/devstack/temporal-server';
import { POOL_NAMESPACES } from '../helpers/namespaces';

const SCRIPT = path.join(REPO_ROOT, 'scripts', 'temporal-cluster.sh');

export function clusterCommand(args: string[], port?: string): string {
  return execFileSync('bash', [SCRIPT, ...args], {
    env: {
      ...process.env,
      TEMPORAL_CLI: temporalCliPath(),
      ...(port ? { LIVEMERGE_CLUSTER_PORT: port } : {}),
    },
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
}

/** Frontend ports whose port sets (each Temporal default + the same offset) do not overlap. */
const PORTS = [17233, 27233, 32233];

/** The first frontend port nobody listens on (another run of this stage on the machine may hold one). */
function freeClusterPort(): string {
  for (const port of PORTS) {
    const taken = execFileSync('ss', ['-Htln', `sport = :${port}`], { encoding: 'utf8' }).trim();
    if (taken === '') return String(port);
  }
  throw new Error(`the cluster ports ${PORTS.join(', ')} are all taken`);
}

export default function setup(project: TestProject): () => void {
  execFileSync('bash', ['scripts/ensure-libvirtd.sh'], { stdio: 'inherit' });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lm-cluster-'));
  fs.chmodSync(dir, 0o755);
  let env: Record<string, string>;
  try {
    env = Object.fromEntries(
      clusterCommand(['up', dir, ...POOL_NAMESPACES], process.env.LIVEMERGE_CLUSTER_PORT ?? freeClusterPort())
        .trim()
        .split('\n')
        .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]),
    );
  } catch (err) {
    clusterCommand(['down', dir]);
    throw err;
  }
  const tls: TemporalTls = {
    certFile: must(env, 'TEMPORAL_TLS_CERT'),
    keyFile: must(env, 'TEMPORAL_TLS_KEY'),
    caFile: must(env, 'TEMPORAL_TLS_CA'),
    serverName: must(env, 'TEMPORAL_TLS_SERVER_NAME'),
  };
  project.provide('temporalAddress', must(env, 'TEMPORAL_ADDRESS'));
  project.provide('temporalTls', tls);
  project.provide('clusterDir', dir);
  return () => {
    clusterCommand(['down', dir]);
  };
}

function must(env: Record<string, string>, name: string): string {
  const v = env[name];
  if (!v) throw new Error(`scripts/temporal-cluster.sh up printed no ${name}`);
  return v;
}
