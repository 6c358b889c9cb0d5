// Workflows started before the lean history (issue 13) replay as they ran: engine steps as activities,
// one search-attribute upsert per change, a signal to the parent at every stage, a child that located
// its VM again. From this build on each of those costs fewer events (see where lean() is asked).
import { patched } from '@temporalio/workflow';

export const LEAN_HISTORY_PATCH = 'livemerge-lean-history';

/** Whether this workflow runs the lean way (new, or an old one past its replayed history). */
export const lean = (): boolean => patched(LEAN_HISTORY_PATCH);
