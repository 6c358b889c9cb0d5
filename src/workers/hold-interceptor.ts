// Deterministic breakpoints for failure injection (test/faults, docs/failure-model.md). Inert unless the
// worker runs with LIVEMERGE_HOLD_DIR set: production agents never install it, and holdPoint() is then a
// no-op that does not even touch the file system.
//
// With LIVEMERGE_HOLD_DIR=<dir>, before an activity of type T runs:
//   - if `<dir>/hold-T` exists, the worker writes `<dir>/held-T` (JSON: pid, workflowId, activityId,
//     attempt) and waits, heartbeating, polling every 50 ms, until `hold-T` is removed; then it removes
//     `held-T` and runs the activity. A harness thus stops a merge exactly *before* a step: it creates
//     `hold-T`, waits for `held-T` to appear, injects its fault (kills this very process, restarts
//     libvirtd, the Temporal server, destroys the VM, ...) and removes `hold-T` when it wants the merge to
//     go on. An activity cancelled while held fails with the cancellation, as it would while running.
//   - holdPoint(name) is the same breakpoint inside an activity, for a stop in the middle of one. The only
//     one production code carries: `deleteVolumes-next`, before each volume of deleteVolumes but the
//     first (so a crash after the first unlink and before the second is reproducible).
// The hold heartbeats while it waits, so the held attempt stays alive for the server (heartbeat timeouts)
// until the harness kills its process.
import fs from 'node:fs';
import path from 'node:path';
import { Context } from '@temporalio/activity';
import type { ActivityInboundCallsInterceptor, ActivityInterceptorsFactory } from '@temporalio/worker';

const POLL_MS = 50;

function activityContext(): Context | undefined {
  try {
    return Context.current();
  } catch {
    return undefined; // not inside an activity (a direct call from a test)
  }
}

/** Waits while `<LIVEMERGE_HOLD_DIR>/hold-<name>` exists; returns at once when the env var is unset. */
export async function holdPoint(name: string, dir = process.env.LIVEMERGE_HOLD_DIR): Promise<void> {
  if (!dir) return;
  const hold = path.join(dir, `hold-${name}`);
  if (!fs.existsSync(hold)) return;
  const ctx = activityContext();
  const held = path.join(dir, `held-${name}`);
  const info = ctx?.info;
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
      ctx?.heartbeat(info?.heartbeatDetails as unknown);
      const tick = new Promise<void>((r) => setTimeout(r, POLL_MS));
      await (ctx ? Promise.race([tick, ctx.cancelled]) : tick);
    }
  } finally {
    fs.rmSync(held, { force: true });
  }
}

/** The activity breakpoint: holdPoint(<activity type>) before the activity runs. */
export function holdInterceptors(dir: string): ActivityInterceptorsFactory {
  const inbound: ActivityInboundCallsInterceptor = {
    async execute(input, next) {
      await holdPoint(Context.current().info.activityType, dir);
      return await next(input);
    },
  };
  return () => ({ inbound });
}

/** The hold interceptor when LIVEMERGE_HOLD_DIR is set, else none (what the workers install). */
export function holdInterceptorsFromEnv(env: NodeJS.ProcessEnv = process.env): ActivityInterceptorsFactory[] {
  return env.LIVEMERGE_HOLD_DIR ? [holdInterceptors(env.LIVEMERGE_HOLD_DIR)] : [];
}
