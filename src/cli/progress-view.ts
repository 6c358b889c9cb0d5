// Live progress of a workflow: the `progress` query, with the copy position of a running block job taken
// from the pending wait activity's heartbeat details (the workflow deliberately records only stage
// changes, not per-second progress, in its history). removeSnapshot shows one bar per disk (its
// mergeDisk children).
import type { Client, WorkflowHandle } from '@temporalio/client';
import type { Progress } from '../schemas/progress';
import { Stage } from '../schemas/progress';
import { formatBytes, formatDuration } from './output';
import type { AnyProgress, CliStatus } from './workflows';
import { describeOrUsage, heartbeatBytes, mapStatus, queryProgress } from './workflows';

type DiskProgress = NonNullable<AnyProgress['disks']>[number];

export interface Observation {
  workflowId: string;
  type: string;
  status: CliStatus;
  progress: AnyProgress | null;
}

/** Copy rates from successive heartbeat positions (heartbeats reach the server every few seconds). */
export class RateMeter {
  private readonly samples = new Map<string, Array<{ t: number; cur: number }>>();

  /** Records a position; returns bytes/s over the last ~20 s once two distinct positions were seen. */
  observe(key: string, cur: number, now = Date.now()): { rate: number | null; at: number } {
    const list = this.samples.get(key) ?? [];
    const last = list[list.length - 1];
    if (last && cur < last.cur) list.length = 0; // a new job: start over
    if (!last || cur !== last.cur || list.length === 0) list.push({ t: now, cur });
    while (list.length > 2 && now - list[0]!.t > 20_000) list.shift();
    this.samples.set(key, list);
    const first = list[0]!;
    const newest = list[list.length - 1]!;
    const dt = (newest.t - first.t) / 1000;
    return { rate: dt > 0 ? (newest.cur - first.cur) / dt : null, at: newest.t };
  }
}

function withLiveBytes<P extends Progress>(
  p: P,
  hb: { cur: number; end: number },
  meter: RateMeter,
  key: string,
): P {
  const { rate, at } = meter.observe(key, hb.cur);
  const bytesPerSecond = rate && rate > 0 ? Math.round(rate) : p.bytesPerSecond;
  const sinceSample = (Date.now() - at) / 1000;
  const etaSeconds =
    bytesPerSecond && bytesPerSecond > 0
      ? Math.max(0, Math.round((hb.end - hb.cur) / bytesPerSecond - sinceSample))
      : p.etaSeconds;
  return { ...p, cur: hb.cur, end: hb.end, bytesPerSecond, etaSeconds };
}

/** One look at the workflow: status, progress query, live bytes of running block jobs. */
export async function observe(
  client: Client,
  handle: WorkflowHandle,
  meter: RateMeter,
): Promise<Observation> {
  const d = await describeOrUsage(handle);
  const status = mapStatus(d.status.name);
  let progress = await queryProgress(client, handle);
  if (progress && status === 'RUNNING') {
    if (progress.disks) {
      const children = (d.raw.pendingChildren ?? []).filter((c) => c.workflowTypeName === 'mergeDisk');
      const disks = await Promise.all(
        progress.disks.map(async (disk): Promise<DiskProgress> => {
          const child = children.find((c) => c.workflowId?.endsWith(`:${disk.imageId}`));
          if (!child?.workflowId) return disk;
          const ch = client.workflow.getHandle(child.workflowId);
          const [cd, cp] = await Promise.all([ch.describe().catch(() => null), queryProgress(client, ch)]);
          let merged: DiskProgress = cp
            ? { ...disk, ...cp, imageId: disk.imageId, target: disk.target }
            : disk;
          const hb = cd && merged.stage === 'copying' ? heartbeatBytes(client, cd.raw) : null;
          if (hb) merged = withLiveBytes(merged, hb, meter, child.workflowId);
          return merged;
        }),
      );
      const rates = disks.map((x) => x.bytesPerSecond ?? 0);
      const cur = disks.reduce((s, x) => s + x.cur, 0);
      const end = disks.reduce((s, x) => s + x.end, 0);
      const rate = rates.reduce((a, b) => a + b, 0);
      const least = disks.reduce<DiskProgress | undefined>(
        (a, b) => (!a || STAGES.indexOf(b.stage) < STAGES.indexOf(a.stage) ? b : a),
        undefined,
      );
      progress = {
        ...progress,
        ...(least && !['done', 'failed', 'cancelled'].includes(progress.stage) ? { stage: least.stage } : {}),
        cur,
        end,
        bytesPerSecond: rate > 0 ? rate : progress.bytesPerSecond,
        etaSeconds: rate > 0 ? Math.max(...disks.map((x) => x.etaSeconds ?? 0)) : progress.etaSeconds,
        disks,
      };
    } else if (progress.stage === 'copying') {
      const hb = heartbeatBytes(client, d.raw);
      if (hb) progress = withLiveBytes(progress, hb, meter, handle.workflowId);
    }
  }
  return { workflowId: handle.workflowId, type: d.type, status, progress };
}

const STAGES: readonly string[] = Stage.options;

const BAR = 28;
function bar(cur: number, end: number, done: boolean): string {
  const frac = done ? 1 : end > 0 ? Math.min(1, cur / end) : 0;
  const full = Math.round(frac * BAR);
  return `[${'#'.repeat(full)}${'.'.repeat(BAR - full)}] ${String(Math.floor(frac * 100)).padStart(3)}%`;
}

function line(label: string, p: Progress): string {
  const done = p.stage === 'done';
  const parts = [label, p.stage.padEnd(10), bar(p.cur, p.end, done)];
  if (p.end > 0) parts.push(`${formatBytes(done ? p.end : p.cur)} / ${formatBytes(p.end)}`);
  if (p.stage === 'copying') {
    parts.push(p.bytesPerSecond ? `${formatBytes(p.bytesPerSecond)}/s` : '-/s');
    parts.push(`ETA ${p.etaSeconds !== null ? formatDuration(p.etaSeconds) : '-'}`);
  }
  if (p.mode) parts.push(p.mode);
  return parts.join('  ');
}

export function renderLines(o: Observation): string[] {
  const head = `${o.type}${o.status === 'RUNNING' ? '' : ` ${o.status}`}`;
  if (!o.progress) return [`${head}: no progress available`];
  const disks = o.progress.disks ?? [];
  const width = Math.max(head.length, ...disks.map((d) => d.target.length + 2));
  const lines = [line(head.padEnd(width), o.progress)];
  for (const d of disks) lines.push(line(`  ${d.target}`.padEnd(width), d));
  return lines;
}

/** Redraws the bars in place on a terminal; elsewhere prints a line on each stage change or 10 % step. */
export class ProgressView {
  private drawn = 0;
  private lastKey = '';
  constructor(private readonly stream: NodeJS.WriteStream) {}

  get isTty(): boolean {
    return this.stream.isTTY === true;
  }

  update(o: Observation): void {
    const lines = renderLines(o);
    if (this.isTty) {
      const cols = this.stream.columns;
      const width = cols && cols > 20 ? cols - 1 : 200;
      let out = this.drawn > 0 ? `\x1b[${this.drawn}F` : '';
      for (const l of lines) out += `\x1b[2K${l.slice(0, width)}\n`;
      this.stream.write(out);
      this.drawn = lines.length;
      return;
    }
    const p = o.progress;
    const key = p
      ? [p, ...(p.disks ?? [])]
          .map((x) => `${x.stage}:${x.end > 0 ? Math.floor((10 * x.cur) / x.end) : 0}`)
          .join(',') + o.status
      : o.status;
    if (key === this.lastKey) return;
    this.lastKey = key;
    for (const l of lines) this.stream.write(l + '\n');
  }
}

/**
 * The look after the close: its status only (one describe). The `progress` query of a closed workflow makes
 * a worker replay its whole history, which would delay `--wait` by a replay; the last progress seen stands,
 * with the stage the status gives (the caller reads the outcome from the result).
 */
async function closedLook(handle: WorkflowHandle, last: Observation): Promise<Observation | null> {
  const status = mapStatus((await describeOrUsage(handle)).status.name);
  const p = last.progress;
  if (status === 'RUNNING' || !p) return null;
  const stage = status === 'COMPLETED' ? 'done' : status === 'CANCELLED' ? 'cancelled' : 'failed';
  const cur = status === 'COMPLETED' ? p.end : p.cur;
  return { ...last, status, progress: { ...p, stage, cur, etaSeconds: status === 'COMPLETED' ? 0 : null } };
}

/** Shows the workflow's progress until it closes; returns the last observation. */
export async function follow(
  client: Client,
  handle: WorkflowHandle,
  view: ProgressView | null,
  intervalMs = 500,
): Promise<Observation> {
  const meter = new RateMeter();
  // The server answers this long poll the moment the workflow closes: the wait ends then, not at the next
  // tick. Its outcome is read by observe(); a failure here only wakes the loop.
  let closed = false;
  const close = handle.result().then(
    () => void (closed = true),
    () => void (closed = true),
  );
  let last: Observation | undefined;
  for (;;) {
    const o = (closed && last && (await closedLook(handle, last))) || (await observe(client, handle, meter));
    last = o;
    view?.update(o);
    if (o.status !== 'RUNNING') return o;
    // Closed since observe() looked: look again almost at once.
    let timer: NodeJS.Timeout | undefined;
    const tick = new Promise((r) => (timer = setTimeout(r, closed ? 20 : intervalMs)));
    await Promise.race([closed ? tick : close, tick]);
    clearTimeout(timer);
  }
}
