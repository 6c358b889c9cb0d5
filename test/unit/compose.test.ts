// docker-compose.yml (issue #11, item 6) against the Compose specification's own JSON Schema (vendored from
// compose-go, test/fixtures/compose-spec/README.md), after Compose's variable interpolation, as `docker
// compose config` would check it; there is no Docker engine here. Broken copies must fail, so the check can.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import Ajv2020 from 'ajv/dist/2020';
import type { ErrorObject } from 'ajv/dist/2020';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { REPO_ROOT } from '../../src/config';

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
