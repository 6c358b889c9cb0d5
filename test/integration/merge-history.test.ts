// A merge's workflow history must not grow with its duration: waiting is one heartbeating activity,
// progress goes into heartbeats, not into events; the host reports each stage once.
import { temporal } from '@temporalio/proto';
import { describe, expect, it } from 'vitest';
import { writeThroughGuest } from '../helpers/data';
import type { Stack } from '../helpers/stack';
import { createStackVm, useStack } from '../helpers/stack';
import { createSnapshot, startMergeDisk } from '../helpers/workflows';

const MiB = 1 << 20;

async function timedMerge(
  s: Stack,
  dataMiB: number,
): Promise<{ seconds: number; events: number; types: string[] }> {
  const { vm, disks } = await createStackVm(s, { disks: 1, capacity: 128 * MiB });
  await createSnapshot(s, vm.uuid);
  await writeThroughGuest(vm.domain, 0, { byte: 0x61, offset: 0, length: dataMiB * MiB });
  const chain = await s.sd.readChain(disks[0]!.imageId);
  const t0 = Date.now();
  const handle = await startMergeDisk(s, {
    vmId: vm.uuid,
    storageDomainId: s.sd.id,
    imageId: disks[0]!.imageId,
    baseVolumeId: chain[0]!.volumeId,
    topVolumeId: chain[1]!.volumeId,
    bandwidthBytesPerSec: 1 * MiB,
  });
  await handle.result();
  const seconds = (Date.now() - t0) / 1000;
  const events = (await handle.fetchHistory()).events ?? [];
  return {
    seconds,
    events: events.length,
    types: events.map((e) => temporal.api.enums.v1.EventType[e.eventType ?? 0] ?? String(e.eventType)),
  };
}

describe('workflow history size', () => {
  it(
    'is the same for a 1 s and a 60 s merge (bandwidth-limited active commits)',
    { timeout: 240_000 },
    async () => {
      const s = await useStack();
      const [short, long] = await Promise.all([timedMerge(s, 1), timedMerge(s, 60)]);
      expect(short.seconds).toBeLessThan(10);
      expect(long.seconds).toBeGreaterThan(55);
      // The same events, but for the host's stage reports: `copying` (both copies last over 300 ms), and
      // `ready` when the pivot takes over 300 ms. A report costs at most 5 events (its signal, a workflow
      // task, its upsert), fewer when it shares a workflow task. So each run has one or two reports, the
      // events of the other types are the same, and the totals differ by at most two reports' events.
      const REPORT_TYPES = ['WORKFLOW_TASK', 'SIGNALED', 'UPSERT_WORKFLOW_SEARCH_ATTRIBUTES'];
      const steps = (types: string[]) => {
        const n: Record<string, number> = {};
        for (const t of types) if (!REPORT_TYPES.some((r) => t.includes(r))) n[t] = (n[t] ?? 0) + 1;
        return n;
      };
      expect(steps(long.types)).toEqual(steps(short.types));
      const reportsOf = (types: string[]) =>
        types.filter((t) => t === 'EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED').length;
      for (const run of [short, long]) {
        expect(reportsOf(run.types)).toBeGreaterThanOrEqual(1);
        expect(reportsOf(run.types)).toBeLessThanOrEqual(2);
      }
      expect(Math.abs(long.events - short.events)).toBeLessThanOrEqual(5 * 2);
    },
  );
});
