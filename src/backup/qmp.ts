// A small QMP client over a unix socket: enough to drive a qemu-storage-daemon (greeting,
// qmp_capabilities, commands, events). One command at a time is all the backup needs, but replies
// are matched by id so a stray event or late reply can never be taken for another command's answer.
import net from 'node:net';

/** A QMP command failed: `errorClass`/`desc` are QEMU's own words (e.g. GenericError, "Bitmap not found"). */
export class QmpError extends Error {
  override readonly name = 'QmpError';
  readonly code = 'QMP_ERROR' as const;
  constructor(
    readonly command: string,
    readonly errorClass: string,
    readonly desc: string,
  ) {
    super(`QMP ${command} failed: ${errorClass}: ${desc}`);
  }
}

/** The QMP connection could not be made or was lost (no answer is coming). */
export class QmpConnectionError extends Error {
  override readonly name = 'QmpConnectionError';
  readonly code = 'QMP_CONNECTION' as const;
  constructor(
    readonly socketPath: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`QMP ${socketPath}: ${message}`, options);
  }
}

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

export interface QmpConnectOptions {
  /** Keep retrying while the socket does not exist or refuses (the daemon is starting) for this long. */
  timeoutMs?: number;
  /** Give up early (e.g. the daemon exited): the reason becomes the error's cause. */
  signal?: AbortSignal;
}

interface Pending {
  command: string;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

export class QmpClient {
  private buf = '';
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private readonly listeners = new Set<(e: QmpEvent) => void>();
  private closedError: Error | undefined;

  private constructor(
    private readonly sock: net.Socket,
    readonly socketPath: string,
  ) {
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => this.onData(d));
    sock.on('error', (e) => this.fail(new QmpConnectionError(socketPath, e.message, { cause: e })));
    sock.on('close', () => this.fail(new QmpConnectionError(socketPath, 'connection closed')));
  }

  /** Connects (retrying while the daemon has not created/opened its socket), reads the greeting, negotiates. */
  static async connect(socketPath: string, opts: QmpConnectOptions = {}): Promise<QmpClient> {
    const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
    let delay = 10;
    for (;;) {
      opts.signal?.throwIfAborted();
      try {
        const sock = await openSocket(socketPath);
        const client = new QmpClient(sock, socketPath);
        try {
          await client.greeting();
          await client.execute('qmp_capabilities');
        } catch (e) {
          client.close();
          throw e;
        }
        return client;
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        const retryable = code === 'ENOENT' || code === 'ECONNREFUSED';
        if (!retryable || Date.now() + delay > deadline) {
          if (e instanceof QmpConnectionError || e instanceof QmpError) throw e;
          throw new QmpConnectionError(socketPath, `cannot connect: ${(e as Error).message}`, { cause: e });
        }
        // The socket appears when the daemon has parsed its options: a bounded back-off, not a fixed sleep.
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 200);
      }
    }
  }

  private greetingWaiter: { resolve: () => void; reject: (e: Error) => void } | undefined;
  private greeted = false;

  private greeting(): Promise<void> {
    if (this.greeted) return Promise.resolve();
    return new Promise((resolve, reject) => {
      if (this.closedError) return reject(this.closedError);
      this.greetingWaiter = { resolve, reject };
    });
  }

  /** Runs a command; resolves with its `return`, rejects with QmpError (class, desc) or QmpConnectionError. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.closedError) return Promise.reject(this.closedError);
    const id = `lm-${this.nextId++}`;
    const msg = JSON.stringify(
      args === undefined ? { execute: command, id } : { execute: command, arguments: args, id },
    );
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject });
      this.sock.write(`${msg}\n`);
    });
  }

  /** Calls `fn` for every event from now on; returns the unsubscribe function. */
  onEvent(fn: (e: QmpEvent) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** The connection is gone (closed here, or the daemon quit or was killed). */
  get closed(): boolean {
    return this.closedError !== undefined;
  }

  close(): void {
    this.fail(new QmpConnectionError(this.socketPath, 'closed by the client'));
    this.sock.destroy();
  }

  private onData(d: string): void {
    this.buf += d;
    for (let nl = this.buf.indexOf('\n'); nl >= 0; nl = this.buf.indexOf('\n')) {
      const line = this.buf.slice(0, nl).trim();
      this.buf = this.buf.slice(nl + 1);
      if (line) this.onMessage(line);
    }
  }

  private onMessage(line: string): void {
    let m: Record<string, unknown>;
    try {
      m = JSON.parse(line) as Record<string, unknown>;
    } catch (e) {
      this.fail(new QmpConnectionError(this.socketPath, `not JSON: ${line.slice(0, 200)}`, { cause: e }));
      this.sock.destroy();
      return;
    }
    if ('QMP' in m) {
      this.greeted = true;
      this.greetingWaiter?.resolve();
      this.greetingWaiter = undefined;
      return;
    }
    if (typeof m.event === 'string') {
      for (const l of this.listeners) l(m as unknown as QmpEvent);
      return;
    }
    const id = typeof m.id === 'string' ? m.id : undefined;
    const p = id !== undefined ? this.pending.get(id) : undefined;
    if (!p || id === undefined) return;
    this.pending.delete(id);
    if ('error' in m) {
      const err = (m.error ?? {}) as { class?: string; desc?: string };
      p.reject(new QmpError(p.command, err.class ?? 'UnknownError', err.desc ?? JSON.stringify(m.error)));
    } else {
      p.resolve(m.return);
    }
  }

  private fail(e: Error): void {
    if (this.closedError) return;
    this.closedError = e;
    this.greetingWaiter?.reject(e);
    this.greetingWaiter = undefined;
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }
}

function openSocket(socketPath: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.createConnection(socketPath);
    s.once('connect', () => {
      s.off('error', reject);
      resolve(s);
    });
    s.once('error', reject);
  });
}
