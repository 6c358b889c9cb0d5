// Where does one removal's time go? Prints the history events of a removeSnapshot run and of its child
// workflows on one clock (the server's event times), in order, each with the time since the first event
// and since the event before, then the time of each activity (scheduled → started → closed) and of each
// workflow task (scheduled → started → completed: the engine's share, local activities included).
//
// Usage: npx tsx bench/removal-timeline.ts [workflowId]   (default: the removal that started last)
// against the stack of TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE (e.g. after `npx tsx bench/merge-scale.ts`
// ran on a `livemerge dev up` stack, which it leaves running).
import { Client, Connection } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { loadConfig, temporalConnectionOptions } from '../src/config';
import { eventMs } from './history-events';

type HistoryEvent = temporal.api.history.v1.IHistoryEvent;
const EventType = temporal.api.enums.v1.EventType;

interface Row {
  at: number;
  who: string;
  event: HistoryEvent;
}

function label(e: HistoryEvent): string {
  const name = (EventType[e.eventType ?? 0] ?? String(e.eventType)).replace(/^EVENT_TYPE_/, '');
  const what =
    e.activityTaskScheduledEventAttributes?.activityType?.name ??
    e.workflowExecutionSignaledEventAttributes?.signalName ??
    e.markerRecordedEventAttributes?.markerName ??
    e.startChildWorkflowExecutionInitiatedEventAttributes?.workflowType?.name ??
    '';
  return `${String(e.eventId)} ${name}${what ? ` ${what}` : ''}`;
}

/** scheduled → started → closed of each activity and workflow task of one history, in ms. */
function spans(who: string, events: HistoryEvent[]): string[] {
  const byId = new Map(events.map((e) => [String(e.eventId), e]));
  const out: string[] = [];
  for (const e of events) {
    const closedActivity =
      e.activityTaskCompletedEventAttributes ??
      e.activityTaskFailedEventAttributes ??
      e.activityTaskTimedOutEventAttributes;
    if (closedActivity) {
      const scheduled = byId.get(String(closedActivity.scheduledEventId));
      const started = byId.get(String(closedActivity.startedEventId));
      const type = scheduled?.activityTaskScheduledEventAttributes?.activityType?.name ?? '?';
      if (scheduled && started)
        out.push(
          `${who} activity ${type}: queued ${eventMs(started) - eventMs(scheduled)} ms, ran ${eventMs(e) - eventMs(started)} ms`,
        );
    }
    const wft = e.workflowTaskCompletedEventAttributes;
    if (wft) {
      const scheduled = byId.get(String(wft.scheduledEventId));
      const started = byId.get(String(wft.startedEventId));
      if (scheduled && started)
        out.push(
          `${who} workflow task ${String(scheduled.eventId)}: queued ${eventMs(started) - eventMs(scheduled)} ms, ran ${eventMs(e) - eventMs(started)} ms`,
        );
    }
  }
  return out;
}

async function main(): Promise<void> {
  const config = loadConfig();
  const connection = await Connection.connect(temporalConnectionOptions(config));
  try {
    const client = new Client({ connection, namespace: config.temporalNamespace });
    let workflowId = process.argv[2];
    if (!workflowId) {
      let latest: { id: string; start: number } | undefined;
      for await (const w of client.workflow.list({ query: `WorkflowType = 'removeSnapshot'` }))
        if (!latest || w.startTime.getTime() > latest.start)
          latest = { id: w.workflowId, start: w.startTime.getTime() };
      if (!latest) throw new Error(`no removeSnapshot run in namespace ${config.temporalNamespace}`);
      workflowId = latest.id;
    }
    const parent = (await client.workflow.getHandle(workflowId).fetchHistory()).events ?? [];
    const histories: Array<[string, HistoryEvent[]]> = [['removal', parent]];
    for (const e of parent) {
      const child = e.childWorkflowExecutionStartedEventAttributes;
      if (!child?.workflowExecution?.workflowId) continue;
      const events = (
        await client.workflow
          .getHandle(child.workflowExecution.workflowId, child.workflowExecution.runId ?? undefined)
          .fetchHistory()
      ).events;
      histories.push([child.workflowType?.name ?? child.workflowExecution.workflowId, events ?? []]);
    }
    const rows: Row[] = histories.flatMap(([who, events]) =>
      events.map((event) => ({ at: eventMs(event), who, event })),
    );
    rows.sort((a, b) => a.at - b.at);
    const first = rows[0]?.at ?? 0;
    let before = first;
    console.log(
      `${workflowId}: ${histories.map(([who, events]) => `${who} ${events.length} events`).join(', ')}`,
    );
    console.log('    ms   +ms  workflow  event');
    for (const r of rows) {
      console.log(
        `${String(r.at - first).padStart(6)} ${String(r.at - before).padStart(5)}  ${r.who.padEnd(14)} ${label(r.event)}`,
      );
      before = r.at;
    }
    console.log('');
    for (const [who, events] of histories) for (const line of spans(who, events)) console.log(line);
  } finally {
    await connection.close();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
