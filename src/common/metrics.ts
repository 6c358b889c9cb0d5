// livemerge's own Prometheus metrics (docs/operations.md), recorded through the Temporal SDK's meters so that
// one exporter per worker process serves them next to the SDK's: workflow code passes `metricMeter` from
// @temporalio/workflow (which drops values during replay), activities `Context.current().metricMeter`.
// Pure and workflow safe: the meter comes from the caller.
import type { MetricMeter } from '@temporalio/common';

export const METRIC = {
  merges: 'livemerge_merges_total',
  mergeDuration: 'livemerge_merge_duration_seconds',
  bytesCommitted: 'livemerge_bytes_committed_total',
  noticeLatency: 'livemerge_notice_latency_milliseconds',
} as const;

/** Bucket bounds for the exporter (the SDK's defaults are for milliseconds, not for merges of hours). */
export const METRIC_BUCKETS: Record<string, number[]> = {
  [METRIC.mergeDuration]: [1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600],
  [METRIC.noticeLatency]: [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 5000],
};

export type MergeOutcome = 'completed' | 'failed' | 'cancelled';

/** What kind of merge a counted workflow ran; 'unknown' when it ended before the plan said. */
export interface MergeLabels {
  /** active: the disk's leaf was merged (active commit + pivot, or forward into the leaf); else intermediate. */
  kind: 'active' | 'intermediate' | 'unknown';
  mode: 'live' | 'cold' | 'unknown';
  direction: 'backward' | 'forward' | 'unknown';
}

export interface LivemergeMetrics {
  /** One finished merge workflow (mergeDisk, or removeSnapshot as a whole): counter and duration. */
  merge(labels: MergeLabels & { outcome: MergeOutcome }, seconds: number): void;
  /** Bytes a block job reported done when the host unit finished it. */
  bytesCommitted(bytes: number, labels: { jobKind: string }): void;
  /** From libvirt's block-job event reaching the agent to the host unit acting on it. */
  noticeLatency(ms: number, labels: { event: 'ready' | 'completed' }): void;
}

export function livemergeMetrics(meter: MetricMeter): LivemergeMetrics {
  return {
    merge(labels, seconds) {
      meter
        .createCounter(METRIC.merges, '', 'merge workflows that ended, by kind, mode, direction and outcome')
        .add(1, { ...labels });
      meter
        .createHistogram(METRIC.mergeDuration, 'float', 's', 'merge workflow run time, start to end')
        .record(Math.max(0, seconds), { ...labels });
    },
    bytesCommitted(bytes, labels) {
      if (bytes <= 0) return;
      meter
        .createCounter(METRIC.bytesCommitted, 'By', 'bytes block jobs of finished host units moved')
        .add(Math.round(bytes), labels);
    },
    noticeLatency(ms, labels) {
      meter
        .createHistogram(
          METRIC.noticeLatency,
          'float',
          'ms',
          "libvirt's block-job event to the host unit acting on it",
        )
        .record(Math.max(0, ms), labels);
    },
  };
}
