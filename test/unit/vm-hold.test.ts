// The hold's holders (src/activities/host/vm-hold.ts): attempt-scoped, so a superseded attempt can neither
// free nor take over its successor's hold, and two merges of one VM (two disks) hold side by side.
import { describe, expect, it } from 'vitest';
import { parseHolders, withHold } from '../../src/activities/host/vm-hold';

const ref = (workflowId: string, attempt: number, activityId = '7') => ({ workflowId, activityId, attempt });

describe('vm hold', () => {
  it('adds a holder per merge; a new attempt replaces its earlier attempts only', () => {
    let hs = withHold([], ref('merge-disk:vm:img1', 1), 't1');
    hs = withHold(hs, ref('merge-disk:vm:img2', 1), 't1');
    expect(hs.map((h) => h.holder)).toEqual(['merge-disk:vm:img1/7#1', 'merge-disk:vm:img2/7#1']);
    hs = withHold(hs, ref('merge-disk:vm:img1', 3), 't2');
    expect(hs.map((h) => h.holder)).toEqual(['merge-disk:vm:img2/7#1', 'merge-disk:vm:img1/7#3']);
    // Idempotent for the same attempt; a late hold of a superseded attempt changes nothing.
    expect(withHold(hs, ref('merge-disk:vm:img1', 3), 't3')).toBe(hs);
    expect(withHold(hs, ref('merge-disk:vm:img1', 2), 't3')).toBe(hs);
    // Another activity of the same workflow is another holder.
    expect(withHold(hs, ref('merge-disk:vm:img1', 1, '9'), 't3')).toHaveLength(3);
  });

  it('reads the element libvirt returns (its namespace, escaped attributes) and nothing else', () => {
    const xml =
      '<hold xmlns="https://livemerge.dev/xmlns/hold/1"><by holder="w&quot;1/7#1" workflowId="w&quot;1" since="t"/>' +
      '<by holder="w2/7#2" workflowId="w2" since="t"/></hold>';
    expect(parseHolders(xml)).toEqual([
      { holder: 'w"1/7#1', workflowId: 'w"1', since: 't' },
      { holder: 'w2/7#2', workflowId: 'w2', since: 't' },
    ]);
    expect(parseHolders(null)).toEqual([]);
    expect(parseHolders('<hold xmlns="https://livemerge.dev/xmlns/hold/1"/>')).toEqual([]);
  });
});
