// Invariant 6: workflow code is deterministic. Histories recorded from real runs of every workflow kind
// and outcome (test/fixtures/histories; re-record with LIVEMERGE_RECORD_HISTORIES=<dir> npx vitest run
// test/integration/merge-…) must replay against the current code.
import fs from 'node:fs/promises';
import path from 'node:path';
import { Worker } from '@temporalio/worker';
import { describe, expect, it } from 'vitest';
import { workflowBundle } from '../helpers/temporal';

const DIR = path.resolve(__dirname, '../fixtures/histories');

describe('replay of recorded histories', () => {
  it('covers every workflow kind and the completed, failed and cancelled outcomes', async () => {
    const names = await fs.readdir(DIR);
    const kinds = new Set(
      names.map((n) =>
        n
          .replace(/\.json$/, '')
          .split('-')
          .slice(0, 2)
          .join('-'),
      ),
    );
    for (const k of [
      'createSnapshot-completed',
      'removeSnapshot-completed',
      'removeSnapshot-failed',
      'removeSnapshot-cancelled',
      'mergeDisk-completed',
      'mergeDisk-failed',
      'mergeDisk-cancelled',
      'reconcile-completed',
      'backupVm-completed',
      'backupVm-failed',
      'backupVm-cancelled',
      'restoreBackup-completed',
      'restoreBackup-failed',
      'pruneBackups-completed',
      'vmLock-terminated',
    ])
      expect(kinds).toContain(k);
  });

  it('replays every recorded history against the current workflow code', { timeout: 120_000 }, async () => {
    const names = (await fs.readdir(DIR)).filter((n) => n.endsWith('.json')).sort();
    const histories = await Promise.all(
      names.map(async (n) => ({
        workflowId: n,
        // The CLI's JSON export; the worker converts it to a History itself.
        history: JSON.parse(await fs.readFile(path.join(DIR, n), 'utf8')) as unknown,
      })),
    );
    const failures: string[] = [];
    let replayed = 0;
    for await (const r of Worker.runReplayHistories({ workflowBundle: await workflowBundle() }, histories)) {
      replayed++;
      if (r.error) failures.push(`${r.workflowId}: ${r.error.message}`);
    }
    expect(failures).toEqual([]);
    expect(replayed).toBe(names.length);
  });
});
