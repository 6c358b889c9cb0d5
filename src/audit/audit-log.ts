// The audit log: JSONL, one line per workflow outcome, fsynced. A retried write of the same event id is a
// no-op (checked under the file's lock), so each outcome appears exactly once.
import fs from 'node:fs/promises';
import path from 'node:path';
import type { AuditEvent } from './event';
import { withLock } from '../storage/lock';

export interface AuditRecord extends AuditEvent {
  at: string;
}

export class AuditLog {
  constructor(readonly file: string) {}

  async append(event: AuditEvent): Promise<{ written: boolean }> {
    await fs.mkdir(path.dirname(this.file), { recursive: true });
    return await withLock(`${this.file}.lock`, async () => {
      if ((await this.read()).some((r) => r.eventId === event.eventId)) return { written: false };
      const line = JSON.stringify({ at: new Date().toISOString(), ...event } satisfies AuditRecord) + '\n';
      const fh = await fs.open(this.file, 'a');
      try {
        await fh.write(line);
        await fh.sync();
      } finally {
        await fh.close();
      }
      return { written: true };
    });
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
