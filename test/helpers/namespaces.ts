// Pre-created namespaces, one per vitest fork (VITEST_POOL_ID is 1..maxForks).
export const POOL_NAMESPACES = ['lm-pool-1', 'lm-pool-2', 'lm-pool-3', 'lm-pool-4'];

export function poolNamespace(): string {
  const id = Number(process.env.VITEST_POOL_ID ?? 1);
  const ns = POOL_NAMESPACES[(id - 1) % POOL_NAMESPACES.length];
  if (!ns) throw new Error(`no namespace for VITEST_POOL_ID ${id}`);
  return ns;
}
