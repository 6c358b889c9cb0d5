import { Context } from '@temporalio/activity';
import { WorkflowNotFoundError } from '@temporalio/client';
import type { AuditLog } from '../../audit/audit-log';
import type { EngineActivities } from '../contracts';

export interface EngineActivityDeps {
  auditLog: AuditLog;
  hosts: string[];
  /** LIVEMERGE_LOCATE_TIMEOUT: seconds a VM's location waits for hosts that do not answer. */
  locateTimeoutSeconds: number;
}

/** Engine-side activities on `livemerge-engine`. */
export function createEngineActivities(deps: EngineActivityDeps): EngineActivities {
  return {
    /** Idempotent: an event id already in the log is not written again. */
    audit: (event) => deps.auditLog.append(event),
    /** Read-only. */
    configuredHosts: () => Promise.resolve(deps.hosts),
    /** Read-only: the lock workflow's memo names the workflow that took it. */
    vmLockHolder: async ({ vmId }) => {
      let memo: Record<string, unknown> | undefined;
      try {
        const d = await Context.current().client.workflow.getHandle(`vm-lock:${vmId}`).describe();
        if (d.status.name === 'RUNNING') memo = d.memo;
      } catch (err) {
        if (!(err instanceof WorkflowNotFoundError)) throw err;
      }
      const holder = memo?.holder as { workflowId?: unknown; workflowType?: unknown } | undefined;
      if (typeof holder?.workflowId !== 'string' || typeof holder.workflowType !== 'string') return null;
      return { workflowId: holder.workflowId, workflowType: holder.workflowType };
    },
    /** Read-only. */
    locatePolicy: () => Promise.resolve({ timeoutSeconds: deps.locateTimeoutSeconds }),
  };
}
