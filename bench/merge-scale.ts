// How does livemerge compare with its anchor, bare `virsh blockcommit`, and how does it scale? One run prints
// all three side by side (issue 13, item 5), in this order (so that (b)'s many VMs are not on the host during
// the others: livemerge's plan and deletion checks scan every domain on the host):
//  (a) end to end: a TCG VM with a raw base and one live snapshot whose active layer holds N MiB; livemerge's
//      removeSnapshot (start → close, from the client) and `livemerge snapshot remove --wait` (the process)
//      vs `virsh blockcommit DOM vda --active --pivot --wait` on an identical chain built outside livemerge
//      (another VM, its raw base in a temp dir, its overlay made by `virsh snapshot-create-as --disk-only
//      --no-metadata`). The data goes into both active layers through the guest device (HMP qemu-io), so
//      both are written with the VM's cache=none. For each size it logs where each round's `--wait` time went
//      (CliPhases).
//  (c) cost vs chain length: one mergeDisk from the base over L layers (active: base + L−1 snapshots, the
//      leaf committed with pivot; intermediate: base + L snapshots, the L layers below the leaf) vs 2 layers;
//      history events and activities per merge (the mergeDisk workflow and its children, `vm-lock:*`
//      included) and wall time, vs `virsh blockcommit --base B --top T [--active --pivot] --wait`.
//  (b) N concurrent merges on one host (paused VMs, one small layer each): N removeSnapshot workflows at once
//      vs N `virsh blockcommit --active --pivot --wait` processes at once; wall time until all closed, peak
//      RSS of the engine worker, the host agent, libvirtd and the Temporal server, activity latency
//      (scheduled → closed per activity type, from every history: parents and children), activity
//      timeouts, failures and retries (attempt > 1, with the failure of the attempt before).
// Besides virsh, every anchor also runs through libvirt's C API on this process's own connection, woken by
// the block job events: `virsh ... --wait` polls the job every 500 ms, so for small jobs its time is mostly
// that poll (about 0.55–0.6 s for anything that finishes within the first half second).
//
// It runs against a `livemerge dev up` stack (the engine worker and the host agent are separate processes
// there, their pids from the stack's pid files); when none is running it starts one (`bin/livemerge.cjs dev
// up`, with this environment: e.g. TEMPORAL_ADDRESS=127.0.0.1:7263 LIVEMERGE_UI_PORT=8263 for a stack of
// its own) and stops it at the end (`dev down`). VMs, storage-domain files and temp files are removed at
// the end, also after a failure or ^C.
//
// Usage: npx tsx bench/merge-scale.ts --quick   (sizes 64 MiB, N = 1,8,32, chains 2,10, 2 rounds: ~6 min)
//        npx tsx bench/merge-scale.ts           (full: sizes 64,512,1024 MiB, N = 1,8,32,100, 3 rounds)
//        options: --sizes 64,512 --concurrency 1,8 --chains 2,10 --reps 3 --layer-mib 8 --chain-mib 4
//                 --batch 8 (VMs defined/set up at a time) --no-cli --skip a,b,c
//                 --profile DIR (issue 13: profile the stack it starts; an error when a stack already runs)
//                 --engines K (K engine workers on the queue: the stack's and K-1 more that it starts and stops;
//                 each one's RSS is sampled as "engine", "engine 2", …)
// --profile DIR starts the stack with NODE_OPTIONS="--require bench/cpu-prof-preload.cjs --require
// bench/eld-preload.cjs" (Node 20 refuses --cpu-prof in NODE_OPTIONS; the preloads start the same V8
// profiler through node:inspector, and an event-loop-delay monitor) and LIVEMERGE_METRICS_ADDRESS (default
// 127.0.0.1:<UI port + 1000>: the engine serves on it, the agent on the next port), all passed through by
// `dev up` to the engine worker and the host agent. It writes DIR/phase ("N<n>" during the n concurrent
// removals, "after-N<n>" after them), so each process writes one .cpuprofile and event-loop-delay figures per
// phase, and DIR/pids.json (which pid is which part); for each N it adds the CPU seconds of each process
// during the removals (utime+stime, /proc/<pid>/stat; the workers' by thread name too), the machine's busy
// share and the SDK's RPC counts by operation (the workers' temporal_request metrics). Read the profiles with
// `npx tsx bench/profile-summary.ts DIR`.
import { execFile, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify, parseArgs } from 'node:util';
import { Client, Connection } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { testVmXml } from '../src/cli/dev/vm-xml';
import { operationStartOptions } from '../src/common/history-round';
import { ENGINE_TASK_QUEUE } from '../src/common/task-queues';
import { REPO_ROOT, loadConfig, temporalConnectionOptions } from '../src/config';
import { pollerIdentities, waitFor } from '../src/devstack/health';
import { ProcessRegistry } from '../src/devstack/processes';
import { DomainUndefineFlags, LibvirtConnection, hmpQemuIo } from '../src/libvirt';
import type { Domain } from '../src/libvirt';
import type { CreateSnapshotResult, RemoveSnapshotResult } from '../src/schemas/results';
import { StorageDomain } from '../src/storage/storage-domain';
import { apiCommit } from './api-commit';
import { eventMs } from './history-events';

const exec = promisify(execFile);
const MiB = 1 << 20;
const CLI = path.join(REPO_ROOT, 'bin', 'livemerge.cjs');

// ---------------------------------------------------------------------------------------------- options

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    sizes: { type: 'string' },
    concurrency: { type: 'string' },
    chains: { type: 'string' },
    reps: { type: 'string' },
    'layer-mib': { type: 'string' },
    'chain-mib': { type: 'string' },
    batch: { type: 'string' },
    'no-cli': { type: 'boolean', default: false },
    skip: { type: 'string', default: '' },
    profile: { type: 'string' },
    engines: { type: 'string' },
  },
  strict: true,
});
const list = (v: string | undefined, dflt: number[]): number[] =>
  v === undefined
    ? dflt
    : v.split(',').map((x) => {
        const n = Number(x.trim());
        if (!Number.isInteger(n) || n <= 0) throw new Error(`not a positive integer: ${JSON.stringify(x)}`);
        return n;
      });
const opts = {
  sizes: list(args.sizes, args.quick ? [64] : [64, 512, 1024]),
  concurrency: list(args.concurrency, args.quick ? [1, 8, 32] : [1, 8, 32, 100]),
  chains: list(args.chains, [2, 10]),
  reps: list(args.reps, [args.quick ? 2 : 3])[0]!,
  layerMiB: list(args['layer-mib'], [8])[0]!,
  chainMiB: list(args['chain-mib'], [4])[0]!,
  batch: list(args.batch, [8])[0]!,
  cli: !args['no-cli'],
  skip: new Set(args.skip.split(',').filter(Boolean)),
  profile: args.profile === undefined ? undefined : path.resolve(args.profile),
  engines: list(args.engines, [1])[0]!,
};

// ---------------------------------------------------------------------------------------------- helpers

const log = (line: string): void =>
  void process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${line}\n`);
function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}
const median = (xs: number[]): number => percentile(xs, 50);
const secs = (ms: number): string => (Number.isNaN(ms) ? '–' : (ms / 1000).toFixed(2));
const spread = (xs: number[]): string =>
  xs.length <= 1
    ? secs(xs[0] ?? NaN)
    : `${secs(median(xs))} (${secs(Math.min(...xs))}–${secs(Math.max(...xs))})`;
const ratio = (a: number, b: number): string => (b > 0 ? `${(a / b).toFixed(1)}×` : '–');
async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; value: T }> {
  const t0 = performance.now();
  const value = await fn();
  return { ms: performance.now() - t0, value };
}
/** Set by ^C/SIGTERM: the run stops starting new work while the clean-up runs. */
let aborted = false;
const checkAborted = (): void => {
  if (aborted) throw new Error('aborted');
};

/** Runs fn over items, at most `size` at a time. */
async function inBatches<T, R>(
  items: T[],
  size: number,
  fn: (x: T, i: number) => Promise<R>,
  abortable = true,
): Promise<R[]> {
  const out: R[] = new Array<R>(items.length);
  let next = 0;
  const lanes = Array.from({ length: Math.min(size, items.length) }, async () => {
    for (let i = next++; i < items.length; i = next++) {
      if (abortable) checkAborted();
      out[i] = await fn(items[i]!, i);
    }
  });
  await Promise.all(lanes);
  return out;
}

// ---------------------------------------------------------------------------------------------- processes

interface Sampled {
  name: string;
  pid: number;
}
/**
 * The environment of the stack's engine worker (what `dev up` gave it: the hosts, the data dir), for another
 * engine beside it; without its metrics address, which only one process can bind.
 */
function engineEnv(pid: number | undefined): NodeJS.ProcessEnv {
  if (pid === undefined) throw new Error('--engines: the stack has no engine worker to copy');
  const env: NodeJS.ProcessEnv = {};
  for (const kv of fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0')) {
    const i = kv.indexOf('=');
    if (i > 0) env[kv.slice(0, i)] = kv.slice(i + 1);
  }
  delete env.LIVEMERGE_METRICS_ADDRESS;
  return env;
}

/** kB values of /proc/PID/status (VmRSS, VmHWM), or undefined when the process is gone. */
function procStatus(pid: number): { rss: number; hwm: number } | undefined {
  try {
    const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(s)?.[1] ?? NaN);
    return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
  } catch {
    return undefined;
  }
}
/** Polls VmRSS of each process every 100 ms; stop() gives each one's peak in MiB over the window. */
function rssSampler(procs: Sampled[]): { stop: () => Record<string, number> } {
  const peak: Record<string, number> = {};
  const sample = () => {
    for (const p of procs) {
      const s = procStatus(p.pid);
      if (s) peak[p.name] = Math.max(peak[p.name] ?? 0, s.rss / 1024);
    }
  };
  sample();
  const timer = setInterval(sample, 100);
  return {
    stop: () => {
      clearInterval(timer);
      sample();
      return peak;
    },
  };
}

async function pgrep(pattern: string): Promise<number | undefined> {
  try {
    const { stdout } = await exec('pgrep', ['-o', '-f', pattern]);
    return Number(stdout.trim().split('\n')[0]) || undefined;
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------- --profile

const PRELOADS = ['cpu-prof-preload.cjs', 'eld-preload.cjs'].map((f) => path.join(REPO_ROOT, 'bench', f));
/** The environment `dev up` gets with --profile DIR: every node process it starts profiles itself. */
function profileEnv(dir: string, metricsAddress: string): NodeJS.ProcessEnv {
  const nodeOptions = [process.env.NODE_OPTIONS, ...PRELOADS.map((f) => `--require ${f}`)];
  return {
    ...process.env,
    NODE_OPTIONS: nodeOptions.filter(Boolean).join(' '),
    LM_CPU_PROF_DIR: dir,
    LM_ELD_DIR: dir,
    LIVEMERGE_METRICS_ADDRESS: metricsAddress,
  };
}
const stat = (file: string): string[] | undefined => {
  try {
    const s = fs.readFileSync(file, 'utf8');
    return s.slice(s.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
};
/** utime + stime in clock ticks (fields 14 and 15 of /proc/<pid>/stat), or undefined when gone. */
function cpuTicks(pid: number, task?: number): number | undefined {
  const f = stat(task === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${task}/stat`);
  return f ? Number(f[11]) + Number(f[12]) : undefined;
}
/** cutime + cstime (fields 16 and 17): the CPU of the children it has waited for (qemu-img runs). */
function childTicks(pid: number): number | undefined {
  const f = stat(`/proc/${pid}/stat`);
  return f ? Number(f[13]) + Number(f[14]) : undefined;
}
/** utime + stime of each thread of pid, summed by thread name (comm). */
function threadTicks(pid: number): Record<string, number> {
  const out: Record<string, number> = {};
  let tasks: string[] = [];
  try {
    tasks = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const t of tasks) {
    const ticks = cpuTicks(pid, Number(t));
    let comm = '?';
    try {
      comm = Number(t) === pid ? 'main' : fs.readFileSync(`/proc/${pid}/task/${t}/comm`, 'utf8').trim();
    } catch {
      continue;
    }
    if (ticks !== undefined) out[comm] = (out[comm] ?? 0) + ticks;
  }
  return out;
}
/** QEMU processes: all of them, and those whose guest name starts with `prefix`. */
function qemuPids(prefix: string): { all: number[]; ours: number[] } {
  const all: number[] = [];
  const ours: number[] = [];
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    let cmd: string;
    try {
      cmd = fs.readFileSync(`/proc/${e}/cmdline`, 'utf8');
    } catch {
      continue;
    }
    if (!cmd.startsWith('qemu-system') && !cmd.includes('/qemu-system')) continue;
    all.push(Number(e));
    if (cmd.includes(`guest=${prefix}`)) ours.push(Number(e));
  }
  return { all, ours };
}
/** The machine's busy and total jiffies (the cpu line of /proc/stat). */
function machineTicks(): { busy: number; total: number } {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0); // user..steal (guest is inside user)
  return { busy: total - f[3]! - f[4]!, total };
}
interface CpuSnapshot {
  procs: Record<string, number | undefined>;
  children: Record<string, number | undefined>;
  threads: Record<string, Record<string, number>>;
  /** ticks by pid: a QEMU that exits between two snapshots takes its ticks along, so only pids in both count. */
  qemuAll: Record<number, number>;
  qemuOurs: Record<number, number>;
  self: number;
  machine: { busy: number; total: number };
}
function cpuSnapshot(procs: Sampled[], qemuPrefix: string): CpuSnapshot {
  const q = qemuPids(qemuPrefix);
  const sum = (pids: number[]) => Object.fromEntries(pids.map((p) => [p, cpuTicks(p) ?? 0]));
  return {
    procs: Object.fromEntries(procs.map((p) => [p.name, cpuTicks(p.pid)])),
    children: Object.fromEntries(
      procs
        .filter((p) => p.name === 'engine' || p.name === 'host agent')
        .map((p) => [p.name, childTicks(p.pid)]),
    ),
    threads: Object.fromEntries(
      procs
        .filter((p) => p.name === 'engine' || p.name === 'host agent')
        .map((p) => [p.name, threadTicks(p.pid)]),
    ),
    qemuAll: sum(q.all),
    qemuOurs: sum(q.ours),
    self: cpuTicks(process.pid) ?? 0,
    machine: machineTicks(),
  };
}
/** The SDK's RPC counters (temporal_request, temporal_long_request) of one worker, by operation. */
async function rpcCounts(address: string): Promise<Record<string, number> | undefined> {
  try {
    const res = await fetch(`http://${address}/metrics`, { signal: AbortSignal.timeout(5000) });
    const text = await res.text();
    const out: Record<string, number> = {};
    for (const line of text.split('\n')) {
      const m = /^temporal_(?:long_)?request(?:_total)?\{([^}]*)\}\s+(\S+)/.exec(line);
      const op = m && /operation="([^"]+)"/.exec(m[1]!)?.[1];
      if (op) out[op] = (out[op] ?? 0) + Number(m[2]);
    }
    return out;
  } catch {
    return undefined;
  }
}
const nextPort = (address: string, k: number): string => {
  const i = address.lastIndexOf(':');
  return `${address.slice(0, i)}:${Number(address.slice(i + 1)) + k}`;
};

/** The --profile section of one N: CPU seconds during the removals, and the workers' RPCs by operation. */
function profileReport(
  n: number,
  wallMs: number,
  a: CpuSnapshot,
  b: CpuSnapshot,
  clkTck: number,
  load0: number[],
  load1: number[],
  rpc: Record<string, [Record<string, number> | undefined, Record<string, number> | undefined]>,
): string {
  const s = (ticks: number) => ticks / clkTck;
  const wall = wallMs / 1000;
  const lines: string[] = [];
  const busy = b.machine.busy - a.machine.busy;
  const total = b.machine.total - a.machine.total;
  const cores = os.cpus().length;
  lines.push(
    `#### --profile, N = ${n}: CPU during the ${n} removals (${wall.toFixed(2)} s wall)`,
    '',
    `Machine: ${((100 * busy) / total).toFixed(0)}% busy of ${cores} cores (${s(busy).toFixed(1)} CPU s of ${s(total).toFixed(1)}); load average ${load0.map((x) => x.toFixed(2)).join(' ')} before, ${load1.map((x) => x.toFixed(2)).join(' ')} after.`,
    '',
    '| process | CPU s (utime+stime) | share of one core over the wall time |',
    '| --- | --- | --- |',
  );
  const row = (name: string, ticks: number | undefined) =>
    lines.push(
      `| ${name} | ${ticks === undefined ? '–' : s(ticks).toFixed(2)} | ${ticks === undefined ? '–' : `${((100 * s(ticks)) / wall).toFixed(0)}%`} |`,
    );
  for (const name of Object.keys(b.procs)) {
    const x = b.procs[name];
    const y = a.procs[name];
    row(name, x === undefined || y === undefined ? undefined : x - y);
  }
  const qdiff = (x: Record<number, number>, y: Record<number, number>) =>
    Object.keys(y).reduce((t, p) => t + (x[Number(p)] === undefined ? 0 : y[Number(p)]! - x[Number(p)]!), 0);
  const qemuAll = qdiff(a.qemuAll, b.qemuAll);
  row('QEMU, this run’s VMs', qdiff(a.qemuOurs, b.qemuOurs));
  row(`QEMU, all on the host (${Object.keys(b.qemuAll).length} at the end)`, qemuAll);
  let kids = 0;
  for (const name of Object.keys(b.children)) {
    const x = b.children[name];
    const y = a.children[name];
    const d = x === undefined || y === undefined ? undefined : x - y;
    kids += d ?? 0;
    row(`${name}'s child processes (qemu-img …, those it waited for)`, d);
  }
  row('this bench process (client, RSS sampler)', b.self - a.self);
  const named = kids + Object.keys(b.procs).reduce((t, k) => t + ((b.procs[k] ?? 0) - (a.procs[k] ?? 0)), 0);
  row('everything else on the machine', busy - named - qemuAll - (b.self - a.self));
  lines.push('');
  for (const [name, t1] of Object.entries(b.threads)) {
    const t0 = a.threads[name] ?? {};
    const parts = Object.entries(t1)
      .map(([comm, v]) => [comm, v - (t0[comm] ?? 0)] as const)
      .filter(([, v]) => v > 0)
      .sort((x, y) => y[1] - x[1])
      .map(([comm, v]) => `${comm} ${s(v).toFixed(2)}`);
    lines.push(`- ${name} by thread name (CPU s): ${parts.join(', ') || '–'}`);
  }
  lines.push('');
  const ops = new Set<string>();
  const diffs: Record<string, Record<string, number>> = {};
  for (const [who, [r0, r1]] of Object.entries(rpc)) {
    if (!r0 || !r1) continue;
    diffs[who] = {};
    for (const [op, v] of Object.entries(r1)) {
      const d = v - (r0[op] ?? 0);
      if (d > 0) {
        diffs[who][op] = d;
        ops.add(op);
      }
    }
  }
  const whos = Object.keys(diffs);
  if (whos.length > 0) {
    lines.push(
      `SDK RPCs during the removals (temporal_request + temporal_long_request, by operation; per removal = / ${n}):`,
      '',
      `| operation | ${whos.join(' | ')} | per removal (all) |`,
      `| --- | ${whos.map(() => '---').join(' | ')} | --- |`,
    );
    const sorted = [...ops].sort(
      (x, y) =>
        whos.reduce((t, w) => t + (diffs[w]![y] ?? 0), 0) - whos.reduce((t, w) => t + (diffs[w]![x] ?? 0), 0),
    );
    for (const op of sorted) {
      const all = whos.reduce((t, w) => t + (diffs[w]![op] ?? 0), 0);
      lines.push(`| ${op} | ${whos.map((w) => diffs[w]![op] ?? 0).join(' | ')} | ${(all / n).toFixed(1)} |`);
    }
    lines.push('');
  } else lines.push('(no worker metrics endpoint answered: no RPC counts)', '');
  return lines.join('\n');
}

// ---------------------------------------------------------------------------------------------- histories

interface Tree {
  workflows: Array<{ type: string; id: string; events: number; activities: number }>;
  events: number;
  activities: number;
  /** Every closed activity: its type, scheduled → closed in ms, its last attempt, how it closed. */
  acts: Array<{
    type: string;
    ms: number;
    attempt: number;
    outcome: 'completed' | 'failed' | 'timed out';
    /** For attempt > 1: why the attempt before failed (the started event's lastFailure). */
    lastFailure?: string;
  }>;
}

/** The history of a workflow run and, recursively, of every child it started (vm-lock:* included). */
async function historyTree(client: Client, workflowId: string, runId?: string, tree?: Tree): Promise<Tree> {
  const t: Tree = tree ?? { workflows: [], events: 0, activities: 0, acts: [] };
  const handle = client.workflow.getHandle(workflowId, runId);
  // The lock closes a moment after its holder (terminated by the holder's close policy): counted once closed.
  await waitFor(
    `${workflowId} to close`,
    async () => (await handle.describe()).status.name !== 'RUNNING',
    10_000,
  );
  const events = (await handle.fetchHistory()).events ?? [];
  const byId = new Map(events.map((e) => [String(e.eventId), e]));
  let activities = 0;
  const children: Array<{ id: string; runId?: string }> = [];
  for (const e of events) {
    if (e.activityTaskScheduledEventAttributes) activities++;
    const closed =
      (e.activityTaskCompletedEventAttributes && ['completed', e.activityTaskCompletedEventAttributes]) ||
      (e.activityTaskFailedEventAttributes && ['failed', e.activityTaskFailedEventAttributes]) ||
      (e.activityTaskTimedOutEventAttributes && ['timed out', e.activityTaskTimedOutEventAttributes]);
    if (closed) {
      const [outcome, a] = closed as [
        Tree['acts'][number]['outcome'],
        { scheduledEventId?: unknown; startedEventId?: unknown },
      ];
      const scheduled = byId.get(String(a.scheduledEventId));
      const started = byId.get(String(a.startedEventId));
      t.acts.push({
        type: scheduled?.activityTaskScheduledEventAttributes?.activityType?.name ?? '?',
        ms: scheduled ? eventMs(e) - eventMs(scheduled) : NaN,
        attempt: started?.activityTaskStartedEventAttributes?.attempt ?? 1,
        outcome,
        ...(started?.activityTaskStartedEventAttributes?.lastFailure
          ? { lastFailure: failureText(started.activityTaskStartedEventAttributes.lastFailure) }
          : {}),
      });
    }
    const init = e.startChildWorkflowExecutionInitiatedEventAttributes;
    if (init) {
      const startedChild = events.find(
        (x) => String(x.childWorkflowExecutionStartedEventAttributes?.initiatedEventId) === String(e.eventId),
      );
      const rid = startedChild?.childWorkflowExecutionStartedEventAttributes?.workflowExecution?.runId;
      children.push({ id: init.workflowId!, ...(rid ? { runId: rid } : {}) });
    }
  }
  const type = events[0]?.workflowExecutionStartedEventAttributes?.workflowType?.name ?? '?';
  t.workflows.push({ type, id: workflowId, events: events.length, activities });
  t.events += events.length;
  t.activities += activities;
  for (const c of children) await historyTree(client, c.id, c.runId, t);
  return t;
}
function failureText(f: temporal.api.failure.v1.IFailure): string {
  const kind = f.timeoutFailureInfo
    ? `timeout ${temporal.api.enums.v1.TimeoutType[f.timeoutFailureInfo.timeoutType ?? 0]}`
    : (f.applicationFailureInfo?.type ?? 'failure');
  const m = f.message ?? '';
  return `${kind}: ${m.length > 220 ? `${m.slice(0, 60)}…${m.slice(-150)}` : m}`;
}
const perWorkflow = (t: Tree): string =>
  t.workflows.map((w) => `${w.type} ${w.events}/${w.activities}`).join(' + ');

// ---------------------------------------------------------------------------------------------- VMs

interface BenchVm {
  kind: 'lm' | 'virsh';
  name: string;
  dom: Domain;
  uuid: string;
  /** The raw base's path. */
  base: string;
  /** livemerge VMs: the image and its base volume. */
  imageId?: string;
  baseVolumeId?: string;
  /** virsh VMs: its directory (base and overlays). */
  dir?: string;
  overlays: string[];
  paused: boolean;
}

/** Where `snapshot remove --wait`'s time goes, in ms: spawn → the lookup's start (the CLI's own start and its
 * connection), the lookup (findVm), its close → the removal's start (the CLI's checks), the removal, its close →
 * exit. Server clock for the workflows, this process's for spawn and exit (the same machine). */
interface CliPhases {
  toLookup: number;
  lookup: number;
  toStart: number;
  removal: number;
  toExit: number;
}

async function cliPhasesOf(
  client: Client,
  vmId: string,
  spawned: number,
  removal: temporal.api.history.v1.IHistoryEvent[],
  exited: number,
): Promise<CliPhases> {
  let lookup: { start: number; close: number } | undefined;
  // The CLI's findVm for this VM (its id: find-vm:<ref>:<random>), started after the spawn.
  await waitFor(
    "the CLI's findVm in visibility",
    async () => {
      for await (const w of client.workflow.list({
        query: `WorkflowType = 'findVm' AND ExecutionStatus = 'Completed' AND StartTime >= "${new Date(spawned - 1000).toISOString()}"`,
      })) {
        const start = w.startTime.getTime();
        if (w.workflowId.startsWith(`find-vm:${vmId}:`) && w.closeTime)
          if (!lookup || start > lookup.start) lookup = { start, close: w.closeTime.getTime() };
      }
      return lookup !== undefined;
    },
    10_000,
  );
  const first = eventMs(removal[0]!);
  const last = eventMs(removal[removal.length - 1]!);
  return {
    toLookup: lookup!.start - spawned,
    lookup: lookup!.close - lookup!.start,
    toStart: first - lookup!.close,
    removal: last - first,
    toExit: exited - last,
  };
}

async function main(): Promise<void> {
  const commandLine = `npx tsx bench/merge-scale.ts ${process.argv.slice(2).join(' ')}`.trim();
  const startedAt = new Date();
  const load0 = os.loadavg();
  const cleanups: Array<() => Promise<unknown>> = [];
  let cleaning: Promise<void> | undefined;
  const cleanup = () =>
    (cleaning ??= (async () => {
      for (const c of cleanups.reverse()) await c().catch((e: unknown) => console.error('cleanup:', e));
    })());
  for (const sig of ['SIGINT', 'SIGTERM'] as const)
    process.once(sig, () => {
      aborted = true;
      log(`${sig}: cleaning up`);
      void cleanup().finally(() => process.exit(130));
    });

  try {
    await run();
  } finally {
    await cleanup();
  }

  async function run(): Promise<void> {
    const config = loadConfig();
    const reg = new ProcessRegistry(config.dataDir);
    const hostPart = () => reg.names().find((n) => n.startsWith('host-') && reg.running(n) !== undefined);
    // The dev stack: ours if none runs.
    const metricsAddress =
      process.env.LIVEMERGE_METRICS_ADDRESS ??
      `127.0.0.1:${Number(process.env.LIVEMERGE_UI_PORT ?? 8233) + 1000}`;
    if (opts.profile !== undefined) {
      const running = ['engine', ...reg.names().filter((n) => n.startsWith('host-'))].filter(
        (n) => reg.running(n) !== undefined,
      );
      if (running.length > 0)
        throw new Error(
          `--profile: a dev stack is running (${running.map((n) => `${n} pid ${reg.running(n)}`).join(', ')}, ` +
            `data dir ${config.dataDir}); its processes were started without the profiler. Stop it ` +
            `(\`livemerge dev down\`) or give this run a stack of its own (TEMPORAL_ADDRESS, LIVEMERGE_UI_PORT, ` +
            `LIVEMERGE_DATA_DIR).`,
        );
      fs.mkdirSync(opts.profile, { recursive: true });
      fs.writeFileSync(path.join(opts.profile, 'phase'), 'start\n');
    }
    if (reg.running('engine') === undefined || hostPart() === undefined) {
      log(`no dev stack running: livemerge dev up${opts.profile ? ` (profiled into ${opts.profile})` : ''}`);
      cleanups.push(async () => {
        log('livemerge dev down');
        await exec(process.execPath, [CLI, 'dev', 'down']);
      });
      const up = await timed(() =>
        exec(process.execPath, [CLI, 'dev', 'up'], {
          maxBuffer: 1 << 24,
          ...(opts.profile ? { env: profileEnv(opts.profile, metricsAddress) } : {}),
        }),
      );
      log(`dev up in ${secs(up.ms)} s`);
    }
    const enginePid = reg.running('engine') ?? (await pgrep('livemerge.cjs worker engine'));
    const hostName = hostPart();
    const hostPid = (hostName && reg.running(hostName)) || (await pgrep('livemerge.cjs worker host'));
    const libvirtdPid = Number(fs.readFileSync('/run/libvirtd.pid', 'utf8').trim()) || undefined;
    const temporalPid = reg.running('temporal') ?? (await pgrep('temporal server start-dev'));
    const procs: Sampled[] = [
      ...(enginePid ? [{ name: 'engine', pid: enginePid }] : []),
      ...(hostPid ? [{ name: 'host agent', pid: hostPid }] : []),
      ...(libvirtdPid ? [{ name: 'libvirtd', pid: libvirtdPid }] : []),
      ...(temporalPid ? [{ name: 'temporal', pid: temporalPid }] : []),
    ];
    log(`processes: ${procs.map((p) => `${p.name} ${p.pid}`).join(', ')}`);
    if (opts.profile !== undefined) {
      fs.writeFileSync(
        path.join(opts.profile, 'pids.json'),
        JSON.stringify(Object.fromEntries(procs.map((p) => [p.name, p.pid]))) + '\n',
      );
      cleanups.push(async () => {
        fs.writeFileSync(path.join(opts.profile!, 'phase'), 'end\n');
        await new Promise((r) => setTimeout(r, 1200)); // the preloads look every 500 ms
      });
    }
    const setPhase = (phase: string) => {
      if (opts.profile !== undefined) fs.writeFileSync(path.join(opts.profile, 'phase'), `${phase}\n`);
    };
    const clkTck = opts.profile
      ? Number((await exec('getconf', ['CLK_TCK']).catch(() => ({ stdout: '100' }))).stdout.trim()) || 100
      : 100;
    // What bin/livemerge.cjs runs (the workers and the CLI): a dist/ older than src/ falls back to tsx.
    const distFresh = await exec(process.execPath, [path.join(REPO_ROOT, 'bin', 'dist-fresh.cjs')]).then(
      () => true,
      () => false,
    );
    const cliMode = distFresh
      ? 'compiled dist/'
      : 'the sources through tsx (dist/ missing or older than src/)';

    const connection = await Connection.connect(temporalConnectionOptions(config));
    cleanups.push(() => connection.close());
    const client = new Client({ connection, namespace: config.temporalNamespace });
    /** Engine worker number k beside the stack's, polling like it; stopped (SIGTERM) at the end. */
    const startEngine = async (k: number): Promise<number> => {
      const logFile = path.join(config.dataDir, 'logs', `bench-engine-${k}.log`);
      fs.mkdirSync(path.dirname(logFile), { recursive: true });
      const fd = fs.openSync(logFile, 'a');
      const child = spawn(process.execPath, [CLI, 'worker', 'engine'], {
        env: engineEnv(enginePid),
        stdio: ['ignore', fd, fd],
      });
      fs.closeSync(fd);
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      cleanups.push(async () => {
        child.kill('SIGTERM');
        await exited;
      });
      const pid = child.pid!;
      await waitFor(
        `engine ${k} (pid ${pid}) to poll ${ENGINE_TASK_QUEUE}; log ${logFile}`,
        async () => {
          if (child.exitCode !== null) throw new Error(`engine ${k} exited at start; log ${logFile}`);
          const ids = await pollerIdentities(
            connection,
            config.temporalNamespace,
            ENGINE_TASK_QUEUE,
            'workflow',
          );
          return ids.some((id) => id.startsWith(`${pid}@`));
        },
        60_000,
      );
      return pid;
    };
    for (let k = 2; k <= opts.engines; k++) procs.push({ name: `engine ${k}`, pid: await startEngine(k) });
    if (opts.engines > 1)
      log(
        `engines: ${procs
          .filter((p) => p.name.startsWith('engine'))
          .map((p) => p.pid)
          .join(', ')}`,
      );
    const conn = await LibvirtConnection.open(config.libvirtUri);
    cleanups.push(() => conn.close());
    const sd = await StorageDomain.create(config.storageRoot, randomUUID());
    cleanups.push(() => fsp.rm(path.join(config.storageRoot, sd.id), { recursive: true, force: true }));
    const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'lm-bench-scale-'));
    await fsp.chmod(tmp, 0o755);
    cleanups.push(() => fsp.rm(tmp, { recursive: true, force: true }));
    const runId = randomUUID().slice(0, 6);
    const virsh = (...a: string[]) =>
      exec('virsh', ['-q', '-c', config.libvirtUri, ...a], { maxBuffer: 1 << 24 });

    // VMs: every one defined is destroyed and undefined at the end (the cleanup runs before the files go).
    const vms: BenchVm[] = [];
    // Through virsh, one connection each: libvirtd serialises a destroy (~2 s for a TCG VM) per connection.
    const removeVm = async (vm: BenchVm) => {
      await virsh('destroy', vm.name).catch(() => undefined);
      await virsh('undefine', vm.name, '--snapshots-metadata').catch(() =>
        vm.dom.undefine(DomainUndefineFlags.SNAPSHOTS_METADATA).catch(() => undefined),
      );
      vm.dom.free();
      vms.splice(vms.indexOf(vm), 1);
    };
    cleanups.push(async () => {
      log(`removing ${vms.length} VMs`);
      await inBatches([...vms], 16, removeVm, false);
    });
    const domainCount = async () => (await conn.listDomains()).length;
    let vmCount = 0;
    const makeVm = async (kind: BenchVm['kind'], capacityMiB: number): Promise<BenchVm> => {
      checkAborted();
      const name = `lm-scale-${runId}-${kind}-${vmCount++}`;
      let vm: Omit<BenchVm, 'dom' | 'uuid'>;
      if (kind === 'lm') {
        const base = await sd.createImage({ format: 'raw', capacity: capacityMiB * MiB });
        vm = {
          kind,
          name,
          base: base.path,
          imageId: base.imageId,
          baseVolumeId: base.volumeId,
          overlays: [],
          paused: false,
        };
      } else {
        const dir = path.join(tmp, name);
        await fsp.mkdir(dir, { mode: 0o755 });
        const base = path.join(dir, 'base.raw');
        await exec('qemu-img', ['create', '-q', '-f', 'raw', base, String(capacityMiB * MiB)]);
        vm = { kind, name, base, dir, overlays: [], paused: false };
      }
      const dom = await conn.defineXml(testVmXml(name, [{ path: vm.base, format: 'raw' }]));
      const full: BenchVm = { ...vm, dom, uuid: dom.uuid };
      vms.push(full);
      await virsh('start', name);
      return full;
    };
    const makeVms = (kind: BenchVm['kind'], n: number, capacityMiB: number) =>
      inBatches(Array.from({ length: n }), opts.batch, () => makeVm(kind, capacityMiB));
    /** N MiB with one byte pattern at `offsetMiB`, through the guest device (cache=none), 64 MiB per call. */
    const write = async (vm: BenchVm, offsetMiB: number, sizeMiB: number, pattern: number) => {
      for (let o = 0; o < sizeMiB; o += 64) {
        const len = Math.min(64, sizeMiB - o);
        await hmpQemuIo(
          vm.dom,
          'virtio-disk0',
          `write -P 0x${(pattern & 0xff).toString(16)} ${(offsetMiB + o) * MiB} ${len * MiB}`,
        );
      }
      await hmpQemuIo(vm.dom, 'virtio-disk0', 'flush');
    };
    const setPaused = async (vm: BenchVm, paused: boolean) => {
      if (vm.paused === paused) return;
      await virsh(paused ? 'suspend' : 'resume', vm.name);
      vm.paused = paused;
    };
    /** livemerge's snapshot (createSnapshot); returns the snapshot id and the new leaf. */
    const lmSnapshot = async (vm: BenchVm): Promise<{ snapshotId: string; leaf: string }> => {
      checkAborted();
      const snapshotId = randomUUID();
      const r = (await client.workflow.execute('createSnapshot', {
        taskQueue: ENGINE_TASK_QUEUE,
        workflowId: `create-snapshot:${vm.uuid}:${snapshotId}`,
        args: [{ vmId: vm.uuid, snapshotId }],
      })) as CreateSnapshotResult;
      return { snapshotId, leaf: r.disks[0]!.leafVolumeId };
    };
    /** The anchor's overlay, made by libvirt outside livemerge. */
    const virshSnapshot = async (vm: BenchVm): Promise<string> => {
      const file = path.join(vm.dir!, `overlay-${vm.overlays.length}.qcow2`);
      await virsh(
        'snapshot-create-as',
        vm.name,
        '--disk-only',
        '--no-metadata',
        '--atomic',
        '--diskspec',
        `vda,file=${file}`,
      );
      vm.overlays.push(file);
      return file;
    };
    /** After a pivot the anchor's overlays are unused: removed, as livemerge deletes its volumes. */
    const dropOverlays = async (vm: BenchVm, keep: string[] = []) => {
      for (const f of vm.overlays.filter((x) => !keep.includes(x))) await fsp.rm(f, { force: true });
      vm.overlays = vm.overlays.filter((x) => keep.includes(x));
    };
    const removeSnapshot = async (vm: BenchVm, snapshotId: string) => {
      checkAborted();
      const workflowId = `remove-snapshot:${vm.uuid}:${snapshotId}`;
      const r = (await client.workflow.execute('removeSnapshot', {
        taskQueue: ENGINE_TASK_QUEUE,
        workflowId,
        args: [{ vmId: vm.uuid, snapshotId }],
        // As the CLI starts it: its memo and the VM's search attributes (the stack's one host).
        ...operationStartOptions(vm.uuid, config.hosts.length === 1 ? config.hosts[0] : undefined),
      })) as RemoveSnapshotResult;
      const failed = r.disks.filter((d) => d.status !== 'merged');
      if (failed.length > 0) throw new Error(`${workflowId}: ${JSON.stringify(failed)}`);
      return workflowId;
    };

    const out: string[] = [];
    const print = (line = '') => out.push(line);
    const seen: number[] = [];
    const noteDomains = async () => void seen.push(await domainCount());
    const domainsSeen = () => {
      const r = `${Math.min(...seen)}${Math.max(...seen) > Math.min(...seen) ? `–${Math.max(...seen)}` : ''}`;
      seen.length = 0;
      return r;
    };

    // ------------------------------------------------------------------ (a) end to end vs bare virsh
    if (!opts.skip.has('a')) {
      print('### (a) one live snapshot, N MiB in the active layer: removal end to end vs bare virsh');
      print();
      print(
        `raw base + one qcow2 overlay holding N MiB (written through the guest device); ${opts.reps} rounds each, median (min–max) in s; the same VM each round`,
      );
      print();
      print(
        '| N MiB | livemerge removeSnapshot (client start → close) | `livemerge snapshot remove --wait` (process) | `virsh blockcommit --active --pivot --wait` (process) | libvirt API, event-driven (commit → READY → pivot → COMPLETED) | livemerge / virsh | livemerge / API | history events / activities per removal |',
      );
      print('| --- | --- | --- | --- | --- | --- | --- | --- |');
      for (const size of opts.sizes) {
        log(`(a) ${size} MiB: 2 VMs`);
        const [lm, vv] = await Promise.all([
          makeVm('lm', Math.max(256, 2 * size)),
          makeVm('virsh', Math.max(256, 2 * size)),
        ]);
        const lmMs: number[] = [];
        const cliMs: number[] = [];
        const waitMs: number[] = [];
        const cliPhases: CliPhases[] = [];
        const virshMs: number[] = [];
        const apiMs: number[] = [];
        let tree: Tree | undefined;
        for (let r = 0; r < opts.reps; r++) {
          const pattern = 0x41 + r;
          // livemerge, workflow from the client
          const s = await lmSnapshot(lm);
          await write(lm, 0, size, pattern);
          await noteDomains();
          const t = await timed(() => removeSnapshot(lm, s.snapshotId));
          lmMs.push(t.ms);
          tree = await historyTree(client, t.value);
          // the anchor
          await virshSnapshot(vv);
          await write(vv, 0, size, pattern);
          virshMs.push(
            (await timed(() => virsh('blockcommit', vv.name, 'vda', '--active', '--pivot', '--wait'))).ms,
          );
          await dropOverlays(vv);
          await virshSnapshot(vv);
          await write(vv, 0, size, pattern + 0x20);
          apiMs.push((await timed(() => apiCommit(conn, vv.dom, null, null, { active: true }))).ms);
          await dropOverlays(vv);
          // livemerge through its CLI
          if (opts.cli) {
            const c = await lmSnapshot(lm);
            await write(lm, 0, size, pattern + 0x10);
            const spawned = Date.now();
            cliMs.push(
              (
                await timed(() =>
                  exec(process.execPath, [
                    CLI,
                    'snapshot',
                    'remove',
                    '--vm',
                    lm.uuid,
                    '--snapshot',
                    c.snapshotId,
                    '--wait',
                  ]),
                )
              ).ms,
            );
            // How long after the workflow closed the command returned (the close event's server time).
            const exited = Date.now();
            const closedEvents =
              (await client.workflow.getHandle(`remove-snapshot:${lm.uuid}:${c.snapshotId}`).fetchHistory())
                .events ?? [];
            const phases = await cliPhasesOf(client, lm.uuid, spawned, closedEvents, exited);
            cliPhases.push(phases);
            waitMs.push(phases.toExit);
          }
          log(
            `(a) ${size} MiB round ${r + 1}: livemerge ${secs(lmMs.at(-1)!)} s, cli ${secs(cliMs.at(-1) ?? NaN)} s, virsh ${secs(virshMs.at(-1)!)} s, API ${secs(apiMs.at(-1)!)} s`,
          );
        }
        if (cliPhases.length > 0)
          log(
            `(a) ${size} MiB, \`snapshot remove --wait\` per round (ms): ` +
              cliPhases
                .map(
                  (p) =>
                    `spawn → findVm ${p.toLookup}, findVm ${p.lookup}, → removal ${p.toStart}, removal ${p.removal}, → exit ${p.toExit}`,
                )
                .join('; '),
          );
        print(
          `| ${size} | ${spread(lmMs)} | ${opts.cli ? `${spread(cliMs)}; returned ${waitMs.map((x) => x.toFixed(0)).join(', ')} ms after the close` : '–'} | ${spread(virshMs)} | ${spread(apiMs)} | ${ratio(median(lmMs), median(virshMs))} | ${ratio(median(lmMs), median(apiMs))} | ${tree!.events} / ${tree!.activities} (${perWorkflow(tree!)}) |`,
        );
      }
      print();
      print(
        `libvirt domains on the host at the removals: ${domainsSeen()} (livemerge's checks scan every one).`,
      );
      print();
    }

    // ------------------------------------------------------------------ (c) chain length
    if (!opts.skip.has('c')) {
      print(
        `### (c) cost vs chain length: one merge from the base over L layers (${opts.chainMiB} MiB written into each layer)`,
      );
      print();
      print(
        'active: base + L−1 snapshots, the leaf committed into the base with pivot (`virsh blockcommit --base B --top LEAF --active --pivot --wait`); intermediate: base + L snapshots, the L layers below the leaf committed into the base (`virsh blockcommit --base B --top T --wait`). libvirt API: the same commit on this process’s connection, woken by the block job events. livemerge: one mergeDisk workflow (client start → close); history events / activities of the mergeDisk workflow and every child.',
      );
      print();
      print(
        '| kind | L layers merged | volumes removed | livemerge mergeDisk s | virsh s | libvirt API s | livemerge / virsh | livemerge / API | history events | activities | per workflow (events/activities) |',
      );
      print('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
      for (const L of opts.chains.filter((l) => l >= 2)) {
        for (const kind of ['active', 'intermediate'] as const) {
          const volumes = kind === 'active' ? L : L + 1;
          log(`(c) ${kind}, ${L} layers: chains of ${volumes} volumes`);
          const [lm, vv, va] = await Promise.all([
            makeVm('lm', 256),
            makeVm('virsh', 256),
            makeVm('virsh', 256),
          ]);
          const lmVols = [lm.baseVolumeId!];
          const vFiles = [vv.base];
          const aFiles = [va.base];
          for (const vm of [lm, vv, va]) await write(vm, 0, opts.chainMiB, 0x30);
          for (let k = 1; k < volumes; k++) {
            lmVols.push((await lmSnapshot(lm)).leaf);
            vFiles.push(await virshSnapshot(vv));
            aFiles.push(await virshSnapshot(va));
            for (const vm of [lm, vv, va]) await write(vm, k * opts.chainMiB, opts.chainMiB, 0x30 + k);
          }
          const top = kind === 'active' ? volumes - 1 : volumes - 2;
          const workflowId = `merge-disk:${lm.uuid}:${lm.imageId}`;
          await noteDomains();
          const t = await timed(() =>
            client.workflow.execute('mergeDisk', {
              taskQueue: ENGINE_TASK_QUEUE,
              workflowId,
              args: [
                {
                  vmId: lm.uuid,
                  storageDomainId: sd.id,
                  imageId: lm.imageId!,
                  baseVolumeId: lmVols[0]!,
                  topVolumeId: lmVols[top]!,
                },
              ],
            }),
          );
          const removed = (t.value as { removedVolumeIds: string[] }).removedVolumeIds.length;
          const tree = await historyTree(client, workflowId);
          const v = await timed(() =>
            virsh(
              'blockcommit',
              vv.name,
              'vda',
              '--base',
              vFiles[0]!,
              '--top',
              vFiles[top]!,
              ...(kind === 'active' ? ['--active', '--pivot'] : []),
              '--wait',
            ),
          );
          await dropOverlays(vv, kind === 'active' ? [] : [vFiles.at(-1)!]);
          const a = await timed(() =>
            apiCommit(conn, va.dom, aFiles[0]!, aFiles[top]!, { active: kind === 'active' }),
          );
          await dropOverlays(va, kind === 'active' ? [] : [aFiles.at(-1)!]);
          log(
            `(c) ${kind}, ${L} layers: livemerge ${secs(t.ms)} s (${tree.events} events, ${tree.activities} activities), virsh ${secs(v.ms)} s, API ${secs(a.ms)} s`,
          );
          print(
            `| ${kind} | ${L} | ${removed} | ${secs(t.ms)} | ${secs(v.ms)} | ${secs(a.ms)} | ${ratio(t.ms, v.ms)} | ${ratio(t.ms, a.ms)} | ${tree.events} | ${tree.activities} | ${perWorkflow(tree)} |`,
          );
          // Done with these three: they go now, not at the end.
          await Promise.all([lm, vv, va].map(removeVm));
        }
      }
      print();
      print(
        `libvirt domains on the host at the merges: ${domainsSeen()} (livemerge's checks scan every one).`,
      );
      print();
    }

    // ------------------------------------------------------------------ (b) N concurrent merges
    if (!opts.skip.has('b') && opts.concurrency.length > 0) {
      const maxN = Math.max(...opts.concurrency);
      const lmVms: BenchVm[] = [];
      const vVms: BenchVm[] = [];
      let definingMs = 0;
      const idle = procs
        .map((p) => `${p.name} ${((procStatus(p.pid)?.rss ?? NaN) / 1024).toFixed(0)}`)
        .join(', ');
      const engineNames = procs.map((p) => p.name).filter((n) => n.startsWith('engine'));
      const rows: string[] = [];
      const latRows: string[] = [];
      const retryNotes: string[] = [];
      const profRows: string[] = [];
      for (const n of opts.concurrency) {
        // The pools grow to N (the VMs of smaller N reused): 2N of ours on the host during round N.
        if (lmVms.length < n) {
          const more = n - lmVms.length;
          log(`(b) N=${n}: defining and starting ${2 * more} more VMs, ${opts.batch} at a time`);
          const d = await timed(async () => {
            lmVms.push(...(await makeVms('lm', more, 256)));
            vVms.push(...(await makeVms('virsh', more, 256)));
          });
          definingMs += d.ms;
        }
        const lmSet = lmVms.slice(0, n);
        const vSet = vVms.slice(0, n);
        const domains = await domainCount();
        const pattern = 0x61 + opts.concurrency.indexOf(n);
        // Set-up, not timed: a snapshot and a layer on each, then the VMs paused.
        const snaps = await inBatches(lmSet, opts.batch, async (vm) => {
          await setPaused(vm, false);
          const s = await lmSnapshot(vm);
          await write(vm, 0, opts.layerMiB, pattern);
          await setPaused(vm, true);
          return s.snapshotId;
        });
        await inBatches(vSet, opts.batch, async (vm) => {
          await setPaused(vm, false);
          await virshSnapshot(vm);
          await write(vm, 0, opts.layerMiB, pattern);
          await setPaused(vm, true);
        });
        log(`(b) N=${n}: ${n} removeSnapshot at once`);
        const prof0 = opts.profile
          ? {
              cpu: cpuSnapshot(procs, `lm-scale-${runId}-`),
              engineRpc: await rpcCounts(metricsAddress),
              hostRpc: await rpcCounts(nextPort(metricsAddress, 1)),
              load: os.loadavg(),
            }
          : undefined;
        setPhase(`N${n}`);
        let sampler = rssSampler(procs);
        const lm = await timed(() => Promise.allSettled(lmSet.map((vm, i) => removeSnapshot(vm, snaps[i]!))));
        const lmPeak = sampler.stop();
        setPhase(`after-N${n}`);
        if (prof0) {
          const cpu1 = cpuSnapshot(procs, `lm-scale-${runId}-`);
          const [engineRpc, hostRpc] = [
            await rpcCounts(metricsAddress),
            await rpcCounts(nextPort(metricsAddress, 1)),
          ];
          profRows.push(
            profileReport(n, lm.ms, prof0.cpu, cpu1, clkTck, prof0.load, os.loadavg(), {
              engine: [prof0.engineRpc, engineRpc],
              'host agent': [prof0.hostRpc, hostRpc],
            }),
          );
        }
        const lmFailed = lm.value.filter((x) => x.status === 'rejected');
        log(
          `(b) N=${n}: livemerge ${secs(lm.ms)} s (${lmFailed.length} failed); ${n} virsh blockcommit at once`,
        );
        sampler = rssSampler(procs);
        const vv = await timed(() =>
          Promise.allSettled(
            vSet.map((vm) => virsh('blockcommit', vm.name, 'vda', '--active', '--pivot', '--wait')),
          ),
        );
        const vPeak = sampler.stop();
        const vFailed = vv.value.filter((x) => x.status === 'rejected');
        log(`(b) N=${n}: virsh ${secs(vv.ms)} s (${vFailed.length} failed)`);
        for (const vm of vSet) await dropOverlays(vm);
        // The second anchor on the same VMs: libvirt's API, event-driven, N at once on one connection.
        await inBatches(vSet, opts.batch, async (vm) => {
          await setPaused(vm, false);
          await virshSnapshot(vm);
          await write(vm, 0, opts.layerMiB, pattern + 0x10);
          await setPaused(vm, true);
        });
        const api = await timed(() =>
          Promise.allSettled(vSet.map((vm) => apiCommit(conn, vm.dom, null, null, { active: true }))),
        );
        const apiFailed = api.value.filter((x) => x.status === 'rejected');
        log(`(b) N=${n}: libvirt API ${secs(api.ms)} s (${apiFailed.length} failed)`);
        for (const vm of vSet) await dropOverlays(vm);
        for (const f of [...lmFailed, ...vFailed, ...apiFailed]) log(`(b) failure: ${String(f.reason)}`);

        // Every history of the N removals (parents and children).
        const trees = await inBatches(lmSet, 8, (vm, i) =>
          historyTree(client, `remove-snapshot:${vm.uuid}:${snaps[i]}`),
        );
        const acts = trees.flatMap((t) => t.acts);
        const timedOut = acts.filter((a) => a.outcome === 'timed out').length;
        const failedActs = acts.filter((a) => a.outcome === 'failed').length;
        const retried = acts.filter((a) => a.attempt > 1);
        for (const a of retried)
          retryNotes.push(`N=${n} ${a.type} attempt ${a.attempt}, before it: ${a.lastFailure ?? '?'}`);
        const mib = (x: number | undefined) => (x === undefined ? '–' : x.toFixed(0));
        rows.push(
          `| ${n} | ${domains} | ${secs(lm.ms)} | ${secs(vv.ms)} | ${secs(api.ms)} | ${ratio(lm.ms, vv.ms)} | ${ratio(lm.ms, api.ms)} | ${lmFailed.length} / ${vFailed.length} / ${apiFailed.length} | ${engineNames.map((e) => mib(lmPeak[e])).join(' / ')} | ${mib(lmPeak['host agent'])} | ${mib(lmPeak.libvirtd)} / ${mib(vPeak.libvirtd)} | ${mib(lmPeak.temporal)} | ${median(trees.map((t) => t.events))} | ${timedOut} | ${failedActs} | ${retried.length}${retried.length ? ` (${[...new Set(retried.map((a) => `${a.type} attempt ${a.attempt}`))].join(', ')})` : ''} |`,
        );
        const types = [...new Set(acts.map((a) => a.type))];
        for (const type of types) {
          const ms = acts.filter((a) => a.type === type).map((a) => a.ms);
          latRows.push(
            `| ${n} | ${type} | ${ms.length} | ${percentile(ms, 50).toFixed(0)} | ${percentile(ms, 95).toFixed(0)} | ${Math.max(...ms).toFixed(0)} |`,
          );
        }
      }
      print(
        `### (b) N concurrent merges on one host (paused TCG VMs, raw base + one ${opts.layerMiB} MiB layer each)`,
      );
      print();
      print(
        `${2 * maxN} VMs (N for livemerge, N for the anchors) defined and started in ${secs(definingMs)} s in all (${opts.batch} at a time), reused across N; "domains on the host" counts every libvirt domain (other users' too), which livemerge's checks scan. Wall time: the first start → the last close, in s. Peak RSS in MiB, polled every 100 ms during the livemerge run (libvirtd: livemerge run / virsh run); before the first N: ${idle}.`,
      );
      print();
      print(
        '| N | domains on the host | livemerge s | virsh s | libvirt API s | livemerge / virsh | livemerge / API | failed (lm / virsh / API) | engine RSS (each engine worker) | host agent RSS | libvirtd RSS | temporal RSS | events per removal (median) | activity timeouts | activity failures | attempts > 1 |',
      );
      print(
        '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
      );
      for (const r of rows) print(r);
      print();
      if (retryNotes.length > 0) {
        print('Retried activities (the failure of the attempt before, from the started event):');
        print();
        for (const r of retryNotes) print(`- ${r}`);
        print();
      }
      print(
        'Activity latency, scheduled → closed (queueing included), from every history of the N removals (ms):',
      );
      print();
      print('| N | activity | n | p50 | p95 | max |');
      print('| --- | --- | --- | --- | --- | --- |');
      for (const r of latRows) print(r);
      print();
      for (const r of profRows) print(r);
    }

    const load1 = os.loadavg();
    const hwm = procs
      .map((p) => `${p.name} ${((procStatus(p.pid)?.hwm ?? NaN) / 1024).toFixed(0)}`)
      .join(', ');
    const { stdout: qemuVersion } = await exec('qemu-system-x86_64', ['--version']).catch(() => ({
      stdout: '?',
    }));
    const { stdout: libvirtVersion } = await exec('libvirtd', ['--version']).catch(() => ({ stdout: '?' }));
    const la = (l: number[]) => l.map((x) => x.toFixed(2)).join(' ');
    console.log(`## merge-scale results\n`);
    console.log(`- command: \`${commandLine}\``);
    console.log(
      `- date: ${startedAt.toISOString()} → ${new Date().toISOString()} (${secs(Date.now() - startedAt.getTime())} s)`,
    );
    console.log(
      `- load average (1/5/15 min): ${la(load0)} at the start, ${la(load1)} at the end; ${os.cpus().length} cores`,
    );
    console.log(
      `- ${qemuVersion.split('\n')[0]}, ${libvirtVersion.trim()}, TCG (\`<domain type='qemu'>\`); workers: \`${cliMode}\` via bin/livemerge.cjs`,
    );
    console.log(`- peak RSS over the whole run (VmHWM, MiB): ${hwm}\n`);
    console.log(out.join('\n'));
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
