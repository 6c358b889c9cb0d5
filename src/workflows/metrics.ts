// The merge metrics of workflow code (src/common/metrics.ts). The SDK's workflow meter records nothing while
// a history replays and issues no commands, so a merge is counted once, when it really ends, and
// replay of earlier histories is unchanged.
import { isCancellation, metricMeter, workflowInfo } from '@temporalio/workflow';
import type { MergeLabels } from '../common/metrics';
import { livemergeMetrics } from '../common/metrics';

/** The labels of one merge workflow, filled in as it learns them; `ended` records it once. */
export class MergeMetric {
  readonly labels: MergeLabels = { kind: 'unknown', mode: 'unknown', direction: 'unknown' };
  private done = false;

  /** Runs the workflow body and records its outcome and run time however it ends. */
  async around<T>(body: () => Promise<T>): Promise<T> {
    try {
      const result = await body();
      this.ended('completed');
      return result;
    } catch (err) {
      this.ended(isCancellation(err) ? 'cancelled' : 'failed');
      throw err;
    }
  }

  private ended(outcome: 'completed' | 'failed' | 'cancelled'): void {
    if (this.done) return;
    this.done = true;
    // Workflow time: the start and end of this run as the history records them.
    const seconds = (Date.now() - workflowInfo().runStartTime.getTime()) / 1000;
    livemergeMetrics(metricMeter).merge({ ...this.labels, outcome }, seconds);
  }
}
