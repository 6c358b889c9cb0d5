// The Temporal work of one snapshot removal (issue 13): its events, the removal's and its children's (the
// disk's merge, the VM lock), counted by type and printed. The budget is what the lean histories reach
// (src/workflows/lean.ts); a change that adds events to every merge fails here and says where.
import type { WorkflowHandle } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import { temporal } from '@temporalio/proto';
import { describe, expect, it } from 'vitest';
import { pollUntil } from '../helpers/poll';
import { useStack } from '../helpers/stack';
import { operationStartOptions } from '../../src/common/history-round';
import { HOST_ID_KEY, STAGE_KEY, VM_ID_KEY } from '../../src/common/search-attributes';
import type { RemoveSnapshotInput } from '../../src/schemas/inputs';
import type { Stack } from '../helpers/stack';
import { startRemoveSnapshot, vmWithSnapshot } from '../helpers/workflows';

// Measured (lean v4): 62 for a removal started as a user's service does, by type, id and input; 58 for one
// started as the CLI starts it (operationStartOptions): its round in the memo (no patch marker, no
// TemporalChangeVersion upsert) and its VM's search attributes (no upsert of the VM, host, `inspecting`).
const BUDGET = { bare: 62, asTheCli: 58 };
// A stage report (a copy longer than 0.3 s, which a loaded machine lets through) costs at most this many:
// the signal and a workflow task in the merge and in the removal, and the merge's `copying` upsert.
const REPORT_EVENTS = 9;

type Event = temporal.api.history.v1.IHistoryEvent;
const typeName = (e: Event): string =>
  temporal.api.enums.v1.EventType[e.eventType ?? 0]?.replace('EVENT_TYPE_', '') ?? String(e.eventType);

const ms = (e: Event | undefined): number => {
  const t = e?.eventTime;
  return t ? Number(t.seconds ?? 0) * 1000 + Math.round((t.nanos ?? 0) / 1e6) : 0;
};
const label = (e: Event): string =>
  e.activityTaskScheduledEventAttributes?.activityType?.name ??
  e.markerRecordedEventAttributes?.markerName ??
  e.workflowExecutionSignaledEventAttributes?.signalName ??
  '';

async function historyOf(h: WorkflowHandle): Promise<Event[]> {
  return (await h.fetchHistory()).events ?? [];
}

/** As the CLI starts a removal: its memo, and the VM's search attributes with its host as the CLI found it. */
const startAsTheCli =
  (host?: string) =>
  (s: Stack, input: RemoveSnapshotInput): Promise<WorkflowHandle> =>
    startRemoveSnapshot(s, input, operationStartOptions(input.vmId, host ?? s.hostId));

describe('history budget', () => {
  it.each([
    {
      start: 'bare',
      budget: BUDGET.bare,
      patchMarkers: 1,
      startRemoval: (s: Stack, input: RemoveSnapshotInput) => startRemoveSnapshot(s, input),
    },
    {
      start: 'as the CLI does',
      budget: BUDGET.asTheCli,
      patchMarkers: 0,
      startRemoval: startAsTheCli(),
    },
    // A host the VM has left since the CLI looked: the removal corrects it once it has found the VM.
    {
      start: 'as the CLI does, naming a host the VM has left',
      budget: BUDGET.asTheCli + 1,
      patchMarkers: 0,
      startRemoval: startAsTheCli('a-host-the-vm-left'),
    },
  ])(
    'a single-disk snapshot removal, started $start: at most $budget events, parent and children',
    { timeout: 120_000 },
    async ({ budget, patchMarkers, startRemoval }) => {
      const s = await useStack();
      const { vm, snapshotId } = await vmWithSnapshot(s);
      const h = await startRemoval(s, { vmId: vm.uuid, snapshotId });
      await h.result();
      const parent = await historyOf(h);
      const childIds = parent.flatMap(
        (e) => e.startChildWorkflowExecutionInitiatedEventAttributes?.workflowId ?? [],
      );
      expect(childIds.map((id) => id.split(':')[0])).toEqual(['vm-lock', 'merge-disk']);
      // The server terminates the lock after the removal has closed (its parent close policy), a moment
      // after the result: its history is read once that is recorded.
      const lockHandle = s.client.workflow.getHandle(childIds[0]!);
      await pollUntil(
        async () => (await lockHandle.describe()).status.name === 'TERMINATED',
        10_000,
        'the removal’s close to terminate its VM lock',
      );
      const histories = [
        { id: h.workflowId, events: parent },
        ...(await Promise.all(
          childIds.map(async (id) => ({ id, events: await historyOf(s.client.workflow.getHandle(id)) })),
        )),
      ];
      const byType = histories.map(({ id, events }) => {
        const n: Record<string, number> = {};
        for (const e of events) n[typeName(e)] = (n[typeName(e)] ?? 0) + 1;
        const activities = events.flatMap(
          (e) => e.activityTaskScheduledEventAttributes?.activityType?.name ?? [],
        );
        return { workflow: id.split(':')[0], events: events.length, activities, byType: n };
      });
      const total = histories.reduce((sum, x) => sum + x.events.length, 0);
      console.log(JSON.stringify({ total, workflows: byType }, null, 1));
      // Where the wall time goes: every event of the three histories on one clock, from the removal's start.
      const t0 = ms(parent[0]);
      const timeline = histories
        .flatMap(({ id, events }) => events.map((e) => ({ at: ms(e) - t0, wf: id.split(':')[0], e })))
        .sort((a, b) => a.at - b.at)
        .map(({ at, wf, e }) => `${String(at).padStart(5)} ms  ${wf?.padEnd(16)} ${typeName(e)} ${label(e)}`);
      console.log(timeline.join('\n'));
      // One attempt of each activity: nothing here was retried (a retry would hide in the count).
      for (const { events } of histories)
        for (const e of events)
          if (e.activityTaskStartedEventAttributes)
            expect(e.activityTaskStartedEventAttributes.attempt).toBe(1);
      // The lock (v3) is an execution no worker runs: started, then terminated by its holder's close.
      const lock = byType.find((x) => x.workflow === 'vm-lock');
      expect(lock?.byType).toEqual({ WORKFLOW_EXECUTION_STARTED: 1, WORKFLOW_EXECUTION_TERMINATED: 1 });
      // The values a workflow was started with are not upserted again (the merge's upserts: below).
      // Visibility: both end with their VM, its real host and `done`, whichever values they started with.
      for (const id of [h.workflowId, childIds[1]!]) {
        const attrs = (await s.client.workflow.getHandle(id).describe()).typedSearchAttributes;
        expect([attrs.get(VM_ID_KEY), attrs.get(HOST_ID_KEY), attrs.get(STAGE_KEY)]).toEqual([
          vm.uuid,
          s.hostId,
          'done',
        ]);
      }
      const merge = byType.find((x) => x.workflow === 'merge-disk')!;
      const reports = merge.byType.WORKFLOW_EXECUTION_SIGNALED ?? 0;
      // The stage of each of the merge's upserts: its `recording`, its end, and between them a host report's
      // stage (`copying` after 300 ms in it, `ready` when the pivot is slow). A report arriving alone always
      // gets its own upsert (its handler runs before the step's result continues the workflow); two in one
      // workflow task share one.
      const mergeEvents = histories.find(({ id }) => id === childIds[1])!.events;
      const stages = mergeEvents.flatMap((e) => {
        const fields = e.upsertWorkflowSearchAttributesEventAttributes?.searchAttributes?.indexedFields;
        if (!fields) return [];
        const stage = fields[STAGE_KEY.name];
        return [stage ? defaultPayloadConverter.fromPayload<string[] | string>(stage) : 'no stage'];
      });
      const flat = stages.map((x) => (Array.isArray(x) ? x.join(',') : x));
      expect(flat[0]).toBe('recording');
      expect(flat.at(-1)).toBe('done');
      const reported = flat.slice(1, -1);
      for (const stage of reported) expect(['copying', 'ready']).toContain(stage);
      expect(reported.length).toBeGreaterThanOrEqual(Math.min(reports, 1));
      expect(reported.length).toBeLessThanOrEqual(reports);
      // The round: the bare start's patch marker (the only one in the three histories), none for the CLI's.
      const markers = histories.flatMap(({ events }) =>
        events.filter((e) => e.markerRecordedEventAttributes?.markerName === 'core_patch'),
      );
      expect(markers.length).toBe(patchMarkers);
      expect(total).toBeLessThanOrEqual(budget + REPORT_EVENTS * reports);
    },
  );
});
