// The IMAP client of the benchmarks: a command, its tagged reply, nothing else.
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';

/** Minimal client: sends a command and waits for its tagged reply. */
export class Client {
  /** Text received and not consumed yet; the first `scanned` chunks were searched already. */
  private chunks: string[] = [];
  private scanned = 0;
  /** The end of the searched text, for a line that spans two chunks. */
  private tail = '';
  private wake: (() => void) | null = null;
  private n = 0;
  constructor(public sock: Socket) {
    this.listen();
  }
  closed = false;
  private listen(): void {
    this.sock.on('error', () => undefined);
    this.sock.on('close', () => {
      this.closed = true;
      this.wake?.();
    });
    this.sock.on('data', (d: Buffer) => {
      this.chunks.push(d.toString('latin1'));
      this.wake?.();
    });
  }
  static async open(port: number): Promise<Client> {
    const s = connect(port, '127.0.0.1');
    s.setNoDelay(true);
    await new Promise((r) => s.once('connect', r));
    const c = new Client(s);
    await c.waitFor(/^\* OK.*\r\n/m);
    return c;
  }
  /**
   * Waits for `re` and returns the text up to the end of its match. Each chunk is
   * searched once, so finding the end of a 5 MB response costs the client the same
   * however the server splits its writes (searching all of it again on every read grew
   * with the square of its size, and with the number of writes).
   */
  async waitFor(re: RegExp): Promise<string>;
  async waitFor(re: RegExp, timeoutMs: number): Promise<string | null>;
  async waitFor(re: RegExp, timeoutMs?: number): Promise<string | null> {
    const deadline = timeoutMs === undefined ? Infinity : Date.now() + timeoutMs;
    for (;;) {
      while (this.scanned < this.chunks.length) {
        const chunk = this.chunks[this.scanned]!;
        const text = this.tail + chunk;
        const m = re.exec(text);
        if (m) {
          const end = m.index + m[0].length - this.tail.length;
          const out = this.chunks.slice(0, this.scanned).join('') + chunk.slice(0, end);
          const rest = chunk.slice(end);
          this.chunks = this.chunks.slice(this.scanned + 1);
          if (rest) this.chunks.unshift(rest);
          this.scanned = 0;
          this.tail = '';
          return out;
        }
        this.tail = text.slice(-512);
        this.scanned++;
      }
      if (this.closed) throw new Error('connection closed');
      const left = deadline - Date.now();
      if (left <= 0) return null;
      await new Promise<void>((r) => {
        const t = left === Infinity ? null : setTimeout(r, left);
        this.wake = () => {
          if (t) clearTimeout(t);
          r();
        };
      });
    }
  }
  async cmd(text: string): Promise<string> {
    const r = await this.reply(this.send(text));
    if (r.status !== 'OK') throw new Error(`${text}: ${r.line}`);
    return r.out;
  }
  /** Writes a command (a literal included, if any) and returns its tag. */
  send(text: string): string {
    const tag = `t${++this.n}`;
    this.sock.write(`${tag} ${text}\r\n`);
    return tag;
  }
  /** Waits for the tagged reply: everything received up to it, its status and its line. */
  async reply(tag: string): Promise<{ out: string; status: string; line: string }> {
    const out = await this.waitFor(new RegExp(`(^|\\r\\n)${tag} (OK|NO|BAD)[^\\r]*\\r\\n`));
    const line = out.slice(out.lastIndexOf(`${tag} `)).trimEnd();
    return { out, status: /^\S+ (\w+)/.exec(line)?.[1] ?? '', line };
  }
  /** Writes raw text (the DONE that ends IDLE). */
  write(text: string): void {
    this.sock.write(text);
  }
  async startTls(): Promise<void> {
    await this.cmd('STARTTLS');
    const t = tlsConnect({ socket: this.sock, rejectUnauthorized: false });
    await new Promise((r) => t.once('secureConnect', r));
    this.sock = t;
    this.listen();
  }
  close(): void {
    this.sock.destroy();
  }
}
