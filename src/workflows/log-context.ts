// Workflow interceptors (bundled through the engine's interceptors.workflowModules): the workflow's log
// records carry the vmId its input names, next to the SDK's workflowId and runId. No commands: replay safe.
import type { WorkflowInterceptorsFactory } from '@temporalio/workflow';
import { vmIdOfArgs } from '../common/ids';

export const interceptors: WorkflowInterceptorsFactory = () => {
  // One factory call per workflow execution: the closure is this workflow's own.
  let vmId: string | undefined;
  return {
    inbound: [
      {
        async execute(input, next) {
          vmId = vmIdOfArgs(input.args);
          return await next(input);
        },
      },
    ],
    outbound: [
      {
        getLogAttributes(attrs, next) {
          return next(vmId ? { ...attrs, vmId } : attrs);
        },
      },
    ],
  };
};
