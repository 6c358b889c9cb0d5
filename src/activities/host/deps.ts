// What host activities need from the outside world; the host agent wires the real libvirt connection.
import type { BlockJobEvent, Disposer, LifecycleEventInfo, Listener } from '../../libvirt/events';
import type { Domain } from '../../libvirt/domain';
import type { DomainXmls } from '../../libvirt/domain-xmls';
import type { Breakpoint } from '../breakpoints';

/** The part of LibvirtConnection host activities use. */
export interface HostLibvirt {
  listDomains(): Promise<Array<{ name: string; uuid: string; state: number }>>;
  lookupByUuid(uuid: string): Promise<Domain>;
  defineXml(xml: string): Promise<Domain>;
  onBlockJob(listener: Listener<BlockJobEvent>): Disposer;
  onLifecycle(listener: Listener<LifecycleEventInfo>): Disposer;
}

export type LibvirtProvider = () => Promise<HostLibvirt>;

export interface HostActivityDeps {
  hostId: string;
  storageRoot: string;
  libvirt: LibvirtProvider;
  /** Every configured host's domains, for the shared-base check (fails closed: an error refuses). */
  domainXmls: () => Promise<DomainXmls[]>;
  /** Poll interval of the block-job fallback (events are the fast path). */
  jobPollMs?: number;
  /** Failure injection only (src/testing/holds.ts); default: none. */
  breakpoint?: Breakpoint;
}
