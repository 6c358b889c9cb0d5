// Workflows started before the lean history (issue 13) replay as they ran: engine steps as activities,
// one search-attribute upsert per change, a signal to the parent at every stage, a child that located
// its VM again. From this build on each of those costs fewer events (see where lean() is asked).
// The second round (leanV2) ends the VM lock with its holder's close instead of a release signal; the
// third (leanV3) takes the lock before anything is read, reads the chains in the locating probe, records
// and deletes in one storage step, and holds the lock with a workflow that never needs a worker.
import { patched, workflowInfo } from '@temporalio/workflow';

export const LEAN_HISTORY_PATCH = 'livemerge-lean-history';
export const LEAN_HISTORY_V2_PATCH = 'livemerge-lean-history-2';
export const LEAN_HISTORY_V3_PATCH = 'livemerge-lean-history-3';

/** The memo key by which a v3 workflow tells its children they are v3 too (no marker of their own). */
const HISTORY_MEMO = 'livemergeHistory';

/**
 * The third round. A child started by a v3 workflow knows it from its memo (part of its first event, so
 * replay decides the same): its history has no patch marker and no TemporalChangeVersion upsert.
 */
export const leanV3 = (): boolean =>
  workflowInfo().memo?.[HISTORY_MEMO] === 3 || patched(LEAN_HISTORY_V3_PATCH);

/** The second round of lean histories: the VM lock is released by its holder's close. */
export const leanV2 = (): boolean => leanV3() || patched(LEAN_HISTORY_V2_PATCH);

/**
 * Whether this workflow runs the lean way (new, or an old one past its replayed history). A new workflow
 * records one marker, the latest round's, which implies the earlier ones.
 */
export const lean = (): boolean => leanV2() || patched(LEAN_HISTORY_PATCH);

/** The memo a v3 workflow gives each child it starts (empty before v3). */
export function historyMemo(): Record<string, number> {
  return leanV3() ? { [HISTORY_MEMO]: 3 } : {};
}
