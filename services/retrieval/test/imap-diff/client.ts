import { connect, type Socket } from 'node:net';

/** One IMAP connection of a script: sends commands (with literals) and collects whole responses. */
export class ScriptClient {
  private buf = Buffer.alloc(0);
  private wake: (() => void) | null = null;
  private closed = false;
  private n = 0;

  private constructor(
    private sock: Socket,
    private prefix: string,
  ) {
    sock.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.wake?.();
    });
    sock.on('close', () => {
      this.closed = true;
      this.wake?.();
    });
    sock.on('error', () => undefined);
  }

  static async open(port: number, prefix: string): Promise<ScriptClient> {
    const sock = connect(port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => {
      sock.once('connect', resolve);
      sock.once('error', reject);
    });
    const c = new ScriptClient(sock, prefix);
    const greeting = await c.next(Date.now() + 10_000);
    if (!greeting.startsWith('* OK')) throw new Error(`greeting: ${greeting}`);
    return c;
  }

  /** The next whole response (latin1, without its final CRLF), literals included. */
  private async next(deadline: number): Promise<string> {
    for (;;) {
      let at = 0;
      for (;;) {
        const eol = this.buf.indexOf('\r\n', at);
        if (eol < 0) break;
        const lit = /~?\{(\d+)\+?\}$/.exec(this.buf.toString('latin1', at, eol));
        if (!lit) {
          const out = this.buf.toString('latin1', 0, eol);
          this.buf = this.buf.subarray(eol + 2);
          return out;
        }
        at = eol + 2 + Number(lit[1]);
        if (at > this.buf.length) break;
      }
      if (this.closed) throw new Error(`connection closed; pending: ${this.buf.toString('latin1')}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no response in time; pending: ${this.buf.toString('latin1')}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.wake = () => {
          clearTimeout(t);
          r();
        };
      });
      this.wake = null;
    }
  }

  /**
   * Runs one command: `{name}` parts become synchronising literals of `messages`
   * (`~{name}` literal8, `{name+}` non-synchronising).
   * Returns every response up to and including the tagged one.
   */
  async run(command: string, messages: Map<string, Buffer>, timeoutMs = 15_000): Promise<string[]> {
    const deadline = Date.now() + timeoutMs;
    const tag = `${this.prefix}${++this.n}`;
    // `~{name}`: the message as a literal8 (RFC 3516 §4.4, APPEND of binary content);
    // `{name+}`: a non-synchronising literal (RFC 7888), sent without waiting for "+"
    const parts = command.split(/(~?)\{([a-z][\w-]*)(\+?)\}/);
    const out: string[] = [];
    let text = `${tag} ${parts[0]}`;
    for (let i = 1; i < parts.length; i += 4) {
      const body = messages.get(parts[i + 1]!)!;
      const plus = parts[i + 2]!;
      this.sock.write(Buffer.from(`${text}${parts[i]}{${body.length}${plus}}\r\n`, 'utf8'));
      if (!plus)
        for (;;) {
          const r = await this.next(deadline);
          if (r.startsWith('+')) break;
          out.push(r);
          if (r.startsWith(`${tag} `)) return out; // refused before the literal
        }
      this.sock.write(body);
      text = parts[i + 3]!;
    }
    this.sock.write(Buffer.from(`${text}\r\n`, 'utf8'));
    for (;;) {
      const r = await this.next(deadline);
      if (r.startsWith('+')) {
        // IDLE (RFC 2177) ends with DONE once the server is idling
        if (/^IDLE$/i.test(command)) this.sock.write('DONE\r\n');
        continue;
      }
      out.push(r);
      if (r.startsWith(`${tag} `)) return out;
    }
  }

  close(): void {
    this.sock.destroy();
  }
}
