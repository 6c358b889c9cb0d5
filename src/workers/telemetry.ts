// A worker process's telemetry (docs/operations.md): the SDK's Runtime, installed once before any
// connection, with a Prometheus exporter on LIVEMERGE_METRICS_ADDRESS (the SDK's metrics and livemerge's own,
// src/common/metrics.ts) and a logger that writes one JSON object per line to stderr, the SDK core's own
// log lines forwarded into it.
import type { LogEntry } from '@temporalio/worker';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { METRIC_BUCKETS } from '../common/metrics';
import type { Config } from '../config';

export class TelemetryError extends Error {
  override readonly name = 'TelemetryError';
}

export function installTelemetry(
  config: Pick<Config, 'metricsAddress'>,
  write: (line: string) => void = (line) => void process.stderr.write(line),
): void {
  try {
    Runtime.install({
      logger: new DefaultLogger('INFO', (entry) => write(jsonLogLine(entry))),
      telemetryOptions: {
        // Core's records go through the same logger, so every line of the process is JSON.
        logging: { filter: { core: 'WARN', other: 'ERROR' }, forward: {} },
        ...(config.metricsAddress
          ? {
              metrics: {
                prometheus: { bindAddress: config.metricsAddress, histogramBucketOverrides: METRIC_BUCKETS },
              },
            }
          : {}),
      },
    });
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new TelemetryError(
      `the Temporal runtime did not start (LIVEMERGE_METRICS_ADDRESS=${config.metricsAddress ?? ''}): ${why}`,
      { cause: err },
    );
  }
}

/**
 * One log record as a JSON line: time, level, message, then the SDK's metadata (workflowId, runId, activityType,
 * …, and vmId from log-context.ts). Activities' `workflowRunId` is named `runId` like workflows'; the task
 * token is left out (long, and useless to a reader).
 */
export function jsonLogLine(entry: LogEntry): string {
  const { workflowRunId, taskToken: _token, ...meta } = entry.meta ?? {};
  const record: Record<string, unknown> = {
    time: new Date(Number(entry.timestampNanos / 1_000_000n)).toISOString(),
    level: entry.level,
    message: entry.message,
    ...(workflowRunId !== undefined && meta.runId === undefined ? { runId: workflowRunId } : {}),
    ...meta,
  };
  return `${safeStringify(record)}\n`;
}

function safeStringify(value: unknown): string {
  const seen = new WeakSet<object>();
  return JSON.stringify(value, (_key, v: unknown) => {
    if (typeof v === 'bigint') return v.toString();
    if (v instanceof Error) {
      const cause: unknown = v.cause;
      return { name: v.name, message: v.message, stack: v.stack, ...(cause !== undefined ? { cause } : {}) };
    }
    if (typeof v === 'object' && v !== null) {
      if (seen.has(v)) return '[circular]';
      seen.add(v);
    }
    return v;
  });
}
