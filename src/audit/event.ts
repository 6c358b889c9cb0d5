// One audit log line's event (DESIGN.md step 9): what the engine's `audit` activity writes.
// Pure types: workflows build these (they import them through the activity contracts).
export interface AuditEvent {
  /** Unique per outcome of one workflow run: a retried audit activity writes it once. */
  eventId: string;
  outcome: 'started' | 'completed' | 'failed' | 'cancelled';
  workflowType: string;
  workflowId: string;
  runId: string;
  vmId: string;
  hostId: string | null;
  detail: Record<string, unknown>;
}
