import type { AuditLog } from '../../audit/audit-log';
import type { EngineActivities } from '../contracts';

export interface EngineActivityDeps {
  auditLog: AuditLog;
  hosts: string[];
}

/** Engine-side activities on `livemerge-engine`. */
export function createEngineActivities(deps: EngineActivityDeps): EngineActivities {
  return {
    /** Idempotent: an event id already in the log is not written again. */
    audit: (event) => deps.auditLog.append(event),
    /** Read-only. */
    configuredHosts: () => Promise.resolve(deps.hosts),
  };
}
