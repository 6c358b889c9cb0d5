// Deterministic breakpoints for failure injection (test/faults, docs/failure-model.md): test machinery,
// kept apart from the product modules. Workers install it only when LIVEMERGE_HOLD_DIR is set; otherwise
// activities get the no-op breakpoint of src/activities/breakpoints.ts.
//
// With LIVEMERGE_HOLD_DIR=<dir>:
//   - before an activity of type T runs: if `<dir>/hold-T` (or `hold-T@<workflowId>`) exists, the worker writes `<dir>/held-T`
//     (JSON: pid, workflowId, activityId, attempt) and waits, polling every 50 ms, until
//     `hold-T` is removed; then it removes `held-T` and runs the activity. A harness thus stops a merge
//     exactly *before* a step: it creates `hold-T`, waits for `held-T`, injects its fault (kills this
//     very process, restarts libvirtd, the Temporal server, destroys the VM, ...) and removes `hold-T`.
//   - a breakpoint NAME inside an activity (the activity's deps.breakpoint) holds the same way on
//     `hold-NAME`: a stop in the middle of an activity (after the block commit was issued, after the
//     pivot call returned, inside an image lock, between two deletions).
// An activity cancelled while held fails with the cancellation, as it would while running, unless the
// breakpoint is past its point of no return (cancellable: false). While it waits, the worker's liveness
// interceptor keeps heartbeating the activity's own last details, so the held attempt stays alive for the
// server until the harness kills its process.
import fs from 'node:fs';
import path from 'node:path';
import { Context } from '@temporalio/activity';
import type { ActivityInboundCallsInterceptor, ActivityInterceptorsFactory } from '@temporalio/worker';
import type { Breakpoint } from '../activities/breakpoints';

const POLL_MS = 50;

function activityContext(): Context | undefined {
  try {
    return Context.current();
  } catch {
    return undefined; // not inside an activity (a direct call from a test)
  }
}

/** Waits while `<dir>/hold-<name>` (or `hold-<name>@<workflowId>`, for one workflow only) exists. */
async function holdPoint(dir: string, name: string, cancellable = true): Promise<void> {
  const ctx = activityContext();
  const info = ctx?.info;
  const wf = info?.workflowExecution?.workflowId;
  const hold = [path.join(dir, `hold-${name}`), ...(wf ? [path.join(dir, `hold-${name}@${wf}`)] : [])].find(
    (f) => fs.existsSync(f),
  );
  if (!hold) return;
  const held = path.join(dir, `held-${name}`);
  fs.writeFileSync(
    held,
    JSON.stringify({
      pid: process.pid,
      workflowId: info?.workflowExecution?.workflowId ?? null,
      activityId: info?.activityId ?? null,
      attempt: info?.attempt ?? null,
      at: new Date().toISOString(),
    }) + '\n',
  );
  try {
    while (fs.existsSync(hold)) {
      const tick = new Promise<void>((r) => setTimeout(r, POLL_MS));
      await (ctx && cancellable ? Promise.race([tick, ctx.cancelled]) : tick);
    }
  } finally {
    fs.rmSync(held, { force: true });
  }
}

/** The breakpoint activities get when LIVEMERGE_HOLD_DIR is set, else undefined (the no-op). */
export function breakpointFromEnv(env: NodeJS.ProcessEnv = process.env): Breakpoint | undefined {
  const dir = env.LIVEMERGE_HOLD_DIR;
  return dir ? (name, opts) => holdPoint(dir, name, opts?.cancellable ?? true) : undefined;
}

/** holdPoint(<activity type>) before each activity runs, when LIVEMERGE_HOLD_DIR is set; else none. */
export function holdInterceptorsFromEnv(env: NodeJS.ProcessEnv = process.env): ActivityInterceptorsFactory[] {
  const dir = env.LIVEMERGE_HOLD_DIR;
  if (!dir) return [];
  const inbound: ActivityInboundCallsInterceptor = {
    async execute(input, next) {
      await holdPoint(dir, Context.current().info.activityType);
      return await next(input);
    },
  };
  return [() => ({ inbound })];
}
