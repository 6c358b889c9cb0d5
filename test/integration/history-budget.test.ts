// The Temporal work of one snapshot removal (issue 13): its events, the removal's and its children's (the
// disk's merge, the VM lock), counted by type and printed. The budget is what the lean histories reach
// (src/workflows/lean.ts); a change that adds events to every merge fails here and says where.
import type { WorkflowHandle } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { describe, expect, it } from 'vitest';
import { pollUntil } from '../helpers/poll';
import { useStack } from '../helpers/stack';
import { startRemoveSnapshot, vmWithSnapshot } from '../helpers/workflows';

// 63 measured (lean v3); the margin is a stage report that a slow machine lets through (copy > 0.3 s).
const BUDGET = 65;

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

describe('history budget', () => {
  it(
    `a single-disk snapshot removal: at most ${BUDGET} events, parent and children`,
    { timeout: 120_000 },
    async () => {
      const s = await useStack();
      const { vm, snapshotId } = await vmWithSnapshot(s);
      const h = await startRemoveSnapshot(s, { vmId: vm.uuid, snapshotId });
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
      expect(total).toBeLessThanOrEqual(BUDGET);
    },
  );
});
