import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { writeThroughGuest } from '../helpers/data';
import { scheduledActivity } from '../helpers/history';
import { ENGINE_TASK_QUEUE, hostTaskQueue } from '../../src/common/task-queues';
import type { RemoveSnapshotResult } from '../../src/workflows/remove-snapshot';
import { createStackVm, useStack } from '../helpers/stack';
import { createSnapshot, failureTypeOf, startRemoveSnapshot } from '../helpers/workflows';

const LOCATE_TIMEOUT_S = 6;

const isLocateProbe = scheduledActivity('locateVm');

describe('finding the VM among the configured hosts', () => {
  it('asks every configured host; an absent agent does not stop or slow a merge of a running VM', async () => {
    // The first configured host has no agent at all: its probe can only time out.
    const s = await useStack({ extraHosts: ['ghost-host'], locateTimeoutSeconds: LOCATE_TIMEOUT_S });
    const { vm } = await createStackVm(s, { disks: 1 });
    await writeThroughGuest(vm.domain, 0, { byte: 0x41, offset: 0, length: 65536 });
    const snap = await createSnapshot(s, vm.uuid);
    expect(snap.hostId).toBe(s.hostId);
    const handle = await startRemoveSnapshot(s, { vmId: vm.uuid, snapshotId: snap.snapshotId });
    const r = (await handle.result()) as RemoveSnapshotResult;
    expect(r.disks.map((d) => d.status)).toEqual(['merged']);
    // The merge began on the running host's answer in the first round: between that answer and the merge's
    // start, no probe timed out (the ghost's: 5 s schedule-to-start, one attempt) and no timer started a
    // second round. (A ghost timing out before that answer, on a slow machine, would be left out here.)
    const events = (await handle.fetchHistory()).events ?? [];
    const probes = events.filter(isLocateProbe);
    expect(probes).toHaveLength(2); // one per configured host, one round
    const running = probes.find(
      (e) => e.activityTaskScheduledEventAttributes?.taskQueue?.name === hostTaskQueue(s.hostId),
    )!;
    const answered = events.findIndex(
      (e) => String(e.activityTaskCompletedEventAttributes?.scheduledEventId) === String(running.eventId),
    );
    const merge = events.findIndex(
      (e) => e.startChildWorkflowExecutionInitiatedEventAttributes?.workflowType?.name === 'mergeDisk',
    );
    expect(answered).toBeGreaterThan(0);
    expect(merge).toBeGreaterThan(answered);
    const between = events.slice(answered, merge);
    expect(between.filter((e) => e.activityTaskTimedOutEventAttributes)).toEqual([]);
    expect(between.filter((e) => e.timerStartedEventAttributes)).toEqual([]);
  });

  it('a VM no answering host has, while another host is silent: HostUnreachable after the locate timeout, never VmNotFound', async () => {
    const s = await useStack({ extraHosts: ['ghost-host'], locateTimeoutSeconds: LOCATE_TIMEOUT_S });
    const t0 = Date.now();
    const handle = await startRemoveSnapshot(s, { vmId: randomUUID(), snapshotId: randomUUID() });
    expect(await failureTypeOf(handle.result())).toBe('HostUnreachable');
    const seconds = (Date.now() - t0) / 1000;
    expect(seconds).toBeGreaterThanOrEqual(LOCATE_TIMEOUT_S);
    // The silent host was asked again and again meanwhile (one probe per round), the other once per round.
    const probes = ((await handle.fetchHistory()).events ?? []).filter(isLocateProbe);
    expect(probes.length).toBeGreaterThan(2);
  });

  it('every asked host answers no: VmNotFound on the first round, without waiting', async () => {
    const s = await useStack({ extraHosts: ['ghost-host'], locateTimeoutSeconds: LOCATE_TIMEOUT_S });
    // Asking only the host whose agent runs: every asked host answers.
    const handle = await startRemoveSnapshot(s, {
      vmId: randomUUID(),
      snapshotId: randomUUID(),
      hostId: s.hostId,
    });
    expect(await failureTypeOf(handle.result())).toBe('VmNotFound');
    // Refused on the first round's answer: one probe, no wait for a next round (a timer) or the timeout.
    const events = (await handle.fetchHistory()).events ?? [];
    expect(events.filter(isLocateProbe)).toHaveLength(1);
    expect(events.filter((e) => e.timerStartedEventAttributes)).toEqual([]);
  });

  it('a VM name no answering host has, while another host is silent: HostUnreachable (findVm), never VmNotFound', async () => {
    const s = await useStack({ extraHosts: ['ghost-host'], locateTimeoutSeconds: LOCATE_TIMEOUT_S });
    const { vm } = await createStackVm(s, { disks: 1, start: false });
    const find = (ref: string) =>
      s.client.workflow.start('findVm', {
        taskQueue: ENGINE_TASK_QUEUE,
        workflowId: `find-vm:${ref}:${randomUUID()}`,
        args: [{ vm: ref }],
      });
    const missing = await find('lm-no-such-name');
    expect(await failureTypeOf(missing.result())).toBe('HostUnreachable');
    const rounds = ((await missing.fetchHistory()).events ?? []).filter(scheduledActivity('listVms'));
    expect(rounds.length).toBeGreaterThan(2); // the silent host was asked again
    // A name the answering host has is not unique until the silent host answers either: same refusal.
    expect(await failureTypeOf((await find(vm.name)).result())).toBe('HostUnreachable');
    // By UUID: a shut-off definition on the answering host is not taken while the VM may run on the
    // silent one.
    expect(await failureTypeOf((await find(vm.uuid)).result())).toBe('HostUnreachable');
  });
});
