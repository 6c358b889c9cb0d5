// The signal a host unit (mergeOnHost) sends its workflow at each stage change: a bounded number per
// merge, never one per second of copying (live bytes are in the activity's heartbeat details).

export const HOST_STAGE_SIGNAL = 'hostStage';

export interface HostStageReport {
  stage: 'copying' | 'ready' | 'pivoting' | 'verifying';
  cur: number;
  end: number;
  /** The activity attempt that reports: a stale attempt's late report is recognisable. */
  attempt: number;
}
