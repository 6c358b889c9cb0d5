// Task queue names are public API (DESIGN.md "Words").
export const ENGINE_TASK_QUEUE = 'livemerge-engine';
export const STORAGE_TASK_QUEUE = 'livemerge-storage';
export function hostTaskQueue(hostId: string): string {
  return `livemerge-host-${hostId}`;
}
