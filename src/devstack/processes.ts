// Background processes owned by `livemerge dev`: a pid file per part, so `down` stops exactly what `up` started.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

export interface ManagedProcess {
  name: string;
  command: string;
  args: string[];
  /** A string that must appear in /proc/<pid>/cmdline: a recycled pid is never taken for ours. */
  marker: string;
}

interface PidRecord {
  pid: number;
  marker: string;
  startedAt: string;
}

export class ProcessRegistry {
  constructor(private readonly dataDir: string) {}

  private pidFile(name: string): string {
    return path.join(this.dataDir, 'pids', `${name}.json`);
  }

  /** Names of every part with a pid file (running or stale). */
  names(): string[] {
    try {
      return fs
        .readdirSync(path.join(this.dataDir, 'pids'))
        .filter((f) => f.endsWith('.json'))
        .map((f) => f.slice(0, -'.json'.length));
    } catch {
      return [];
    }
  }

  logFile(name: string): string {
    return path.join(this.dataDir, 'logs', `${name}.log`);
  }

  /** The pid of a part we started that is still running, or undefined (a stale pid file is removed). */
  running(name: string): number | undefined {
    let rec: PidRecord;
    try {
      rec = JSON.parse(fs.readFileSync(this.pidFile(name), 'utf8')) as PidRecord;
    } catch {
      return undefined;
    }
    if (isAlive(rec.pid, rec.marker)) return rec.pid;
    fs.rmSync(this.pidFile(name), { force: true });
    return undefined;
  }

  start(proc: ManagedProcess, env: NodeJS.ProcessEnv = process.env): number {
    fs.mkdirSync(path.dirname(this.pidFile(proc.name)), { recursive: true });
    fs.mkdirSync(path.dirname(this.logFile(proc.name)), { recursive: true });
    const log = fs.openSync(this.logFile(proc.name), 'a');
    const child = spawn(proc.command, proc.args, { detached: true, stdio: ['ignore', log, log], env });
    fs.closeSync(log);
    if (child.pid === undefined) throw new Error(`could not start ${proc.name} (${proc.command})`);
    child.unref();
    const rec: PidRecord = { pid: child.pid, marker: proc.marker, startedAt: new Date().toISOString() };
    fs.writeFileSync(this.pidFile(proc.name), JSON.stringify(rec) + '\n');
    return child.pid;
  }

  /** Records a process started by someone else on our behalf (libvirtd daemonizes itself). */
  adopt(name: string, pid: number, marker: string): void {
    fs.mkdirSync(path.dirname(this.pidFile(name)), { recursive: true });
    const rec: PidRecord = { pid, marker, startedAt: new Date().toISOString() };
    fs.writeFileSync(this.pidFile(name), JSON.stringify(rec) + '\n');
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves when the process is gone. */
  async stop(name: string, graceMs = 10_000): Promise<boolean> {
    const pid = this.running(name);
    if (pid === undefined) return false;
    signal(pid, 'SIGTERM');
    const deadline = Date.now() + graceMs;
    while (isAlive(pid) && Date.now() < deadline) await delay(50);
    if (isAlive(pid)) signal(pid, 'SIGKILL');
    while (isAlive(pid)) await delay(20);
    fs.rmSync(this.pidFile(name), { force: true });
    return true;
  }
}

export function isAlive(pid: number, marker?: string): boolean {
  let cmdline: string;
  let stat: string;
  try {
    cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return false;
  }
  // A zombie (state Z) has exited; it only waits for its parent.
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  if (state === 'Z') return false;
  return marker === undefined || cmdline.includes(marker);
}

/** The pid in `pidFile` while that process runs and is the daemon `name` (its argv[0] ends with it). */
export function daemonPid(pidFile: string, name: string): number | undefined {
  try {
    const pid = Number(fs.readFileSync(pidFile, 'utf8').trim());
    if (!Number.isInteger(pid) || pid <= 0 || !isAlive(pid)) return undefined;
    const argv0 = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0] ?? '';
    return argv0.endsWith(name) ? pid : undefined;
  } catch {
    return undefined; // no pid file, or the process is gone
  }
}

/** Sends `sig`; a process already gone is not an error. */
export function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

export function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
