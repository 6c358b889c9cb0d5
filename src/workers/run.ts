import type { Worker } from '@temporalio/worker';

/** Runs workers until SIGINT/SIGTERM (the SDK's default shutdown signals), then resolves. */
export async function runUntilShutdown(workers: Worker[]): Promise<void> {
  await Promise.all(workers.map((w) => w.run()));
}
