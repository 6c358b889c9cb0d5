// The signal a host unit (mergeOnHost) sends its workflow when the copy starts and when the job is READY: two
// per merge at most, never one per second of copying (live bytes are in the activity's heartbeat details;
// the pivot and the check that follow take milliseconds and are known from the unit's result).

export const HOST_STAGE_SIGNAL = 'hostStage';

/** The same report to the removal that runs the merge (its `progress` shows each disk without a signal from the merge). */
export const DISK_HOST_STAGE_SIGNAL = 'diskHostStage';

export interface HostStageReport {
  stage: 'copying' | 'ready';
  cur: number;
  end: number;
  /** The activity attempt that reports: a stale attempt's late report is recognisable. */
  attempt: number;
}

export interface DiskHostStageReport extends HostStageReport {
  imageId: string;
}
