// Workflows started before the lean history (issue 13) replay as they ran: engine steps as activities,
// one search-attribute upsert per change, a signal to the parent at every stage, a child that located
// its VM again. From this build on each of those costs fewer events (see where lean() is asked).
// The second round (leanV2) ends the VM lock with its holder's close instead of a release signal; the
// third (leanV3) takes the lock before anything is read, reads the chains in the locating probe, records
// and deletes in one storage step, and holds the lock with a workflow that never needs a worker. The
// fourth (leanV4) does not upsert a search attribute whose value its start already carries (a removal
// gives its merges theirs at their start, a backup its snapshot and merge-back, and the CLI every
// operation its VM's), and takes its round from the CLI's memo as a child takes it from its parent's.
import { patched, workflowInfo } from '@temporalio/workflow';
import { HISTORY_ROUND_MEMO, LATEST_HISTORY_ROUND } from '../common/history-round';

export const LEAN_HISTORY_PATCH = 'livemerge-lean-history';
export const LEAN_HISTORY_V2_PATCH = 'livemerge-lean-history-2';
export const LEAN_HISTORY_V3_PATCH = 'livemerge-lean-history-3';
export const LEAN_HISTORY_V4_PATCH = 'livemerge-lean-history-4';

/** Each round's patch, round 1 first. */
export const ROUND_PATCHES = [
  LEAN_HISTORY_PATCH,
  LEAN_HISTORY_V2_PATCH,
  LEAN_HISTORY_V3_PATCH,
  LEAN_HISTORY_V4_PATCH,
] as const;

let given: number | null | undefined;

/**
 * The round the starter named in the memo (a parent for its child, the CLI), decided once per workflow
 * (module state is per workflow in the sandbox: this module is not preloaded); null: decided by patch
 * markers. A round this build does not know counts as none, so a newer starter's workflow records this
 * build's marker. A worker of an earlier round did the same (it ignored the memo and recorded its own
 * round's marker): replaying a history that has such a marker, the marker decides, as it did for that
 * worker. The SDK knows a marker only once the replay has reached its workflow task: this is first asked
 * in the first one (every workflow's first upsert asks lean(), in every round), where that worker
 * recorded it. A build from before round 1 recorded none: docs/upgrades.md.
 */
function givenRound(): number | null {
  if (given !== undefined) return given;
  const memo = workflowInfo().memo?.[HISTORY_ROUND_MEMO];
  const named = typeof memo === 'number' && Number.isInteger(memo) ? memo : NaN;
  given = named >= 3 && named <= LATEST_HISTORY_ROUND ? named : null;
  if (given !== null && workflowInfo().unsafe.isReplaying)
    for (const patch of ROUND_PATCHES.slice(0, given - 1).reverse())
      if (patched(patch)) {
        given = null;
        break;
      }
  return given;
}

/**
 * The fourth round. A workflow whose starter named it (a v4 parent's child, the CLI's) has no patch marker
 * and no TemporalChangeVersion upsert; a child named round 3 stays on round 3.
 */
export const leanV4 = (): boolean =>
  givenRound() === 4 || (givenRound() === null && patched(LEAN_HISTORY_V4_PATCH));

/** The third round (a child named round 3 or 4 by its parent knows it from its memo). */
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
  if (leanV4()) return { [HISTORY_ROUND_MEMO]: 4 };
  return leanV3() ? { [HISTORY_ROUND_MEMO]: 3 } : {};
}
