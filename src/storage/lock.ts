// Cross-process (and cross-host, on a shared directory) exclusive lock, one per image.
//
// Design: an owner file created atomically with link(2).
//  - Acquire: write the owner record { token, host, bootId, pidNs, pid, pidStart, acquiredAt } to a
//    unique temp file beside the lock, then link(temp, lock). link fails with EEXIST while someone
//    holds the lock, and the lock file never exists without its complete owner record (no empty or
//    torn lock files). link+EEXIST is the classic NFS-safe exclusive create; O_EXCL is not safe on
//    old NFS clients, and a mkdir lock cannot carry its owner atomically.
//  - Wait: poll with a short, jittered, growing back-off until `timeoutMs` (LockTimeout names the owner).
//  - Stale owners: a lock is broken only when its owner provably died: same host name, and either
//    another boot (boot_id differs) or, same boot and same pid namespace, the pid is gone or now
//    belongs to a process with another start time (pid reuse). Owners on other hosts are never
//    broken automatically (their liveness cannot be proved from here): the waiter times out with
//    LockTimeout naming the owner, for an operator to decide.
//  - Breaking is serialised by a second lock file (`<lock>.break`, same link protocol): the breaker
//    re-reads the lock under it and unlinks it only if it still carries the dead owner's token, so a
//    lock that a live process re-acquired meanwhile is never removed. (Residual window, documented:
//    if a breaker itself dies inside that few-millisecond section, its `.break` file is removed by the
//    next breaker once its pid is provably dead, and two breakers could then race once.)
//  - Release: unlink only if the lock still carries our token; otherwise LockLost is thrown.
//  - Inside one process, holders of the same lock path are queued in memory first, so concurrent
//    async callers neither poll against each other nor confuse the pid-based liveness check.
// Locks are not re-entrant: never take an image lock while holding it.
import { randomBytes } from 'node:crypto';
import { constants, readFileSync, readlinkSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { LockLost, LockTimeout, errnoCode } from './errors';

export interface LockOwner {
  token: string;
  host: string;
  bootId: string | null;
  pidNs: string | null;
  pid: number;
  /** Process start time (field 22 of /proc/<pid>/stat): detects pid reuse. */
  pidStart: string | null;
  acquiredAt: string;
  purpose: string;
}

export interface LockOptions {
  /** Give up after this long (default 60 s). */
  timeoutMs?: number;
  /** Free text stored in the owner record, for diagnostics. */
  purpose?: string;
  /** Told each time a dead owner's lock is broken (logs: an operator wants to see it). */
  onBrokenStale?: (dead: LockOwner) => void;
}

const DEFAULT_TIMEOUT_MS = 60_000;

function readOrNull(file: string): string | null {
  try {
    return readFileSync(file, 'utf8').trim();
  } catch {
    return null;
  }
}

function procStartTime(pid: number): string | null {
  const stat = readOrNull(`/proc/${pid}/stat`);
  if (stat === null) return null;
  // comm (field 2) may contain spaces and parentheses: split after the last ')'.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return rest[19] ?? null; // field 22 overall = index 19 after "pid (comm)"
}

function pidNamespace(): string | null {
  try {
    return readlinkSync('/proc/self/ns/pid');
  } catch {
    return null;
  }
}

const SELF = {
  host: os.hostname(),
  bootId: readOrNull('/proc/sys/kernel/random/boot_id'),
  pidNs: pidNamespace(),
  pid: process.pid,
  pidStart: procStartTime(process.pid),
};

/** True when `owner` provably no longer runs (see header). */
export function ownerIsDead(owner: LockOwner): boolean {
  if (owner.host !== SELF.host) return false;
  if (owner.bootId !== null && SELF.bootId !== null && owner.bootId !== SELF.bootId) return true;
  if (owner.bootId !== SELF.bootId || owner.pidNs === null || owner.pidNs !== SELF.pidNs) return false;
  try {
    process.kill(owner.pid, 0);
  } catch (e) {
    if (errnoCode(e) === 'ESRCH') return true;
    // EPERM: it exists (owned by another user): fall through to the start-time check.
  }
  const start = procStartTime(owner.pid);
  return start !== null && owner.pidStart !== null && start !== owner.pidStart;
}

async function readOwner(file: string): Promise<LockOwner | null> {
  let text: string;
  try {
    const fh = await fs.open(file, constants.O_RDONLY | constants.O_NOFOLLOW);
    try {
      text = await fh.readFile('utf8');
    } finally {
      await fh.close();
    }
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return null;
    throw e;
  }
  try {
    const o = JSON.parse(text) as Partial<LockOwner>;
    if (typeof o.token === 'string' && typeof o.host === 'string' && typeof o.pid === 'number')
      return o as LockOwner;
  } catch {
    /* fall through */
  }
  // Never produced by this module (link publishes complete files): treat as held by an unknown owner.
  return {
    token: `unparsable:${text.slice(0, 64)}`,
    host: '?',
    bootId: null,
    pidNs: null,
    pid: -1,
    pidStart: null,
    acquiredAt: '?',
    purpose: '?',
  };
}

/** One attempt to create `file` holding `owner`, atomically. Returns false if it already exists. */
async function tryCreate(file: string, owner: LockOwner): Promise<boolean> {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.tmp-${owner.token}`);
  await fs.writeFile(tmp, JSON.stringify(owner), { flag: 'wx', mode: 0o644 });
  try {
    await fs.link(tmp, file);
    return true;
  } catch (e) {
    if (errnoCode(e) === 'EEXIST') return false;
    throw e;
  } finally {
    await fs.rm(tmp, { force: true });
  }
}

function newOwner(purpose: string): LockOwner {
  return { token: randomBytes(12).toString('hex'), ...SELF, acquiredAt: new Date().toISOString(), purpose };
}

/** Removes `file` if it still carries `token`. */
async function unlinkIfToken(file: string, token: string): Promise<boolean> {
  const cur = await readOwner(file);
  if (cur?.token !== token) return false;
  await fs.rm(file, { force: true });
  return true;
}

async function breakStale(lockFile: string, dead: LockOwner, opts: LockOptions): Promise<void> {
  const breakFile = `${lockFile}.break`;
  const me = newOwner(`break ${dead.token}`);
  if (!(await tryCreate(breakFile, me))) {
    const breaker = await readOwner(breakFile);
    if (breaker && ownerIsDead(breaker)) await unlinkIfToken(breakFile, breaker.token);
    return; // someone else is breaking (or we just cleared a dead breaker): the caller retries
  }
  try {
    const cur = await readOwner(lockFile);
    if (cur && cur.token === dead.token && ownerIsDead(cur)) {
      await fs.rm(lockFile, { force: true });
      opts.onBrokenStale?.(cur);
    }
  } finally {
    await unlinkIfToken(breakFile, me.token);
  }
}

const inProcess = new Map<string, Promise<void>>();

async function acquire(lockFile: string, opts: LockOptions): Promise<LockOwner> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const started = Date.now();
  let backoff = 1;
  for (;;) {
    const me = newOwner(opts.purpose ?? '');
    if (await tryCreate(lockFile, me)) return me;
    const owner = await readOwner(lockFile);
    if (owner === null) continue; // released between our attempt and the read: retry at once
    if (ownerIsDead(owner)) {
      await breakStale(lockFile, owner, opts);
      continue;
    }
    const waited = Date.now() - started;
    if (waited >= timeoutMs) throw new LockTimeout(lockFile, owner, waited);
    await delay(backoff + Math.random() * backoff);
    backoff = Math.min(backoff * 2, 25);
  }
}

/**
 * Runs `fn` while holding the exclusive lock `lockFile` (its directory must exist).
 * The lock is released when `fn` settles; LockLost is thrown if it was taken from us meanwhile.
 */
export async function withLock<T>(
  lockFile: string,
  fn: () => Promise<T>,
  opts: LockOptions = {},
): Promise<T> {
  const key = path.resolve(lockFile);
  const prev = inProcess.get(key) ?? Promise.resolve();
  let releaseLocal!: () => void;
  const mine = new Promise<void>((resolve) => (releaseLocal = resolve));
  const tail = prev.then(() => mine);
  inProcess.set(key, tail);
  try {
    await prev;
    const owner = await acquire(key, opts);
    let result: T;
    try {
      result = await fn();
    } catch (e) {
      await unlinkIfToken(key, owner.token);
      throw e;
    }
    if (!(await unlinkIfToken(key, owner.token))) {
      throw new LockLost(key, 'the lock file no longer carries our token at release');
    }
    return result;
  } finally {
    releaseLocal();
    if (inProcess.get(key) === tail) inProcess.delete(key);
  }
}

/** Reads the current owner of a lock (diagnostics, tests). */
export function lockOwner(lockFile: string): Promise<LockOwner | null> {
  return readOwner(lockFile);
}
