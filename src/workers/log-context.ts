// Activity interceptors: an activity's log records (its own and the SDK's about it) carry the vmId its input
// names, next to the SDK's workflowId and workflowRunId (src/workers/telemetry.ts writes them as JSON).
import type { ActivityInterceptorsFactory } from '@temporalio/worker';
import { vmIdOfArgs } from '../common/ids';

export const logContextInterceptors: ActivityInterceptorsFactory = () => {
  // One factory call per activity execution.
  let vmId: string | undefined;
  return {
    inbound: {
      async execute(input, next) {
        vmId = vmIdOfArgs(input.args);
        return await next(input);
      },
    },
    outbound: {
      getLogAttributes(attrs, next) {
        return next(vmId ? { ...attrs, vmId } : attrs);
      },
    },
  };
};
