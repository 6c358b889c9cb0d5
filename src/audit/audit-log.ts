// The audit log: JSONL, one line per workflow outcome, fsynced. A retried write of the same event id is a
// no-op (checked under the file's lock), so each outcome appears exactly once. The check reads only what
// was appended since the last one: re-reading the whole file was a fifth of the engine's main thread at 8
// removals at once (issue 13).
import fs from 'node:fs/promises';
import path from 'node:path';
import type { AuditEvent } from './event';
import { withLock } from '../storage/lock';

export interface AuditRecord extends AuditEvent {
  at: string;
}

export class AuditLog {
  /** The event ids of the file's first `known.bytes` bytes (file `known.ino`): read once, then only what was appended. */
  private known = { ino: -1, bytes: 0, ids: new Set<string>() };

  constructor(readonly file: string) {}

  async append(event: AuditEvent): Promise<{ written: boolean }> {
    await fs.mkdir(path.dirname(this.file), { recursive: true });
    return await withLock(`${this.file}.lock`, async () => {
      const fh = await fs.open(this.file, 'a+');
      try {
        // Other processes append under the same lock: their lines are read here before the check.
        await this.catchUp(fh);
        if (this.known.ids.has(event.eventId)) return { written: false };
        const line = JSON.stringify({ at: new Date().toISOString(), ...event } satisfies AuditRecord) + '\n';
        await fh.write(line);
        await fh.sync();
        this.known.bytes += Buffer.byteLength(line);
        this.known.ids.add(event.eventId);
        return { written: true };
      } finally {
        await fh.close();
      }
    });
  }

  /** Adds the ids of the lines appended since the last look (all of them for a new or replaced file). */
  private async catchUp(fh: fs.FileHandle): Promise<void> {
    const { ino, size } = await fh.stat();
    if (ino !== this.known.ino || size < this.known.bytes) this.known = { ino, bytes: 0, ids: new Set() };
    if (size === this.known.bytes) return;
    const buf = Buffer.alloc(size - this.known.bytes);
    const { bytesRead } = await fh.read(buf, 0, buf.length, this.known.bytes);
    // Whole lines only (each is written at once under the lock; a torn last one is read once completed).
    const whole = buf.subarray(0, buf.subarray(0, bytesRead).lastIndexOf(0x0a) + 1);
    for (const l of whole.toString('utf8').split('\n'))
      if (l.trim() !== '') this.known.ids.add((JSON.parse(l) as AuditRecord).eventId);
    this.known.bytes += whole.length;
  }

  async read(filter: { vmId?: string } = {}): Promise<AuditRecord[]> {
    let text: string;
    try {
      text = await fs.readFile(this.file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
    return text
      .split('\n')
      .filter((l) => l.trim() !== '')
      .map((l) => JSON.parse(l) as AuditRecord)
      .filter((r) => !filter.vmId || r.vmId === filter.vmId);
  }
}
