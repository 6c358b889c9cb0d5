// Every id in livemerge is a canonical lower-case UUID; nothing else is ever used to build a path.
// Pure (no Node built-ins) so workflows can validate with it too.
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export function isUuid(value: unknown): value is string {
  return typeof value === 'string' && UUID_RE.test(value);
}

export class InvalidIdError extends Error {
  override readonly name = 'InvalidIdError';
  constructor(
    readonly field: string,
    readonly value: unknown,
  ) {
    super(`${field} must be a canonical lower-case UUID, got ${JSON.stringify(value)}`);
  }
}

/** Host ids name task queues (`livemerge-host-<id>`): keep them to a safe alphabet. */
const HOST_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
export function isHostId(value: unknown): value is string {
  return typeof value === 'string' && HOST_ID_RE.test(value);
}

/** The VM a workflow's or activity's input names (its first argument's `vmId`), for log records. */
export function vmIdOfArgs(args: readonly unknown[]): string | undefined {
  const first = args[0];
  if (typeof first !== 'object' || first === null || !('vmId' in first)) return undefined;
  return isUuid(first.vmId) ? first.vmId : undefined;
}
