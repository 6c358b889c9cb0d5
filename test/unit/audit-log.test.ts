import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { AuditEvent } from '../../src/activities/contracts';
import { AuditLog } from '../../src/audit/audit-log';

const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await fs.rm(d, { recursive: true, force: true });
});

const event = (outcome: AuditEvent['outcome']): AuditEvent => ({
  eventId: `wf/run/${outcome}`,
  outcome,
  workflowType: 'mergeDisk',
  workflowId: 'wf',
  runId: 'run',
  vmId: '00000000-0000-4000-8000-000000000001',
  hostId: 'h1',
  detail: {},
});

describe('audit log', () => {
  it('writes each event id exactly once, even when the write is retried concurrently', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'lm-audit-'));
    dirs.push(dir);
    const log = new AuditLog(path.join(dir, 'audit.jsonl'));
    const results = await Promise.all([log.append(event('started')), log.append(event('started'))]);
    expect(results.map((r) => r.written).sort()).toEqual([false, true]);
    await log.append(event('completed'));
    const lines = (await fs.readFile(log.file, 'utf8')).trim().split('\n');
    expect(lines).toHaveLength(2);
    expect((await log.read()).map((r) => r.outcome)).toEqual(['started', 'completed']);
    expect(await log.read({ vmId: 'someone-else' })).toEqual([]);
  });

  it('sees what another writer of the file appended, and a file replaced meanwhile', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'lm-audit-'));
    dirs.push(dir);
    const file = path.join(dir, 'audit.jsonl');
    // Two engines (two instances, as two processes would be) on one file.
    const a = new AuditLog(file);
    const b = new AuditLog(file);
    expect((await a.append(event('started'))).written).toBe(true);
    expect((await b.append(event('started'))).written).toBe(false);
    expect((await b.append(event('completed'))).written).toBe(true);
    expect((await a.append(event('completed'))).written).toBe(false);
    expect((await a.read()).map((r) => r.outcome)).toEqual(['started', 'completed']);
    // Replaced by a file with other events (a new inode): what the old one held no longer counts.
    await fs.rm(file);
    await fs.writeFile(file, JSON.stringify({ ...event('failed'), at: 'x' }) + '\n');
    expect((await a.append(event('failed'))).written).toBe(false);
    expect((await a.append(event('started'))).written).toBe(true);
    expect((await b.read()).map((r) => r.outcome)).toEqual(['failed', 'started']);
  });
});
