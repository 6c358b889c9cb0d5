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
    /**
     * Read-only: the lock workflow's memo names the workflow that took it; null when the lock is not
     * running or its holder is not (a closed holder's lock is ending by its parent-close policy).
     */
    vmLockHolder: async ({ vmId }) => {
      const client = Context.current().client;
      const running = async (workflowId: string, runId?: string) => {
        try {
          const d = await client.workflow.getHandle(workflowId, runId).describe();
          return d.status.name === 'RUNNING' ? d : null;
        } catch (err) {
          if (err instanceof WorkflowNotFoundError) return null;
          throw err;
        }
      };
      const lock = await running(`vm-lock:${vmId}`);
      const holder = lock?.memo?.holder as
        { workflowId?: unknown; workflowType?: unknown; runId?: unknown } | undefined;
      if (typeof holder?.workflowId !== 'string' || typeof holder.workflowType !== 'string') return null;
      // Locks taken before lean histories v2 name no run: the holder's latest run then.
      const runId = typeof holder.runId === 'string' ? holder.runId : undefined;
      if (!(await running(holder.workflowId, runId))) return null;
      return { workflowId: holder.workflowId, workflowType: holder.workflowType };
    },
    /** Read-only. */
    locatePolicy: () => Promise.resolve({ timeoutSeconds: deps.locateTimeoutSeconds }),
  };
}
