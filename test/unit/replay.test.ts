// Invariant 6: workflow code is deterministic. Histories recorded from real runs of every workflow kind
// and outcome (test/fixtures/histories; re-record with LIVEMERGE_RECORD_HISTORIES=<dir> npx vitest run
// test/integration/merge-…) must replay against the current code.
import fs from 'node:fs/promises';
import path from 'node:path';
import { Worker } from '@temporalio/worker';
import { describe, expect, it } from 'vitest';
import { HISTORY_ROUND_MEMO, LATEST_HISTORY_ROUND } from '../../src/common/history-round';
import { ROUND_PATCHES } from '../../src/workflows/lean';
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

  it('knows one patch per round, up to the latest round', () => {
    expect(ROUND_PATCHES).toHaveLength(LATEST_HISTORY_ROUND);
  });

  // An unversioned fleet mid-upgrade: a start that names a round in its memo (the CLI's, a parent's for its
  // child) taken by a worker of an earlier round, which ignores the memo and records its own round's patch
  // marker. These are such histories: real ones of each round, with the later round named in their start's
  // memo (what that worker received). They replay on this build as that worker ran them.
  it.each([
    { recorded: 'removeSnapshot-completed-lean-v3.json', named: 4 },
    { recorded: 'mergeDisk-completed-lean-v3.json', named: 4 },
    { recorded: 'removeSnapshot-completed-lean-v2.json', named: 4 },
    { recorded: 'mergeDisk-completed-lean-v2.json', named: 3 },
    { recorded: 'removeSnapshot-completed-lean.json', named: 4 },
    { recorded: 'mergeDisk-completed-lean-live.json', named: 3 },
    { recorded: 'createSnapshot-completed-lean.json', named: 4 },
    { recorded: 'createSnapshot-cancelled-lean-v2.json', named: 4 },
    { recorded: 'backupVm-completed.json', named: 4 },
    { recorded: 'backupVm-failed-MergeInProgress.json', named: 4 },
  ])(
    'replays $recorded as run by its round for a start naming round $named',
    { timeout: 60_000 },
    async ({ recorded, named }) => {
      const history = JSON.parse(await fs.readFile(path.join(DIR, recorded), 'utf8')) as {
        events: Array<{ workflowExecutionStartedEventAttributes?: { memo?: { fields?: object } } }>;
      };
      const start = history.events[0]!.workflowExecutionStartedEventAttributes!;
      const b64 = (x: string) => Buffer.from(x).toString('base64');
      start.memo = {
        fields: {
          ...start.memo?.fields,
          [HISTORY_ROUND_MEMO]: { metadata: { encoding: b64('json/plain') }, data: b64(String(named)) },
        },
      };
      await Worker.runReplayHistory({ workflowBundle: await workflowBundle() }, history);
    },
  );
});
