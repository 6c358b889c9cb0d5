// The benchmarks' libvirt-API anchor: a commit on the benchmark's own connection, woken by the block job
// events (what the host agent does, without Temporal), pivoted at once on READY when active. virsh's --wait
// polls every 500 ms instead.
import type { Domain, LibvirtConnection } from '../src/libvirt';
import { BlockJobStatus } from '../src/libvirt';

export async function apiCommit(
  conn: LibvirtConnection,
  dom: Domain,
  base: string | null,
  top: string | null,
  opts: { active: boolean; bandwidthBytesPerSec?: number },
): Promise<void> {
  const on = (status: number) =>
    conn.waitForBlockJob(
      (e) => e.domainUuid === dom.uuid && e.disk === 'vda' && e.status === status,
      600_000,
    );
  const first = on(opts.active ? BlockJobStatus.READY : BlockJobStatus.COMPLETED);
  await dom.blockCommit('vda', base, top, opts.bandwidthBytesPerSec ?? 0, { active: opts.active });
  await first;
  if (!opts.active) return;
  const pivoted = on(BlockJobStatus.COMPLETED);
  await dom.blockJobAbort('vda', { pivot: true });
  await pivoted;
}
