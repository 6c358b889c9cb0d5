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
});
