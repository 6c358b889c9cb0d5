// The Livemerge* search attributes (Keyword): their keys, and what a starter can set at the start.
import type { SearchAttributePair } from '@temporalio/common';
import { SearchAttributeType, defineSearchAttributeKey } from '@temporalio/common';

export const VM_ID_KEY = defineSearchAttributeKey('LivemergeVmId', SearchAttributeType.KEYWORD);
export const HOST_ID_KEY = defineSearchAttributeKey('LivemergeHostId', SearchAttributeType.KEYWORD);
export const STAGE_KEY = defineSearchAttributeKey('LivemergeStage', SearchAttributeType.KEYWORD);

export const SEARCH_ATTRIBUTES = [VM_ID_KEY.name, HOST_ID_KEY.name, STAGE_KEY.name] as const;

/**
 * The values an operation on `vmId` (a removal, merge, snapshot or backup) sets first: the VM,
 * `inspecting`, and the host when the starter knows it, given at its start. A workflow of lean history
 * round 4 does not upsert a value its start already carries: up to two upserts (events) fewer. A host that
 * turns out to be wrong is corrected by the workflow once it has found the VM.
 */
export function startSearchAttributes(vmId: string, hostId?: string): SearchAttributePair[] {
  return [
    { key: VM_ID_KEY, value: vmId },
    { key: STAGE_KEY, value: 'inspecting' },
    ...(hostId ? [{ key: HOST_ID_KEY, value: hostId }] : []),
  ];
}
