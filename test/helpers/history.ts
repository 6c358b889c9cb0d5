// Reading what a workflow did from its history: the branch a test names, not only the end state.
import type { WorkflowHandle } from '@temporalio/client';
import type { temporal } from '@temporalio/proto';
import { expect } from 'vitest';

/** Matches the ActivityTaskScheduled events of the activity `type`. */
export const scheduledActivity =
  (type: string) =>
  (e: temporal.api.history.v1.IHistoryEvent): boolean =>
    e.activityTaskScheduledEventAttributes?.activityType?.name === type;

/** The event ids (as strings) of every ActivityTaskScheduled of activity `type`: what its other events name. */
export const scheduledEventIds = (
  events: temporal.api.history.v1.IHistoryEvent[],
  type: string,
): Set<string> => new Set(events.filter(scheduledActivity(type)).map((e) => String(e.eventId)));

/** The run's activity `type`: its last attempt (ActivityTaskStarted), the failure before it, its result. */
export async function activityRun(
  handle: WorkflowHandle,
  type: string,
): Promise<{
  attempt: number;
  lastFailure: string | undefined;
  result: Record<string, unknown> | undefined;
}> {
  const events = (await handle.fetchHistory()).events ?? [];
  const scheduled = events.filter(scheduledActivity(type));
  expect(scheduled.length, `${type} scheduled in ${handle.workflowId}`).toBeGreaterThan(0);
  const id = String(scheduled[scheduled.length - 1]!.eventId);
  const started = events.find((e) => String(e.activityTaskStartedEventAttributes?.scheduledEventId) === id);
  const completed = events.find(
    (e) => String(e.activityTaskCompletedEventAttributes?.scheduledEventId) === id,
  );
  const data = completed?.activityTaskCompletedEventAttributes?.result?.payloads?.[0]?.data;
  return {
    attempt: started?.activityTaskStartedEventAttributes?.attempt ?? 0,
    lastFailure: started?.activityTaskStartedEventAttributes?.lastFailure?.message ?? undefined,
    // A void result is an empty (binary/null) payload.
    result: data?.length
      ? (JSON.parse(Buffer.from(data).toString('utf8')) as Record<string, unknown>)
      : undefined,
  };
}
