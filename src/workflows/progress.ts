// The `progress` query, the UI's current details and the Livemerge* search attributes, kept in step.
import type { SearchAttributePair, SearchAttributeUpdatePair } from '@temporalio/common';
import {
  defineQuery,
  setCurrentDetails,
  setHandler,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import { HOST_ID_KEY, STAGE_KEY, VM_ID_KEY, startSearchAttributes } from '../common/search-attributes';
import type { Progress, Stage } from '../schemas/progress';
import { lean, leanV3, leanV4 } from './lean';

export const progressQuery = defineQuery<Progress>('progress');

/**
 * The stages LivemergeStage takes in lean histories: those a workflow can stay in (waiting for a host,
 * copying, READY, the storage role's steps) and its end; the momentary ones are in the query only.
 */
const SEARCHED_STAGES: readonly Stage[] = [
  'inspecting',
  'copying',
  'ready',
  'recording',
  'done',
  'failed',
  'cancelled',
];

/**
 * The start options of a child on `vmId`'s host (v4): its search attributes at its start, so that it
 * upserts none of them itself (its first upsert: one event fewer per merge, two per snapshot).
 */
export function childSearchAttributes(
  vmId: string,
  hostId: string,
): { typedSearchAttributes?: SearchAttributePair[] } {
  return leanV4() ? { typedSearchAttributes: startSearchAttributes(vmId, hostId) } : {};
}

export function initialProgress(): Progress {
  return {
    stage: 'validating',
    mode: null,
    hostId: null,
    cur: 0,
    end: 0,
    bytesPerSecond: null,
    etaSeconds: null,
    removedVolumeIds: [],
  };
}

export class ProgressTracker {
  readonly state: Progress = initialProgress();
  private stageStartedAt = Date.now();
  private readonly unsent = new Map<string, SearchAttributeUpdatePair>();
  /** The value each attribute was last upserted with (v3: an upsert that changes nothing is not sent). */
  private readonly sent = new Map<string, unknown>();
  private seeded = false;

  constructor(
    private readonly title: string,
    private onStage?: (p: Progress) => void,
    register = true,
  ) {
    if (register) setHandler(progressQuery, () => this.state);
    this.publish();
  }

  /** Calls `fn` after each stage change from now on (e.g. to tell a parent workflow). */
  onStageChange(fn: (p: Progress) => void): void {
    this.onStage = fn;
  }

  vm(vmId: string): void {
    this.upsert({ key: VM_ID_KEY, value: vmId });
  }

  host(hostId: string, mode?: 'live' | 'cold'): void {
    this.state.hostId = hostId;
    if (mode) this.state.mode = mode;
    this.upsert({ key: HOST_ID_KEY, value: hostId });
    this.publish();
  }

  stage(stage: Stage): void {
    if (this.state.stage === stage) return;
    this.state.stage = stage;
    this.stageStartedAt = Date.now();
    if (!lean() || SEARCHED_STAGES.includes(stage)) this.upsert({ key: STAGE_KEY, value: stage });
    this.publish();
    this.onStage?.(this.state);
  }

  /** Copy progress as of the latest activity result (live bytes are in the wait activity's heartbeats). */
  bytes(cur: number, end: number): void {
    const elapsed = (Date.now() - this.stageStartedAt) / 1000;
    this.state.cur = cur;
    this.state.end = end;
    this.state.bytesPerSecond = elapsed > 0 ? Math.round(cur / elapsed) : null;
    this.state.etaSeconds =
      this.state.bytesPerSecond && this.state.bytesPerSecond > 0
        ? Math.max(0, Math.round((end - cur) / this.state.bytesPerSecond))
        : null;
    this.publish();
  }

  removed(volumeIds: string[]): void {
    this.state.removedVolumeIds = volumeIds;
    this.publish();
  }

  /**
   * Lean histories: the changes made before the workflow code next yields go out as one upsert (one
   * event), from a microtask, which still runs inside the same activation; else one upsert per change.
   */
  private upsert(pair: SearchAttributeUpdatePair): void {
    if (!lean()) {
      upsertSearchAttributes([pair]);
      return;
    }
    if (!this.seeded && leanV4()) this.seedFromStart();
    const name = pair.key.name;
    if (!this.unsent.has(name) && this.sent.get(name) === pair.value && leanV3()) return;
    const first = this.unsent.size === 0;
    this.unsent.set(name, pair);
    if (!first) return;
    void Promise.resolve().then(() => {
      const pairs = [...this.unsent.values()];
      this.unsent.clear();
      for (const p of pairs) this.sent.set(p.key.name, p.value);
      upsertSearchAttributes(pairs);
    });
  }

  /**
   * v4: the values the workflow carries count as sent (an upsert of the same value changes nothing). Read
   * at its first upsert, which in a new v4 workflow comes before any other: the start's values (in an
   * older one resumed on this build, those it has then); the same in every replay.
   */
  private seedFromStart(): void {
    this.seeded = true;
    for (const key of [VM_ID_KEY, HOST_ID_KEY, STAGE_KEY]) {
      const value = workflowInfo().typedSearchAttributes.get(key);
      if (value !== undefined) this.sent.set(key.name, value);
    }
  }

  private publish(): void {
    const s = this.state;
    const pct = s.end > 0 ? ` ${Math.floor((100 * s.cur) / s.end)}%` : '';
    setCurrentDetails(
      `**${this.title}** — stage \`${s.stage}\`${pct}` +
        (s.mode ? `, ${s.mode}` : '') +
        (s.hostId ? ` on host \`${s.hostId}\`` : '') +
        (s.removedVolumeIds.length ? `; removed: ${s.removedVolumeIds.join(', ')}` : ''),
    );
  }
}
