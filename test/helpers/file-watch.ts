// Watches an image directory while a merge runs (inotify through fs.watch) and records every volume file
// that appears or disappears, with the legality its metadata had when it went: what the end state
// cannot show (a volume deleted and re-created, deleted twice, or deleted while still LEGAL).
//
// Metadata files (`<volumeId>.meta.json`) are re-read on every event, so the last legality seen before a
// data file's unlink is known (deleteVolume writes ILLEGAL unless recordMerge or setLegality already did,
// unlinks the data, then the metadata). The handlers run later than the changes, in the order inotify keeps
// for one directory: a data file's state is taken on its 'rename' events only (its creation and unlink;
// 'change' is QEMU writing to it or libvirt relabelling it, which may be handled after the unlink). When the
// metadata is gone before the handler of its last write runs, that write cannot be read: its temp file
// (writeFileAtomic) was seen, so it is recorded as 'rewritten'; a metadata file that merely vanished
// leaves the last read standing, and one whose unlink comes before its data file's is 'metadata-first'.
// stop() lists the directory once more: a change the events missed is reported as such, never silently
// taken.
import fs from 'node:fs';
import path from 'node:path';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
// writeFileAtomic's temp file for a volume's metadata: `.<volumeId>.meta.json.tmp-<pid>-<random>`.
const META_TMP = /^\.(.+)\.meta\.json\.tmp-/;

export interface FileEvent {
  kind: 'unlink' | 'create';
  volumeId: string;
  /** Date.now() when the event was seen (at or after the change itself). */
  at: number;
  /**
   * The volume's legality as last seen in its metadata before the event ('none': never seen;
   * 'rewritten': its metadata was written after the last read and removed before it could be read;
   * 'metadata-first': its metadata was unlinked before its data file).
   */
  legality: Legality | Unread | 'none';
}

type Legality = 'LEGAL' | 'ILLEGAL';
type Unread = 'rewritten' | 'metadata-first';

/**
 * A data file was deleted only once its volume was marked ILLEGAL. 'rewritten' counts, on one assumption
 * about the product: the metadata writes to a volume that is about to be deleted mark it ILLEGAL
 * (recordMerge, setLegality, deleteVolume). A deletion that skips the mark leaves the LEGAL read standing,
 * and one that unlinks the metadata first is 'metadata-first'. (A LEGAL-keeping write just before a
 * deletion that skips the mark, all handled late, would pass: no product path does that.)
 */
export function deletedWhileIllegal(e: FileEvent): boolean {
  return e.kind === 'unlink' && (e.legality === 'ILLEGAL' || e.legality === 'rewritten');
}

export interface WatchReport {
  events: FileEvent[];
  /** volumeId → number of unlinks seen. */
  unlinks: Map<string, number>;
  /** Volumes created again after an unlink. */
  reappeared: string[];
  /** Differences between the events and the final listing (should be empty). */
  missed: string[];
}

export class ImageDirWatch {
  private readonly events: FileEvent[] = [];
  private readonly present = new Set<string>();
  private readonly legality = new Map<string, Legality | Unread>();
  /** Volumes whose metadata temp file was seen since their metadata was last read. */
  private readonly writing = new Set<string>();
  private readonly watcher: fs.FSWatcher;
  private readonly errors: string[] = [];

  constructor(readonly dir: string) {
    // Watch first, then list: a change in between is seen by one or the other (handlers are idempotent).
    this.watcher = fs.watch(dir, (type, name) => {
      if (name) this.onEvent(type, name.toString());
    });
    this.watcher.on('error', (err) => this.errors.push(String(err)));
    for (const f of fs.readdirSync(dir)) {
      if (UUID.test(f)) this.present.add(f);
      this.readMeta('change', f);
    }
  }

  private readMeta(type: fs.WatchEventType, name: string): void {
    const tmp = META_TMP.exec(name);
    if (tmp && UUID.test(tmp[1]!)) return void this.writing.add(tmp[1]!);
    const m = /^(.+)\.meta\.json$/.exec(name);
    if (!m || !UUID.test(m[1]!)) return;
    const id = m[1]!;
    try {
      const meta = JSON.parse(fs.readFileSync(path.join(this.dir, name), 'utf8')) as { legality?: string };
      if (meta.legality === 'LEGAL' || meta.legality === 'ILLEGAL') this.legality.set(id, meta.legality);
      this.writing.delete(id);
    } catch (e) {
      // Gone already. A write seen starting since the last read can no longer be read, and that read must
      // not stand for it; a metadata file that only vanished keeps it. Anything else is reported (writes
      // are atomic: no torn reads).
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') this.errors.push(`${name}: ${String(e)}`);
      else if (this.writing.delete(id)) this.legality.set(id, 'rewritten');
      // A second 'rename' (its own unlink) while the data file's unlink is still to come.
      else if (type === 'rename' && this.present.has(id) && this.legality.get(id) === 'rewritten')
        this.legality.set(id, 'metadata-first');
    }
  }

  private onEvent(type: fs.WatchEventType, name: string): void {
    if (!UUID.test(name)) return this.readMeta(type, name);
    if (type !== 'rename') return;
    const exists = fs.existsSync(path.join(this.dir, name));
    if (exists === this.present.has(name)) return;
    if (exists) this.present.add(name);
    else this.present.delete(name);
    this.events.push({
      kind: exists ? 'create' : 'unlink',
      volumeId: name,
      at: Date.now(),
      legality: this.legality.get(name) ?? 'none',
    });
  }

  /** The events handled so far. */
  handled(): FileEvent[] {
    return [...this.events];
  }

  /** Volumes seen deleted so far. */
  unlinked(): string[] {
    return this.events.filter((e) => e.kind === 'unlink').map((e) => e.volumeId);
  }

  stop(): WatchReport {
    this.watcher.close();
    const final = new Set(fs.readdirSync(this.dir).filter((f) => UUID.test(f)));
    const missed = [...this.errors];
    for (const f of final) if (!this.present.has(f)) missed.push(`${f} exists but its creation was not seen`);
    for (const f of this.present) if (!final.has(f)) missed.push(`${f} is gone but its unlink was not seen`);
    const unlinks = new Map<string, number>();
    const reappeared: string[] = [];
    for (const e of this.events) {
      if (e.kind === 'unlink') unlinks.set(e.volumeId, (unlinks.get(e.volumeId) ?? 0) + 1);
      else if (unlinks.has(e.volumeId)) reappeared.push(e.volumeId);
    }
    return { events: [...this.events], unlinks, reappeared, missed };
  }
}
