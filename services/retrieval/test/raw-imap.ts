import { connect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';

/** A line-level IMAP client for tests that send what real clients never would. */
export class RawImap {
  private buf = '';
  private waiters: (() => void)[] = [];
  closed = false;

  private constructor(public socket: Socket) {
    this.attach(socket);
  }

  private attach(s: Socket): void {
    s.on('data', (d: Buffer) => {
      this.buf += d.toString('latin1');
      for (const w of this.waiters.splice(0)) w();
    });
    s.on('close', () => {
      this.closed = true;
      for (const w of this.waiters.splice(0)) w();
    });
    s.on('error', () => undefined);
  }

  static async connect(port: number, opts: { tls?: boolean; localAddress?: string } = {}): Promise<RawImap> {
    const s = opts.tls
      ? tlsConnect({
          port,
          host: '127.0.0.1',
          rejectUnauthorized: false,
          ...(opts.localAddress ? { localAddress: opts.localAddress } : {}),
        })
      : connect({
          port,
          host: '127.0.0.1',
          ...(opts.localAddress ? { localAddress: opts.localAddress } : {}),
        });
    await new Promise<void>((resolve, reject) => {
      s.once(opts.tls ? 'secureConnect' : 'connect', () => resolve());
      s.once('error', reject);
    });
    return new RawImap(s);
  }

  /** A client past the greeting and logged in as `user` with `password` (a plain LOGIN). */
  static async loggedIn(port: number, user: string, password: string): Promise<RawImap> {
    const c = await RawImap.connect(port);
    await c.until(/^\* OK/m);
    const res = await c.cmd('l', `LOGIN ${user} "${password}"`);
    if (!/^l OK/m.test(res)) throw new Error(`login as ${user} refused: ${res}`);
    return c;
  }

  /** Waits until the buffered output matches `re`; returns and consumes everything up to the match's line end. */
  async until(re: RegExp, timeoutMs = 5000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = re.exec(this.buf);
      if (m) {
        const end = this.buf.indexOf('\n', m.index + m[0].length - 1);
        const upto = end < 0 ? this.buf.length : end + 1;
        const out = this.buf.slice(0, upto);
        this.buf = this.buf.slice(upto);
        return out;
      }
      if (this.closed) throw new Error(`connection closed; got: ${this.buf}`);
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${re}; got: ${this.buf}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.max(1, deadline - Date.now()));
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  send(data: string | Buffer): void {
    this.socket.write(data);
  }

  async cmd(tag: string, text: string, timeoutMs?: number): Promise<string> {
    this.send(`${tag} ${text}\r\n`);
    return this.until(new RegExp(`^${tag} (OK|NO|BAD)`, 'm'), timeoutMs);
  }

  async waitClosed(timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    if (!this.closed) throw new Error('connection still open');
  }

  async startTls(): Promise<void> {
    const s = tlsConnect({ socket: this.socket, rejectUnauthorized: false });
    await new Promise<void>((resolve, reject) => {
      s.once('secureConnect', () => resolve());
      s.once('error', reject);
    });
    this.socket = s;
    this.attach(s);
  }

  close(): void {
    this.socket.destroy();
  }
}
