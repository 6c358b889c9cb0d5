// Named points inside activities where a failure-injection run may stop one (docs/failure-model.md).
// Activities only call the hook; production workers pass none, so it costs nothing. The implementation
// that holds on files lives apart, in src/testing/holds.ts, and is wired only when LIVEMERGE_HOLD_DIR is set.

export interface BreakpointOptions {
  /** Past the point of no return a held step must not end on a cancellation (default true). */
  cancellable?: boolean;
}

export type Breakpoint = (name: string, opts?: BreakpointOptions) => Promise<void>;

export const noBreakpoint: Breakpoint = () => Promise.resolve();
