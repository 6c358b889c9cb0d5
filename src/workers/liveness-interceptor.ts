// Agent liveness for every activity: while an activity whose options set a heartbeatTimeout runs, the
// worker heartbeats for it once a second (the SDK throttles the sends to 80% of the timeout), repeating
// the activity's own last heartbeat details, if it sent any, so progress in them is never overwritten.
// A killed agent thus stops heartbeating and the server retries its activity on a live agent within the
// heartbeat timeout, instead of after the activity's whole startToCloseTimeout (minutes): see
// docs/failure-model.md, "agent killed while a short activity runs".
import { Context } from '@temporalio/activity';
import type { ActivityInboundCallsInterceptor, ActivityInterceptorsFactory } from '@temporalio/worker';

const TICK_MS = 1000;

export const livenessInterceptors: ActivityInterceptorsFactory = () => ({ inbound });

const inbound: ActivityInboundCallsInterceptor = {
  async execute(input, next) {
    const ctx = Context.current();
    if (!ctx.info.heartbeatTimeoutMs) return await next(input);
    const own = ctx.heartbeat;
    let details: unknown = undefined;
    let lastAt = Date.now();
    // The activity's own heartbeats go through unchanged; they are remembered for the ticker.
    Object.defineProperty(ctx, 'heartbeat', {
      configurable: true,
      writable: true,
      value: (d?: unknown) => {
        details = d;
        lastAt = Date.now();
        own(d);
      },
    });
    const tick = Math.min(TICK_MS, Math.max(100, Math.floor(ctx.info.heartbeatTimeoutMs / 4)));
    const timer = setInterval(() => {
      if (Date.now() - lastAt < tick) return;
      lastAt = Date.now();
      own(details);
    }, tick);
    try {
      return await next(input);
    } finally {
      clearInterval(timer);
    }
  },
};
