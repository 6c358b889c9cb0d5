// What the benchmarks read off Temporal histories.
import type { temporal } from '@temporalio/proto';

/** An event's time on the server's clock, in ms since the epoch. */
export const eventMs = (e: temporal.api.history.v1.IHistoryEvent): number =>
  Number(e.eventTime!.seconds) * 1000 + Math.floor((e.eventTime!.nanos ?? 0) / 1e6);
