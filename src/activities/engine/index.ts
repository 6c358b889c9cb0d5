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
    /** Read-only. */
    locatePolicy: () => Promise.resolve({ timeoutSeconds: deps.locateTimeoutSeconds }),
  };
}
