// Workflows started before the lean history (issue 13) replay as they ran: engine steps as activities,
// one search-attribute upsert per change, a signal to the parent at every stage, a child that located
// its VM again. From this build on each of those costs fewer events (see where lean() is asked).
// The second round (leanV2) ends the VM lock with its holder's close instead of a release signal; the
// third (leanV3) takes the lock before anything is read, reads the chains in the locating probe, records
// and deletes in one storage step, and holds the lock with a workflow that never needs a worker. The
// fourth (leanV4) does not upsert a search attribute whose value its start already carries: a removal
// gives its merges theirs at their start, and the CLI gives a removal or merge its own.
import { patched, workflowInfo } from '@temporalio/workflow';

export const LEAN_HISTORY_PATCH = 'livemerge-lean-history';
export const LEAN_HISTORY_V2_PATCH = 'livemerge-lean-history-2';
export const LEAN_HISTORY_V3_PATCH = 'livemerge-lean-history-3';
export const LEAN_HISTORY_V4_PATCH = 'livemerge-lean-history-4';

/** The memo key by which a v3+ workflow tells its children its round (no marker of their own). */
const HISTORY_MEMO = 'livemergeHistory';

/** The round a parent gave this child in its memo (part of its first event, so replay decides the same). */
const givenRound = (): unknown => workflowInfo().memo?.[HISTORY_MEMO];

/**
 * The fourth round. A child knows its round from its memo: its history has no patch marker and no
 * TemporalChangeVersion upsert; a child given round 3 stays on round 3.
 */
export const leanV4 = (): boolean =>
  givenRound() === 4 || (givenRound() === undefined && patched(LEAN_HISTORY_V4_PATCH));

/** The third round (a child given round 3 or 4 by its parent knows it from its memo). */
export const leanV3 = (): boolean => leanV4() || givenRound() === 3 || patched(LEAN_HISTORY_V3_PATCH);

/** The second round of lean histories: the VM lock is released by its holder's close. */
export const leanV2 = (): boolean => leanV3() || patched(LEAN_HISTORY_V2_PATCH);

/**
 * Whether this workflow runs the lean way (new, or an old one past its replayed history). A new workflow
 * records one marker, the latest round's, which implies the earlier ones.
 */
export const lean = (): boolean => leanV2() || patched(LEAN_HISTORY_PATCH);

/** The memo a v3+ workflow gives each child it starts: its own round (empty before v3). */
export function historyMemo(): Record<string, number> {
  if (leanV4()) return { [HISTORY_MEMO]: 4 };
  return leanV3() ? { [HISTORY_MEMO]: 3 } : {};
}
