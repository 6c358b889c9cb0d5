// Workflows started before the lean history (issue 13) replay as they ran: engine steps as activities,
// one search-attribute upsert per change, a signal to the parent at every stage, a child that located
// its VM again. From this build on each of those costs fewer events (see where lean() is asked).
// The second round (leanV2) ends the VM lock with its holder's close instead of a release signal.
import { patched } from '@temporalio/workflow';

export const LEAN_HISTORY_PATCH = 'livemerge-lean-history';
export const LEAN_HISTORY_V2_PATCH = 'livemerge-lean-history-2';

/**
 * Whether this workflow runs the lean way (new, or an old one past its replayed history). A new workflow
 * records one marker, the second round's, which implies the first.
 */
export const lean = (): boolean => patched(LEAN_HISTORY_V2_PATCH) || patched(LEAN_HISTORY_PATCH);

/** The second round of lean histories: the VM lock is released by its holder's close. */
export const leanV2 = (): boolean => patched(LEAN_HISTORY_V2_PATCH);
