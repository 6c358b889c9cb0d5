// Reads the CPU profiles and event-loop-delay files of a profiling run (bench/merge-scale.ts --profile DIR,
// or any directory of .cpuprofile files) and prints, per process and thread and per phase, the top functions
// by self time and the self time by category, as plain tables.
//
// Usage: npx tsx bench/profile-summary.ts DIR [--phase N8,N32] [--top 25] [--all-processes]
//   Files: DIR/<pid>[-t<threadId>]-<phase>.cpuprofile (bench/cpu-prof-preload.cjs) or Node's own
//   CPU.<date>.<time>.<pid>.<tid>.<seq>.cpuprofile (node --cpu-prof; phase "all"). DIR/pids.json names the
//   parts ({"engine": pid, "host agent": pid, ...}); other pids (`dev up` itself) are left out unless
//   --all-processes. Default phases: every one whose name starts with N (the concurrent removals).
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}
interface Eld {
  pid: number;
  threadId: number;
  resolutionMs: number;
  total: Stats;
  phases: Array<{ phase: string } & Stats>;
}
interface Stats {
  count: number;
  p50?: number;
  p99?: number;
  max?: number;
  mean?: number;
}

const { values: args, positionals } = parseArgs({
  options: {
    phase: { type: 'string' },
    top: { type: 'string', default: '25' },
    'all-processes': { type: 'boolean', default: false },
  },
  allowPositionals: true,
  strict: true,
});
const dir = positionals[0];
if (!dir) {
  console.error('usage: npx tsx bench/profile-summary.ts DIR [--phase N8,N32] [--top 25] [--all-processes]');
  process.exit(2);
}
const top = Number(args.top);
const wantPhase = (p: string) =>
  args.phase === undefined ? /^N\d+$/.test(p) || p === 'all' : args.phase.split(',').includes(p);

const names: Record<number, string> = {};
try {
  const pids = JSON.parse(fs.readFileSync(path.join(dir, 'pids.json'), 'utf8')) as Record<string, number>;
  for (const [name, pid] of Object.entries(pids)) names[pid] = name;
} catch {
  // no pids.json: every process by pid
}
const label = (pid: number, tid: number) =>
  `${names[pid] ?? `pid ${pid}`}${tid === 0 ? ' (main thread)' : ` (worker thread ${tid})`}`;

/** Where a function's self time goes (its own frame: the code that ran, not its callers). */
function category(f: CallFrame): string {
  const u = f.url;
  if (f.functionName === '(idle)') return 'idle';
  if (f.functionName === '(garbage collector)') return 'GC';
  if (f.functionName === '(program)' || f.functionName === '(root)') return 'program (native, outside JS)';
  if (u.includes('/node_modules/@temporalio/core-bridge/')) return '@temporalio/core-bridge (JS side)';
  if (u.includes('/node_modules/@temporalio/proto/') || u.includes('/node_modules/protobufjs/'))
    return 'protobuf (protobufjs, @temporalio/proto)';
  if (u.includes('/node_modules/@temporalio/worker/lib/workflow/')) return '@temporalio/worker workflow host';
  if (u.includes('/node_modules/@temporalio/')) return '@temporalio/* other (worker, common, client)';
  if (u.includes('/node_modules/koffi/')) return 'koffi';
  if (u.includes('/node_modules/fast-xml-parser/')) return 'fast-xml-parser';
  if (u.includes('/node_modules/zod/')) return 'zod';
  if (u.includes('/node_modules/')) return 'other node_modules';
  if (/\/(src|dist)\/libvirt\//.test(u)) return 'libvirt bindings (src/libvirt)';
  // The workflow bundle, evaluated by the SDK in its vm contexts (a file name of its own, not under src/).
  if (/workflow|bundle/i.test(u) && !/\/(src|dist)\//.test(u)) return 'workflow sandbox (vm: the bundle)';
  if (u.startsWith('evalmachine.')) return 'workflow sandbox (vm: the bundle)';
  if (u.startsWith('wasm://')) return 'wasm';
  if (/\/(src|dist)\//.test(u)) return 'livemerge (src/, other)';
  if (u.startsWith('node:')) return 'node core (node:*)';
  if (u === '' && f.functionName === 'spawn') return 'child_process spawn (native: fork + exec)';
  if (u === '' && FS_BINDINGS.has(f.functionName)) return 'fs bindings (native)';
  if (u === '') return 'V8/native without a url';
  return `other (${u.slice(0, 40)})`;
}

const FS_BINDINGS = new Set(
  'open openFileHandle close read readFileUtf8 write writeString writeBuffer stat lstat fstat realpath readlink readdir unlink rename mkdir rmdir access fsync fdatasync ftruncate'.split(
    ' ',
  ),
);

function loadProfile(file: string): CpuProfile {
  return JSON.parse(fs.readFileSync(file, 'utf8')) as CpuProfile;
}

/** Self time in µs per node id. */
function selfTimes(p: CpuProfile): Map<number, number> {
  const self = new Map<number, number>();
  let t = p.startTime;
  const stamps = p.timeDeltas.map((d) => (t += d));
  for (let i = 0; i < p.samples.length; i++) {
    const dt = (i + 1 < stamps.length ? stamps[i + 1]! : p.endTime) - stamps[i]!;
    self.set(p.samples[i]!, (self.get(p.samples[i]!) ?? 0) + Math.max(0, dt));
  }
  return self;
}

const ms = (us: number) => (us / 1000).toFixed(0);
const pct = (x: number, of: number) => (of > 0 ? `${((100 * x) / of).toFixed(1)}%` : '–');
const shortUrl = (u: string) =>
  u
    .replace(/^file:\/\//, '')
    .replace(/^.*\/node_modules\//, '')
    .replace(/^\/work\/[^/]+\//, '');

function table(head: string[], rows: string[][]): string {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) =>
    r.map((c, i) => (i === 0 || i === 1 ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join('  ');
  return [line(head), w.map((n) => '-'.repeat(n)).join('  '), ...rows.map(line)].join('\n');
}

// ---------------------------------------------------------------------------------------------- profiles

interface Entry {
  file: string;
  pid: number;
  tid: number;
  phase: string;
}
const entries: Entry[] = [];
for (const f of fs.readdirSync(dir).sort()) {
  if (!f.endsWith('.cpuprofile')) continue;
  let m = /^(\d+)(?:-t(\d+))?-(.+)\.cpuprofile$/.exec(f);
  if (m) entries.push({ file: f, pid: Number(m[1]), tid: Number(m[2] ?? 0), phase: m[3]! });
  else if ((m = /^CPU\.\d+\.\d+\.(\d+)\.(\d+)\.\d+\.cpuprofile$/.exec(f)))
    entries.push({ file: f, pid: Number(m[1]), tid: Number(m[2]), phase: 'all' });
}
const known = (pid: number) =>
  args['all-processes'] || Object.keys(names).length === 0 || names[pid] !== undefined;
const chosen = entries
  .filter((e) => wantPhase(e.phase) && known(e.pid))
  .sort((a, b) => a.phase.localeCompare(b.phase, 'en', { numeric: true }) || a.pid - b.pid || a.tid - b.tid);
if (chosen.length === 0) {
  console.error(
    `no matching .cpuprofile in ${dir} (phases there: ${[...new Set(entries.map((e) => e.phase))].join(', ')})`,
  );
  process.exit(1);
}

for (const e of chosen) {
  const p = loadProfile(path.join(dir, e.file));
  const self = selfTimes(p);
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const total = p.endTime - p.startTime;
  const idle = [...self].reduce(
    (t, [id, us]) => t + (byId.get(id)!.callFrame.functionName === '(idle)' ? us : 0),
    0,
  );
  // Functions: one row per function (its frames from every stack summed).
  const fns = new Map<string, { f: CallFrame; us: number }>();
  const cats = new Map<string, number>();
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  /** The nearest frame above `id` with a url (native frames are named by what calls them). */
  const caller = (id: number): CallFrame | undefined => {
    for (let q = parent.get(id); q !== undefined; q = parent.get(q)) {
      const c = byId.get(q)!.callFrame;
      if (c.url) return c;
    }
    return undefined;
  };
  for (const [id, us] of self) {
    const f = byId.get(id)!.callFrame;
    const key = `${f.functionName}\0${f.url}\0${f.lineNumber}\0${f.columnNumber}`;
    const r = fns.get(key) ?? { f, us: 0 };
    r.us += us;
    fns.set(key, r);
    let c = category(f);
    // V8 names the native functions of one addon alike (koffi's calls showed up as a core-bridge function's
    // name and the reverse): a native frame goes by the code that called it.
    if (c === 'V8/native without a url') {
      const up = caller(id);
      const u = up?.url ?? '';
      if (/\/(src|dist)\/libvirt\//.test(u)) c = 'koffi native calls (from src/libvirt: .async() dispatch)';
      else if (u.includes('/@temporalio/core-bridge/')) c = '@temporalio/core-bridge native (Rust calls)';
      else if (u === 'node:vm') c = 'workflow sandbox: vm context entry (runInContext)';
      else if (u === 'node:internal/worker' || u.includes('/workflow/workflow-worker-thread.js'))
        c = 'postMessage between the main and the workflow thread';
      else if (up) c = `native, called from: ${category(up)}`;
    }
    cats.set(c, (cats.get(c) ?? 0) + us);
  }
  console.log(
    `\n=== ${label(e.pid, e.tid)}, phase ${e.phase}: ${ms(total)} ms profiled, ${ms(total - idle)} ms not idle (${pct(total - idle, total)}), ${p.samples.length} samples — ${e.file}`,
  );
  console.log(
    `\nTop ${top} functions by self time (% of the profiled wall time; busy % of the non-idle time):\n`,
  );
  const topRows = [...fns.values()]
    .sort((a, b) => b.us - a.us)
    .slice(0, top)
    .map(({ f, us }) => [
      f.functionName || '(anonymous)',
      f.url ? `${shortUrl(f.url)}:${f.lineNumber + 1}` : '',
      ms(us),
      pct(us, total),
      f.functionName === '(idle)' ? '' : pct(us, total - idle),
    ]);
  console.log(table(['function', 'url:line', 'ms', '%', 'busy %'], topRows));
  // Who calls the busiest frames without a url (native functions): the nearest 3 frames above with one.
  const natives = [...fns.values()]
    .filter(({ f }) => f.url === '' && !f.functionName.startsWith('('))
    .sort((a, b) => b.us - a.us)
    .slice(0, 6)
    .filter(({ us }) => us >= 20_000);
  if (natives.length > 0) {
    console.log(
      '\nCallers of the busiest native frames (self ms by the 3 nearest frames with a url above them):\n',
    );
    const rows: string[][] = [];
    for (const { f } of natives) {
      const callers = new Map<string, number>();
      for (const [id, us] of self) {
        const g = byId.get(id)!.callFrame;
        if (g.functionName !== f.functionName || g.url !== '') continue;
        const chain: string[] = [];
        for (let q = parent.get(id); q !== undefined && chain.length < 3; q = parent.get(q)) {
          const c = byId.get(q)!.callFrame;
          if (c.url) chain.push(`${c.functionName || '(anonymous)'} ${shortUrl(c.url)}:${c.lineNumber + 1}`);
        }
        const key = chain.join(' < ') || '(none)';
        callers.set(key, (callers.get(key) ?? 0) + us);
      }
      for (const [chain, us] of [...callers].sort((a, b) => b[1] - a[1]).slice(0, 3))
        rows.push([f.functionName, chain, ms(us)]);
    }
    console.log(table(['native frame', 'called from', 'ms'], rows));
  }
  console.log('\nSelf time by category:\n');
  const catRows = [...cats]
    .sort((a, b) => b[1] - a[1])
    .map(([c, us]) => [c, '', ms(us), pct(us, total), c === 'idle' ? '' : pct(us, total - idle)]);
  console.log(table(['category', '', 'ms', '%', 'busy %'], catRows));
}

// ---------------------------------------------------------------------------------------------- event loop

const elds: Eld[] = fs
  .readdirSync(dir)
  .filter((f) => f.endsWith('-eld.json'))
  .map((f) => JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')) as Eld)
  .filter((x) => known(x.pid))
  .sort((a, b) => a.pid - b.pid || a.threadId - b.threadId);
if (elds.length > 0) {
  console.log(
    '\n=== Event-loop delay (perf_hooks.monitorEventLoopDelay, 10 ms timer): ms beyond the timer period, i.e. the recorded value minus the resolution\n',
  );
  const rows: string[][] = [];
  const d = (v: number | undefined, res: number) => (v === undefined ? '–' : Math.max(0, v - res).toFixed(1));
  for (const x of elds) {
    const phases = x.phases.filter((p) => wantPhase(p.phase));
    for (const p of [...phases, { phase: 'whole life', ...x.total }])
      rows.push([
        label(x.pid, x.threadId),
        p.phase,
        String(p.count),
        d(p.p50, x.resolutionMs),
        d(p.p99, x.resolutionMs),
        d(p.max, x.resolutionMs),
        d(p.mean, x.resolutionMs),
      ]);
  }
  console.log(table(['process', 'phase', 'samples', 'p50', 'p99', 'max', 'mean'], rows));
}

// ---------------------------------------------------------------------------------------------- spawns

const spawnRows: string[][] = [];
for (const f of fs.readdirSync(dir).filter((x) => x.endsWith('-spawns.json'))) {
  const pid = Number(f.split('-')[0]);
  if (!known(pid)) continue;
  const byPhase = JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')) as Record<
    string,
    Record<string, number>
  >;
  for (const [phase, progs] of Object.entries(byPhase))
    if (wantPhase(phase))
      for (const [prog, n] of Object.entries(progs)) spawnRows.push([label(pid, 0), phase, prog, String(n)]);
}
if (spawnRows.length > 0) {
  console.log('\n=== Child processes started (ChildProcess.prototype.spawn, counted by the preload)\n');
  console.log(table(['process', 'phase', 'program', 'count'], spawnRows));
}
