// What the fuzz tests of the SMTP, IMAP and POP3 front ends share: how many runs, the heap
// after a collection, and a client that reads replies line by line with a deadline.
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/**
 * Runs of one fuzz property: the default is what CI runs (a fixed seed, tens of seconds);
 * FUZZ_RUNS raises it for a longer local search, FUZZ_SEED explores other inputs.
 */
export function fuzzOptions(defaultRuns: number): { numRuns: number; seed: number } {
  return {
    numRuns: Number(process.env.FUZZ_RUNS ?? defaultRuns),
    seed: Number(process.env.FUZZ_SEED ?? 16),
  };
}

/** Bytes of heap in use after a full garbage collection (the services run in this process). */
export function heapAfterGc(): number {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  gc();
  gc();
  return process.memoryUsage().heapUsed;
}

/** The heap check of a fuzz suite: the heap after a collection before the runs, and after them. */
export class HeapWatch {
  private before = 0;

  start(): void {
    this.before = heapAfterGc();
  }

  /** The growth allowed is generous: caches fill as the runs go; a leak per command does not fit. */
  assertBounded(limitBytes = 64 * 1024 * 1024): void {
    const grown = heapAfterGc() - this.before;
    if (grown > limitBytes) throw new Error(`heap grew by ${Math.round(grown / 1024 / 1024)} MiB`);
  }
}

/**
 * One fuzz run: a session on a fresh connection, closed whatever happens, then a new
 * connection that must still be greeted (the service is up).
 */
export async function fuzzSession(
  greeted: () => Promise<LineClient>,
  run: (c: LineClient) => Promise<void>,
): Promise<void> {
  const c = await greeted();
  try {
    await run(c);
  } finally {
    c.close();
  }
  (await greeted()).close();
}

/** A raw client: writes bytes, reads CRLF-terminated lines (latin1) and counted bytes. */
export class LineClient {
  private buf = Buffer.alloc(0);
  private waiters: (() => void)[] = [];
  closed = false;

  private constructor(readonly socket: Socket) {
    socket.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => undefined);
  }

  static async connect(
    port: number,
    opts: { tls?: boolean; localAddress?: string } = {},
  ): Promise<LineClient> {
    const from = opts.localAddress ? { localAddress: opts.localAddress } : {};
    const socket = opts.tls
      ? tlsConnect({ port, host: '127.0.0.1', rejectUnauthorized: false, ...from })
      : netConnect({ port, host: '127.0.0.1', ...from });
    await new Promise<void>((resolve, reject) => {
      socket.once(opts.tls ? 'secureConnect' : 'connect', () => resolve());
      socket.once('error', reject);
    });
    return new LineClient(socket);
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  private async wait(deadline: number): Promise<boolean> {
    const left = deadline - Date.now();
    if (left <= 0) return false;
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, left);
      this.waiters.push(() => {
        clearTimeout(t);
        resolve();
      });
    });
    return true;
  }

  write(data: string | Buffer): void {
    if (!this.closed) this.socket.write(data);
  }

  /**
   * The next line without its CRLF; null once the connection closed with nothing left.
   * Throws when no line ends before the deadline, or a line without CRLF is cut by the close.
   */
  async line(timeoutMs = 10_000): Promise<string | null> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const nl = this.buf.indexOf('\r\n');
      if (nl >= 0) {
        const line = this.buf.subarray(0, nl).toString('latin1');
        this.buf = this.buf.subarray(nl + 2);
        return line;
      }
      if (this.closed) {
        if (!this.buf.length) return null;
        throw new Error(`connection closed in the middle of a line: ${JSON.stringify(this.unread())}`);
      }
      if (!(await this.wait(deadline)))
        throw new Error(`no line in time; unread: ${JSON.stringify(this.unread())}`);
    }
  }

  /** Exactly n bytes (an IMAP literal). */
  async bytes(n: number, timeoutMs = 10_000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (this.buf.length < n) {
      if (this.closed) throw new Error(`connection closed ${n - this.buf.length} bytes short of a literal`);
      if (!(await this.wait(deadline))) throw new Error('literal not complete in time');
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** Waits for the server to close the connection; false if it did not before the deadline. */
  async waitClosed(timeoutMs = 10_000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed) if (!(await this.wait(deadline))) return false;
    return true;
  }

  /** What was received and not read yet. */
  unread(): string {
    return this.buf.toString('latin1').slice(0, 300);
  }

  close(): void {
    this.socket.destroy();
  }
}
