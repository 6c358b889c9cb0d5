// Running libvirt calls off the event loop, one at a time per connection, with typed errors.
//
// Every call that may talk to libvirtd goes through `invoke()`: koffi's `.async()` runs it on a
// libuv worker thread and resolves a Promise on completion, so the JS thread keeps running.
// Calls on one connection are serialized (FIFO) so that the error captured by the connection's
// error handler during a call (see errors.ts) belongs to that call and nothing else. Different
// connections run in parallel. libvirtd itself serializes most work per domain anyway
// (domain jobs), so the queue costs little; open a second connection for true parallelism.
import type { LibvirtErrorDetails } from './errors';
import { LibvirtError } from './errors';
import type { ErrorSlot } from './errors';
import type { NativeFn } from './ffi';

function toError(e: unknown): Error {
  return e instanceof Error ? e : new Error(typeof e === 'string' ? e : JSON.stringify(e));
}

/** Runs a native function on a koffi worker thread. */
export function callAsync<A extends unknown[], R>(fn: NativeFn<A, R>, ...args: A): Promise<R> {
  return new Promise<R>((resolve, reject) => {
    try {
      fn.async(...args, (err: unknown, result: R) => {
        if (err) reject(toError(err));
        else resolve(result);
      });
    } catch (e) {
      reject(toError(e));
    }
  });
}

/** FIFO of async jobs: each starts when the previous one has settled. */
export class CallQueue {
  private tail: Promise<unknown> = Promise.resolve();
  private pending = 0;

  run<T>(job: () => Promise<T>): Promise<T> {
    this.pending++;
    const result = this.tail.then(job, job);
    this.tail = result.then(
      () => {
        this.pending--;
      },
      () => {
        this.pending--;
      },
    );
    return result;
  }

  get size(): number {
    return this.pending;
  }
}

/** The serialization and error-capture context a call runs in (one per connection). */
export interface CallContext {
  readonly queue: CallQueue;
  readonly errors: ErrorSlot;
}

export type FailureTest<R> = (result: R) => boolean;

/** libvirt's two failure conventions. */
export const failsIfNegative: FailureTest<number> = (r) => r < 0;
export const failsIfNull: FailureTest<unknown> = (r) => r === null || r === undefined;

/**
 * Calls `fn(...args)` on a worker thread inside `ctx`'s queue. When `failed(result)` the error
 * libvirt dispatched during the call becomes a LibvirtError naming `name`.
 */
export function invoke<A extends unknown[], R>(
  ctx: CallContext,
  name: string,
  fn: NativeFn<A, R>,
  failed: FailureTest<R>,
  ...args: A
): Promise<R> {
  return ctx.queue.run(async () => {
    ctx.errors.arm();
    let result: R;
    let details: LibvirtErrorDetails | null;
    try {
      result = await callAsync(fn, ...args);
    } finally {
      details = ctx.errors.disarm();
    }
    if (failed(result)) throw new LibvirtError(name, details);
    return result;
  });
}

/** invoke() for functions that return a pointer, NULL on failure. */
export async function invokePtr<A extends unknown[], R>(
  ctx: CallContext,
  name: string,
  fn: NativeFn<A, R | null>,
  ...args: A
): Promise<R> {
  const r = await invoke(ctx, name, fn, failsIfNull, ...args);
  return r as R;
}
