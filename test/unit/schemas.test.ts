// The workflow API's schemas and their generated reference (docs/api.md): the docs are up to date, the JSON
// Schemas they show say what the zod schemas enforce, and every documented example is a valid request.
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, expectTypeOf, it } from 'vitest';
import type { z } from 'zod';
import type { WorkflowType } from '../../scripts/gen-api-docs';
import {
  DOCS_FILE,
  WORKFLOWS,
  WORKFLOW_TYPES,
  WorkflowInputs,
  exampleIds,
  extractExample,
  flag,
  generateApiDocs,
  inputJsonSchema,
  progressJsonSchema,
  resultJsonSchema,
  shellWords,
  substitute,
} from '../../scripts/gen-api-docs';
import { ENGINE_TASK_QUEUE } from '../../src/common/task-queues';
import { REPO_ROOT } from '../../src/config';
import { SEARCH_ATTRIBUTES } from '../../src/common/search-attributes';
import { FailureType } from '../../src/schemas/progress';
import { ProgressAnswers, WorkflowResults } from '../../src/schemas/results';
import type * as results from '../../src/schemas/results';
import type { CreateSnapshotResult } from '../../src/workflows/create-snapshot';
import type { MergeDiskResult } from '../../src/workflows/merge-disk';
import type { ReconcileResult } from '../../src/workflows/reconcile';
import type { RemoveSnapshotResult } from '../../src/workflows/remove-snapshot';

const UUID_PATTERN = '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$';
const A = '0d5f6c1e-8a43-4b7e-9c21-5e7f3a9b2d10';
const B = '5a9e2c47-13b8-4f0d-a6e2-9b1c7d3f8e24';
const C = 'c3b1a2d4-7e6f-4a58-b9c0-1d2e3f4a5b6c';
const D = '8e7d6c5b-4a39-4281-9f0e-d1c2b3a4f596';
const E = 'f1e2d3c4-b5a6-4978-8a9b-0c1d2e3f4a5b';

// ---------------------------------------------------------------------------------------------------------
// A minimal JSON Schema (2020-12) validator for exactly the keywords the generated schemas use; an unknown
// keyword fails the test instead of being ignored, so a constraint can never go unchecked.

type JsonSchema = Record<string, unknown>;
const KEYWORDS = new Set([
  '$schema',
  'type',
  'properties',
  'required',
  'additionalProperties',
  'pattern',
  'enum',
  'items',
  'anyOf',
  'default',
  'description',
  'minimum',
  'maximum',
  'exclusiveMinimum',
  'exclusiveMaximum',
  'minLength',
  'maxLength',
]);

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function hasType(type: unknown, v: unknown): boolean {
  switch (type) {
    case 'string':
      return typeof v === 'string';
    case 'number':
      return typeof v === 'number' && Number.isFinite(v);
    case 'integer':
      return Number.isInteger(v);
    case 'boolean':
      return typeof v === 'boolean';
    case 'null':
      return v === null;
    case 'array':
      return Array.isArray(v);
    case 'object':
      return isObject(v);
    default:
      throw new Error(`unknown JSON Schema type ${String(type)}`);
  }
}

function validate(schema: JsonSchema, v: unknown, at = '$'): string[] {
  for (const k of Object.keys(schema))
    if (!KEYWORDS.has(k)) throw new Error(`validator lacks keyword ${k} (${at})`);
  const errors: string[] = [];
  if (schema.anyOf && !(schema.anyOf as JsonSchema[]).some((s) => validate(s, v, at).length === 0))
    errors.push(`${at}: matches no anyOf branch`);
  if (schema.type !== undefined) {
    const types = Array.isArray(schema.type) ? (schema.type as unknown[]) : [schema.type];
    if (!types.some((t) => hasType(t, v))) return [...errors, `${at}: not ${types.join('|')}`];
  }
  if (schema.enum && !(schema.enum as unknown[]).includes(v)) errors.push(`${at}: not one of the enum`);
  if (typeof v === 'string') {
    if (typeof schema.pattern === 'string' && !new RegExp(schema.pattern, 'u').test(v))
      errors.push(`${at}: does not match ${schema.pattern}`);
    if (typeof schema.maxLength === 'number' && [...v].length > schema.maxLength)
      errors.push(`${at}: too long`);
    if (typeof schema.minLength === 'number' && [...v].length < schema.minLength)
      errors.push(`${at}: too short`);
  }
  if (typeof v === 'number') {
    if (typeof schema.minimum === 'number' && v < schema.minimum) errors.push(`${at}: < minimum`);
    if (typeof schema.maximum === 'number' && v > schema.maximum) errors.push(`${at}: > maximum`);
    if (typeof schema.exclusiveMinimum === 'number' && v <= schema.exclusiveMinimum)
      errors.push(`${at}: <= min`);
    if (typeof schema.exclusiveMaximum === 'number' && v >= schema.exclusiveMaximum)
      errors.push(`${at}: >= max`);
  }
  if (Array.isArray(v) && isObject(schema.items))
    v.forEach((item, i) => errors.push(...validate(schema.items as JsonSchema, item, `${at}[${i}]`)));
  if (isObject(v)) {
    const props = (schema.properties ?? {}) as Record<string, JsonSchema>;
    for (const r of (schema.required ?? []) as string[])
      if (!(r in v)) errors.push(`${at}: ${r} is required`);
    for (const [k, val] of Object.entries(v)) {
      if (props[k]) errors.push(...validate(props[k], val, `${at}.${k}`));
      else if (schema.additionalProperties === false) errors.push(`${at}: ${k} is not allowed`);
    }
  }
  return errors;
}

it('the mini validator checks what it claims to', () => {
  const schema = inputJsonSchema('removeSnapshot');
  expect(validate(schema, { vmId: A, snapshotId: B })).toEqual([]);
  expect(validate(schema, { vmId: A })).toEqual(['$: snapshotId is required']);
  expect(validate(schema, { vmId: A, snapshotId: 'x', y: 1 })).toEqual([
    `$.snapshotId: does not match ${UUID_PATTERN}`,
    '$: y is not allowed',
  ]);
  expect(() => validate({ not: {} }, 1)).toThrow(/lacks keyword not/);
});

// ---------------------------------------------------------------------------------------------------------
// Samples: each is checked with zod and with the JSON Schema of the docs; both must give the expected answer.

interface Sample {
  what: string;
  value: unknown;
  valid: boolean;
  /** A rule JSON Schema cannot express (a zod refinement): only zod refuses it. */
  zodOnly?: boolean;
}

const ok = (what: string, value: unknown): Sample => ({ what, value, valid: true });
const bad = (what: string, value: unknown, zodOnly = false): Sample => ({
  what,
  value,
  valid: false,
  zodOnly,
});

function omit<T extends object>(o: T, key: keyof T): Partial<T> {
  const copy: Partial<T> = { ...o };
  delete copy[key];
  return copy;
}

const mergeInput = { vmId: A, storageDomainId: B, imageId: C, baseVolumeId: D, topVolumeId: E };

const INPUT_SAMPLES: Record<WorkflowType, Sample[]> = {
  createSnapshot: [
    ok('only the VM', { vmId: A }),
    ok('every field', { vmId: A, snapshotId: B, description: 'before upgrade', hostId: 'kvm-host-01' }),
    bad('no vmId', { snapshotId: B }),
    bad('a non-UUID snapshot id', { vmId: A, snapshotId: 'snap-1' }),
    bad('a description over 1024 characters', { vmId: A, description: 'x'.repeat(1025) }),
    bad('an unknown field', { vmId: A, memory: true }),
  ],
  removeSnapshot: [
    ok('the minimal request', { vmId: A, snapshotId: B }),
    ok('forward, rate-limited, on a host', {
      vmId: A,
      snapshotId: B,
      direction: 'forward',
      bandwidthBytesPerSec: 1 << 20,
      hostId: 'kvm-host-01',
    }),
    bad('no snapshot id', { vmId: A }),
    bad('an upper-case UUID', { vmId: A.toUpperCase(), snapshotId: B }),
    bad('path traversal as an id', { vmId: '../../../etc', snapshotId: B }),
    bad('a UUID without dashes', { vmId: A.replace(/-/g, ''), snapshotId: B }),
    bad('an unknown direction', { vmId: A, snapshotId: B, direction: 'sideways' }),
    bad('a zero bandwidth', { vmId: A, snapshotId: B, bandwidthBytesPerSec: 0 }),
    bad('a negative bandwidth', { vmId: A, snapshotId: B, bandwidthBytesPerSec: -1 }),
    bad('a fractional bandwidth', { vmId: A, snapshotId: B, bandwidthBytesPerSec: 1.5 }),
    bad('a bandwidth as a string', { vmId: A, snapshotId: B, bandwidthBytesPerSec: '1M' }),
    bad('a host id with a slash', { vmId: A, snapshotId: B, hostId: 'a/b' }),
    bad('a host id starting with a dash', { vmId: A, snapshotId: B, hostId: '-h' }),
    bad('an unknown field', { vmId: A, snapshotId: B, force: true }),
    bad('a number as id', { vmId: A, snapshotId: 42 }),
    bad('null', null),
    bad('an array', [A, B]),
    bad('a string', `${A}:${B}`),
  ],
  mergeDisk: [
    ok('the minimal request', mergeInput),
    ok('forward with every option', {
      ...mergeInput,
      direction: 'forward',
      bandwidthBytesPerSec: 2 ** 53 - 1,
      hostId: 'h.1_x',
    }),
    bad('no top volume', omit(mergeInput, 'topVolumeId')),
    bad('an over-large bandwidth', { ...mergeInput, bandwidthBytesPerSec: 2 ** 53 }),
    bad('a 64-character host id', { ...mergeInput, hostId: 'h'.repeat(64) }),
    bad('base equal to top', { ...mergeInput, topVolumeId: D }, true),
  ],
  reconcile: [
    ok('a storage domain', { storageDomainId: C }),
    ok('with a host id', { storageDomainId: C, hostId: 'kvm-host-01' }),
    bad('nothing', {}),
    bad('an unknown field', { storageDomainId: C, dryRun: true }),
  ],
  backupVm: [
    ok('into a repository', { vmId: A, repository: '/srv/backups' }),
    ok('NBD export mode, every field', {
      vmId: A,
      backupId: B,
      mode: 'full',
      repository: null,
      quiesce: false,
      bandwidthBytesPerSec: 1 << 20,
      exportTimeoutSeconds: 600,
      hostId: 'kvm-host-01',
    }),
    bad('no repository (null is NBD mode, absent is a mistake)', { vmId: A }),
    bad('a relative repository', { vmId: A, repository: 'backups' }),
    bad('an unknown mode', { vmId: A, repository: '/b', mode: 'differential' }),
    bad('an unknown field', { vmId: A, repository: '/b', compress: true }),
  ],
  restoreBackup: [
    ok('a restore', { vmId: A, backupId: B, repository: '/srv/backups', targetDir: '/srv/restore' }),
    bad('no target', { vmId: A, backupId: B, repository: '/srv/backups' }),
    bad('a relative target', { vmId: A, backupId: B, repository: '/srv/backups', targetDir: 'r' }),
  ],
  pruneBackups: [
    ok('keep one', { vmId: A, repository: '/srv/backups', keep: 1 }),
    bad('keep none', { vmId: A, repository: '/srv/backups', keep: 0 }),
    bad('keep as a string', { vmId: A, repository: '/srv/backups', keep: '3' }),
  ],
};

const progress = {
  stage: 'copying',
  mode: 'live',
  hostId: 'kvm-host-01',
  cur: 1 << 20,
  end: 64 << 20,
  bytesPerSecond: 4 << 20,
  etaSeconds: 15,
  removedVolumeIds: [],
};
const initial = {
  stage: 'validating',
  mode: null,
  hostId: null,
  cur: 0,
  end: 0,
  bytesPerSecond: null,
  etaSeconds: null,
  removedVolumeIds: [],
};
const progressSamples = [
  ok('the initial progress', initial),
  ok('a copying merge', progress),
  bad('an unknown stage', { ...progress, stage: 'merging' }),
  bad('an unknown mode', { ...progress, mode: 'warm' }),
  bad('bytes as a string', { ...progress, cur: '1M' }),
  bad('no removedVolumeIds', omit(initial, 'removedVolumeIds')),
];
const PROGRESS_SAMPLES: Record<WorkflowType, Sample[]> = {
  createSnapshot: progressSamples,
  mergeDisk: progressSamples,
  reconcile: progressSamples,
  removeSnapshot: [
    ok('no disks yet', { ...initial, disks: [] }),
    ok('one disk copying', { ...progress, disks: [{ ...progress, imageId: D, target: 'vda' }] }),
    bad('no disks', progress),
    bad('a disk without target', { ...progress, disks: [{ ...progress, imageId: D }] }),
    bad('a disk in an unknown stage', {
      ...progress,
      disks: [{ ...progress, stage: 'x', imageId: D, target: 'vda' }],
    }),
  ],
  backupVm: [
    ok('no disks yet', { ...initial, disks: [], exports: [] }),
    ok('copying with exports', {
      ...progress,
      disks: [
        {
          target: 'vda',
          imageId: D,
          mode: 'incremental',
          changedBytes: 1 << 20,
          copiedBytes: 0,
          bytesPerSecond: null,
          etaSeconds: null,
        },
      ],
      exports: [{ target: 'vda', uri: 'nbd+unix:///vda?socket=/run/x.sock', bitmap: 'livemerge-x' }],
    }),
    bad('a disk in an unknown mode', {
      ...progress,
      exports: [],
      disks: [
        {
          target: 'vda',
          imageId: D,
          mode: 'diff',
          changedBytes: 0,
          copiedBytes: 0,
          bytesPerSecond: null,
          etaSeconds: null,
        },
      ],
    }),
  ],
  restoreBackup: progressSamples,
  pruneBackups: progressSamples,
};

const RESULT_SAMPLES: Record<WorkflowType, Sample[]> = {
  createSnapshot: [
    ok('the documented example', WORKFLOWS.createSnapshot.exampleResult),
    ok('a cold snapshot of no disk', { vmId: A, snapshotId: B, hostId: 'h', mode: 'cold', disks: [] }),
    bad('an unknown mode', { vmId: A, snapshotId: B, hostId: 'h', mode: 'warm', disks: [] }),
    bad('no disks', { vmId: A, snapshotId: B, hostId: 'h', mode: 'live' }),
    bad('a disk without its new leaf', {
      vmId: A,
      snapshotId: B,
      hostId: 'h',
      mode: 'live',
      disks: [{ target: 'vda', storageDomainId: C, imageId: D, frozenVolumeId: E }],
    }),
  ],
  removeSnapshot: [
    ok('the documented example', WORKFLOWS.removeSnapshot.exampleResult),
    ok('a failed disk', {
      vmId: A,
      snapshotId: B,
      hostId: 'h',
      removedVolumeIds: [],
      disks: [
        { target: 'vdb', imageId: D, status: 'failed', failureType: 'VmCrashed', message: 'VM stopped' },
      ],
    }),
    bad('no host', {
      vmId: A,
      snapshotId: B,
      removedVolumeIds: [],
      disks: [{ target: 'vda', imageId: D, status: 'merged' }],
    }),
    bad('an unknown disk status', {
      vmId: A,
      snapshotId: B,
      hostId: 'h',
      removedVolumeIds: [],
      disks: [{ target: 'vda', imageId: D, status: 'partial' }],
    }),
    bad('a removed volume that is no UUID', {
      vmId: A,
      snapshotId: B,
      removedVolumeIds: ['vol-1'],
      disks: [],
    }),
  ],
  mergeDisk: [
    ok('the documented example', WORKFLOWS.mergeDisk.exampleResult),
    bad('no direction', { vmId: A, imageId: D, hostId: 'h', mode: 'cold', removedVolumeIds: [E] }),
    bad('removedVolumeIds not a list', {
      vmId: A,
      imageId: D,
      hostId: 'h',
      mode: 'cold',
      direction: 'forward',
      removedVolumeIds: E,
    }),
  ],
  reconcile: [
    ok('the documented example', WORKFLOWS.reconcile.exampleResult),
    ok('a disagreeing chain', {
      storageDomainId: C,
      deleted: [],
      reports: [
        {
          storageDomainId: C,
          imageId: D,
          ok: false,
          disagreements: [{ kind: 'parent', detail: 'x', volumeId: E }],
        },
      ],
    }),
    bad('a report without ok', {
      storageDomainId: C,
      deleted: [],
      reports: [{ storageDomainId: C, imageId: D, disagreements: [] }],
    }),
    bad('a deleted volume without image', {
      storageDomainId: C,
      deleted: [{ storageDomainId: C, volumeId: E }],
      reports: [],
    }),
  ],
  backupVm: [
    ok('the documented example', WORKFLOWS.backupVm.exampleResult),
    bad('a disk in an unknown mode', {
      ...(WORKFLOWS.backupVm.exampleResult as object),
      disks: [
        {
          target: 'vda',
          imageId: D,
          mode: 'x',
          changedBytes: 0,
          copiedBytes: 0,
          extents: 0,
          file: '/f',
          capacity: 1,
        },
      ],
    }),
  ],
  restoreBackup: [
    ok('the documented example', WORKFLOWS.restoreBackup.exampleResult),
    bad('a disk without path', { vmId: A, backupId: B, disks: [{ target: 'vda', imageId: D }] }),
  ],
  pruneBackups: [
    ok('the documented example', WORKFLOWS.pruneBackups.exampleResult),
    bad('no kept list', { vmId: A, removed: [] }),
  ],
};

function checkSamples(zod: z.ZodType, json: JsonSchema, samples: Sample[]): void {
  for (const s of samples) {
    const zodErrors = zod.safeParse(s.value).error?.issues ?? [];
    expect(zodErrors.length === 0, `zod on ${s.what}: ${JSON.stringify(zodErrors)}`).toBe(s.valid);
    const jsonErrors = validate(json, s.value);
    expect(jsonErrors.length === 0, `JSON Schema on ${s.what}: ${jsonErrors.join('; ')}`).toBe(
      s.valid || !!s.zodOnly,
    );
  }
}

describe.each(WORKFLOW_TYPES)('%s schemas', (type) => {
  it('input: zod and the documented JSON Schema accept and refuse the same requests', () => {
    checkSamples(WorkflowInputs[type], inputJsonSchema(type), INPUT_SAMPLES[type]);
  });

  it('result: zod and the documented JSON Schema agree', () => {
    checkSamples(WorkflowResults[type], resultJsonSchema(type), RESULT_SAMPLES[type]);
  });

  it('progress query: zod and the documented JSON Schema agree', () => {
    checkSamples(ProgressAnswers[type], progressJsonSchema(type), PROGRESS_SAMPLES[type]);
  });

  it('the input JSON Schema requires the ids, pins their pattern and refuses unknown fields', () => {
    const schema = inputJsonSchema(type);
    const props = schema.properties as Record<string, JsonSchema>;
    const required = {
      createSnapshot: ['vmId'],
      removeSnapshot: ['vmId', 'snapshotId'],
      mergeDisk: ['vmId', 'storageDomainId', 'imageId', 'baseVolumeId', 'topVolumeId'],
      reconcile: ['storageDomainId'],
      backupVm: ['vmId', 'repository'],
      restoreBackup: ['vmId', 'backupId', 'repository', 'targetDir'],
      pruneBackups: ['vmId', 'repository', 'keep'],
    }[type];
    expect(schema.type).toBe('object');
    expect(schema.additionalProperties).toBe(false);
    expect(schema.required).toEqual(required);
    for (const [name, prop] of Object.entries(props))
      if (name.endsWith('Id') && name !== 'hostId') expect(prop.pattern, name).toBe(UUID_PATTERN);
    if (props.hostId) expect(props.hostId.pattern).toBe('^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$');
    if (props.direction)
      expect(props.direction).toMatchObject({ enum: ['backward', 'forward'], default: 'backward' });
    if (props.bandwidthBytesPerSec)
      expect(props.bandwidthBytesPerSec).toMatchObject({ type: 'integer', exclusiveMinimum: 0 });
  });

  it('the result and progress JSON Schemas require every field', () => {
    const result = resultJsonSchema(type);
    expect(result.required).toEqual(Object.keys(WorkflowResults[type].shape));
    const answer = progressJsonSchema(type);
    expect(answer.required).toEqual(Object.keys(ProgressAnswers[type].shape));
    expect((answer.properties as Record<string, JsonSchema>).stage).toMatchObject({ type: 'string' });
  });
});

it('the workflows return exactly the schemas’ types', () => {
  expectTypeOf<CreateSnapshotResult>().toEqualTypeOf<results.CreateSnapshotResult>();
  expectTypeOf<RemoveSnapshotResult>().toEqualTypeOf<results.RemoveSnapshotResult>();
  expectTypeOf<MergeDiskResult>().toEqualTypeOf<results.MergeDiskResult>();
  expectTypeOf<ReconcileResult>().toEqualTypeOf<results.ReconcileResult>();
});

// ---------------------------------------------------------------------------------------------------------
// docs/api.md

function runGenerator(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const tsx = path.join(REPO_ROOT, 'node_modules', '.bin', 'tsx');
  return new Promise((resolve) => {
    execFile(
      tsx,
      ['scripts/gen-api-docs.ts', ...args],
      { cwd: REPO_ROOT, timeout: 60_000 },
      (err, stdout, stderr) =>
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }),
    );
  });
}

/** The first JSON block after a heading of the docs. */
function jsonAfter(markdown: string, heading: string): unknown {
  const at = markdown.indexOf(`\n${heading}\n`);
  expect(at, heading).toBeGreaterThanOrEqual(0);
  const block = /^```json\n([\s\S]*?)^```$/m.exec(markdown.slice(at));
  return JSON.parse(block?.[1] ?? 'null');
}

describe('docs/api.md', () => {
  it('is what the generator writes (run `npx tsx scripts/gen-api-docs.ts` after changing a schema)', async () => {
    expect(await fs.readFile(DOCS_FILE, 'utf8')).toBe(await generateApiDocs());
  });

  it('--check passes on fresh docs and exits 1 on stale ones, which a run without --check rewrites', async () => {
    expect(await runGenerator(['--check'])).toMatchObject({ code: 0 });
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'lm-api-docs-'));
    try {
      const copy = path.join(dir, 'api.md');
      const fresh = await fs.readFile(DOCS_FILE, 'utf8');
      await fs.writeFile(copy, fresh.replace('livemerge-engine', 'livemerge-engin'));
      const stale = await runGenerator(['--check', '--out', copy]);
      expect(stale.code).toBe(1);
      expect(stale.stderr).toMatch(/is stale/);
      expect(await runGenerator(['--out', copy])).toMatchObject({ code: 0 });
      expect(await fs.readFile(copy, 'utf8')).toBe(fresh);
      expect(await runGenerator(['--check', '--out', copy])).toMatchObject({ code: 0 });
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  it('documents every workflow’s sections, every failure type and every search attribute', async () => {
    const md = await fs.readFile(DOCS_FILE, 'utf8');
    for (const type of WORKFLOW_TYPES) {
      expect(md).toContain(`## \`${type}\``);
      for (const part of ['input', 'result', 'failure types', '`progress` query', 'with the `temporal` CLI'])
        expect(md).toContain(`### \`${type}\` ${part}`);
      expect(md).toContain(`\`${WORKFLOWS[type].workflowId}\``);
      expect(jsonAfter(md, `### \`${type}\` input`)).toEqual(inputJsonSchema(type));
      expect(jsonAfter(md, `### \`${type}\` result`)).toEqual(resultJsonSchema(type));
      expect(jsonAfter(md, `### \`${type}\` \`progress\` query`)).toEqual(progressJsonSchema(type));
    }
    for (const f of FailureType.options) expect(md).toMatch(new RegExp(`\\| \`${f}\`\\s+\\|`));
    for (const a of SEARCH_ATTRIBUTES) expect(md).toMatch(new RegExp(`\\| \`${a}\`\\s+\\| Keyword`));
    expect(md).toContain(`\`${ENGINE_TASK_QUEUE}\``);
    expect(md).toMatch(/## Cancellation/);
  });

  it('every example is one `temporal` command, with the documented task queue, type, workflow id and a valid input', async () => {
    const md = await fs.readFile(DOCS_FILE, 'utf8');
    const ids = exampleIds(md);
    // The search attributes' section starts a removal with them; each workflow's section has four.
    expect(ids).toEqual([
      'removeSnapshot.startWithSearchAttributes',
      ...WORKFLOW_TYPES.flatMap((t) => ['start', 'execute', 'result', 'query'].map((v) => `${t}.${v}`)),
    ]);
    const values = {
      address: '127.0.0.1:7233',
      namespace: 'default',
      vmId: A,
      snapshotId: B,
      storageDomainId: C,
      imageId: D,
      baseVolumeId: E,
      topVolumeId: A,
      backupId: C,
      hostId: 'host-a',
    };
    for (const id of ids) {
      const [type, variant] = id.split('.') as [WorkflowType, string];
      const verb = variant.replace(/WithSearchAttributes$/, '');
      const words = substitute(shellWords(extractExample(md, id)), values);
      expect(words.slice(0, 3), id).toEqual(['temporal', 'workflow', verb]);
      expect(flag(words, '--address'), id).toBe(values.address);
      expect(flag(words, '--namespace'), id).toBe(values.namespace);
      const workflowId = substitute([WORKFLOWS[type].workflowId], values)[0];
      expect(flag(words, '--workflow-id'), id).toBe(workflowId);
      if (verb === 'start' || verb === 'execute') {
        expect(flag(words, '--task-queue'), id).toBe(ENGINE_TASK_QUEUE);
        expect(flag(words, '--type'), id).toBe(type);
        const input: unknown = JSON.parse(flag(words, '--input') ?? '');
        expect(WorkflowInputs[type].safeParse(input).success, id).toBe(true);
      }
      if (verb === 'query') expect(flag(words, '--type'), id).toBe('progress');
    }
  });

  it('reads shell words as a shell would', () => {
    expect(shellWords(`temporal a \\\n  --input '{"a": "b c"}' "x\\"y" z\\ w`)).toEqual([
      'temporal',
      'a',
      '--input',
      '{"a": "b c"}',
      'x"y',
      'z w',
    ]);
    expect(() => shellWords('temporal $(rm -rf /)')).toThrow(/unsupported/);
    expect(() => shellWords("temporal 'open")).toThrow(/unterminated/);
    expect(() => substitute(['<vmId>'], {})).toThrow(/no value for placeholder <vmId>/);
  });
});
