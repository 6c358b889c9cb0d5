// Starting, attaching to and watching livemerge workflows from the CLI.
import { isDeepStrictEqual } from 'node:util';
import type { WorkflowHandle } from '@temporalio/client';
import { Client, Connection, WorkflowFailedError, WorkflowNotFoundError } from '@temporalio/client';
import {
  ApplicationFailure,
  WorkflowExecutionAlreadyStartedError,
  arrayFromPayloads,
} from '@temporalio/common';
import type { temporal } from '@temporalio/proto';
import { operationStartOptions } from '../common/history-round';
import { ENGINE_TASK_QUEUE } from '../common/task-queues';
import type { Config } from '../config';
import { temporalConnectionOptions } from '../config';
import type { Progress, RemoveSnapshotProgress } from '../schemas/progress';
import { OperationFailed, UsageError, info, workflowUiLink } from './output';

export type CliStatus = 'RUNNING' | 'COMPLETED' | 'FAILED' | 'CANCELLED' | 'TERMINATED';
export type AnyProgress = Progress & { disks?: RemoveSnapshotProgress['disks'] };

export async function withTemporal<T>(config: Config, fn: (client: Client) => Promise<T>): Promise<T> {
  let connection: Connection;
  try {
    connection = await Connection.connect({ ...temporalConnectionOptions(config), connectTimeout: '5s' });
  } catch (err) {
    throw new OperationFailed(
      `cannot reach the Temporal server at ${config.temporalAddress} (is \`livemerge dev up\` running?): ` +
        (err instanceof Error ? err.message : String(err)),
    );
  }
  try {
    return await fn(new Client({ connection, namespace: config.temporalNamespace }));
  } finally {
    await connection.close();
  }
}

export function mapStatus(name: string): CliStatus {
  switch (name) {
    case 'RUNNING':
    case 'COMPLETED':
    case 'FAILED':
    case 'CANCELLED':
    case 'TERMINATED':
      return name;
    case 'CONTINUED_AS_NEW':
      return 'RUNNING';
    default:
      return 'FAILED'; // TIMED_OUT and anything newer: the workflow did not complete
  }
}

/** The `type` of the first ApplicationFailure in an error's cause chain (WorkflowFailedError.cause ...). */
export function failureTypeOf(err: unknown): string | undefined {
  for (let e: unknown = err; e instanceof Error; e = e.cause) {
    if (e instanceof ApplicationFailure && e.type) return e.type;
  }
  return undefined;
}

/** The innermost message of a failure chain: the one that says what happened. */
export function failureMessageOf(err: unknown): string {
  let msg = err instanceof Error ? err.message : String(err);
  for (let e: unknown = err; e instanceof Error; e = e.cause) if (e.message) msg = e.message;
  return msg;
}

export interface StartOptions<T> {
  workflowType: string;
  workflowId: string;
  input: T;
  /** Two requests are "the same" when their normalised forms are deep-equal. */
  normalise: (input: unknown) => unknown;
  /** What to call a different request in the error message. */
  what: string;
  /** The VM as the CLI found it: the workflow starts with its search attributes and the history round. */
  vm: { vmId: string; hostId: string };
}

/**
 * Starts the workflow; when one with the same id is already running, attaches to it if it was started with
 * the same request (from the input of its history's first event), and refuses (exit 2) if not.
 */
export async function startOrAttach<T>(
  client: Client,
  o: StartOptions<T>,
): Promise<{ handle: WorkflowHandle; attached: boolean }> {
  try {
    const handle = await client.workflow.start(o.workflowType, {
      taskQueue: ENGINE_TASK_QUEUE,
      workflowId: o.workflowId,
      args: [o.input],
      ...operationStartOptions(o.vm.vmId, o.vm.hostId),
    });
    return { handle, attached: false };
  } catch (err) {
    if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
  }
  const current = await client.workflow.getHandle(o.workflowId).describe();
  const running = client.workflow.getHandle(o.workflowId, current.runId);
  const started = (await running.fetchHistory()).events?.[0]?.workflowExecutionStartedEventAttributes;
  const theirs = arrayFromPayloads(
    client.options.loadedDataConverter.payloadConverter,
    started?.input?.payloads ?? [],
  )[0];
  if (
    started?.workflowType?.name !== o.workflowType ||
    !isDeepStrictEqual(o.normalise(theirs), o.normalise(o.input))
  )
    throw new UsageError(
      `${o.what} is already running as workflow ${o.workflowId} with a different request ` +
        `(${started?.workflowType?.name ?? '?'} ${JSON.stringify(theirs)}); wait for it or cancel it first`,
    );
  return { handle: running, attached: true };
}

/** "workflow <id> started|attached" and its UI link: on stderr with --json, so stdout stays pure JSON. */
export function announce(config: Config, json: boolean | undefined, workflowId: string, verb: string): void {
  info(json, `workflow ${workflowId} ${verb}`);
  info(json, `  ${workflowUiLink(config.temporalUiUrl, config.temporalNamespace, workflowId)}`);
}

export interface Outcome {
  status: CliStatus;
  result?: unknown;
  failureType?: string;
  message?: string;
}

/** Waits for the workflow to close and says how it ended. */
export async function outcomeOf(handle: WorkflowHandle): Promise<Outcome> {
  try {
    return { status: 'COMPLETED', result: await handle.result() };
  } catch (err) {
    if (!(err instanceof WorkflowFailedError)) throw err;
    const d = await handle.describe();
    const failureType = failureTypeOf(err.cause);
    return {
      status: mapStatus(d.status.name),
      ...(failureType ? { failureType } : {}),
      message: failureMessageOf(err),
    };
  }
}

/** The `progress` query; null when the workflow has none or no worker answers within a few seconds. */
export async function queryProgress(client: Client, handle: WorkflowHandle): Promise<AnyProgress | null> {
  try {
    return await client.connection.withDeadline(Date.now() + 10_000, () =>
      handle.query<AnyProgress>('progress'),
    );
  } catch {
    return null;
  }
}

export async function describeOrUsage(handle: WorkflowHandle) {
  try {
    return await handle.describe();
  } catch (err) {
    if (err instanceof WorkflowNotFoundError)
      throw new UsageError(`no workflow ${JSON.stringify(handle.workflowId)}`);
    throw err;
  }
}

type DescribeResponse = temporal.api.workflowservice.v1.IDescribeWorkflowExecutionResponse;

/** `{cur, end}` from the heartbeat details of a pending activity (the block-job wait heartbeats them). */
export function heartbeatBytes(client: Client, raw: DescribeResponse): { cur: number; end: number } | null {
  for (const pa of raw.pendingActivities ?? []) {
    const payloads = pa.heartbeatDetails?.payloads;
    if (!payloads?.length) continue;
    const d = arrayFromPayloads(client.options.loadedDataConverter.payloadConverter, payloads)[0] as
      { cur?: unknown; end?: unknown } | undefined;
    if (typeof d?.cur === 'number' && typeof d.end === 'number') return { cur: d.cur, end: d.end };
  }
  return null;
}
