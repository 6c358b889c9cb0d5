// libvirt's default event loop, driven from Node.
//
// libvirt delivers domain events (and answers libvirtd's keepalive pings) only while someone
// runs its event loop. We register the default poll()-based implementation once per process
// (virEventRegisterDefaultImpl, before any connection is opened) and run iterations with
// virEventRunDefaultImpl through koffi's `.async()`: each iteration blocks in poll() on a libuv
// worker thread, never on the JS thread. Callbacks libvirt runs inside an iteration (domain
// events, the connection-close callback) are relayed by koffi to the JS thread; the loop thread
// waits for them, so their native arguments stay valid while JS decodes them.
//
// The loop runs while at least one connection holds it (acquire/release). Releasing the last
// one sets `running = false` and fires a private wake-up timer so the blocked poll() returns
// promptly; no iteration is then pending and the process can exit. While it runs the loop keeps
// the process alive (like an open socket) and occupies one libuv thread-pool thread
// (UV_THREADPOOL_SIZE, default 4).
import {
  EventTimeoutCallbackProto,
  registerCallback,
  virEventAddTimeout,
  virEventRegisterDefaultImpl,
  virEventRunDefaultImpl,
  virEventUpdateTimeout,
} from './ffi';
import { callAsync } from './invoke';

const DISABLED = -1;

class DefaultEventLoop {
  private registered = false;
  private wakeTimer = -1;
  private users = 0;
  private loop: Promise<void> | null = null;
  private iterations = 0;
  private failures = 0;

  /** virEventRegisterDefaultImpl + the wake-up timer. Idempotent; must precede virConnectOpen. */
  ensureRegistered(): void {
    if (this.registered) return;
    if (virEventRegisterDefaultImpl() < 0) throw new Error('virEventRegisterDefaultImpl failed');
    const cb = registerCallback((timer: number) => {
      // Runs on the JS thread while the loop thread waits: disarm until the next wake().
      virEventUpdateTimeout(timer, DISABLED);
    }, EventTimeoutCallbackProto);
    this.wakeTimer = virEventAddTimeout(DISABLED, cb, null, null);
    if (this.wakeTimer < 0) throw new Error('virEventAddTimeout failed');
    this.registered = true;
  }

  acquire(): void {
    this.ensureRegistered();
    this.users++;
    this.loop ??= this.run();
  }

  /** Drops one user; the last one stops the loop and gets a promise for its final iteration. */
  release(): Promise<void> {
    if (this.users > 0) this.users--;
    if (this.users > 0) return Promise.resolve();
    this.wake();
    return this.loop ?? Promise.resolve();
  }

  /** Makes the current (or next) iteration return immediately. */
  wake(): void {
    if (this.registered) virEventUpdateTimeout(this.wakeTimer, 0);
  }

  get running(): boolean {
    return this.loop !== null;
  }

  get stats(): { iterations: number; failures: number; users: number } {
    return { iterations: this.iterations, failures: this.failures, users: this.users };
  }

  private async run(): Promise<void> {
    try {
      while (this.users > 0) {
        const rc = await callAsync(virEventRunDefaultImpl);
        this.iterations++;
        if (rc < 0) {
          // Should not happen with the default impl; avoid a hot spin if it does.
          this.failures++;
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    } finally {
      this.loop = null;
      // A connection acquired the loop while the last iteration was finishing.
      if (this.users > 0) this.loop = this.run();
    }
  }
}

/** The process-wide libvirt event loop. */
export const eventLoop = new DefaultEventLoop();
