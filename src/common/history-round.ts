// The round of lean histories (src/workflows/lean.ts) a starter asks a workflow to run, in its memo: a
// parent tells its children its own round, and the CLI tells what it starts this build's latest.
import type { SearchAttributePair } from '@temporalio/common';
import { startSearchAttributes } from './search-attributes';

export const HISTORY_ROUND_MEMO = 'livemergeHistory';

/** The latest round this build's workflows know (a start naming a later one is run as if it named none). */
export const LATEST_HISTORY_ROUND = 4;

/**
 * How livemerge's own starters (the CLI) start an operation on `vmId`: the latest round in the memo (no
 * patch marker of its own: two events fewer) and the VM's search attributes (no upsert of its own for them).
 */
export function operationStartOptions(
  vmId: string,
  hostId?: string,
): { memo: Record<string, number>; typedSearchAttributes: SearchAttributePair[] } {
  return {
    memo: { [HISTORY_ROUND_MEMO]: LATEST_HISTORY_ROUND },
    typedSearchAttributes: startSearchAttributes(vmId, hostId),
  };
}
