// The test side of the breakpoints in src/testing/holds.ts: arm one, wait until a worker stopped at it,
// release it. Files in one directory, shared with the workers through LIVEMERGE_HOLD_DIR.
import fs from 'node:fs';
import path from 'node:path';
import { pollUntil } from './poll';

export interface Held {
  pid: number;
  workflowId: string | null;
  activityId: string | null;
  attempt: number | null;
}

export class Holds {
  constructor(readonly dir: string) {
    fs.mkdirSync(dir, { recursive: true });
  }

  /** Arms the breakpoint before activity (or at breakpoint) `name`; for one workflow only when given. */
  hold(name: string, workflowId?: string): void {
    fs.rmSync(path.join(this.dir, `held-${name}`), { force: true });
    fs.writeFileSync(this.holdFile(name, workflowId), '');
  }

  release(name: string, workflowId?: string): void {
    fs.rmSync(this.holdFile(name, workflowId), { force: true });
  }

  private holdFile(name: string, workflowId?: string): string {
    return path.join(this.dir, workflowId ? `hold-${name}@${workflowId}` : `hold-${name}`);
  }

  /** Disarms every breakpoint and forgets every stale `held-*` marker (a killed process leaves its own). */
  releaseAll(): void {
    for (const f of fs.readdirSync(this.dir)) fs.rmSync(path.join(this.dir, f), { force: true });
  }

  /** Resolves once a worker stopped at breakpoint `name` (for workflow `workflowId` when given). */
  async waitHeld(name: string, workflowId?: string, timeoutMs = 60_000): Promise<Held> {
    const file = path.join(this.dir, `held-${name}`);
    return await pollUntil(
      () => {
        let rec: Held;
        try {
          rec = JSON.parse(fs.readFileSync(file, 'utf8')) as Held;
        } catch {
          return undefined;
        }
        return !workflowId || rec.workflowId === workflowId ? rec : undefined;
      },
      timeoutMs,
      `a worker to stop at ${name}`,
      50,
    );
  }
}
