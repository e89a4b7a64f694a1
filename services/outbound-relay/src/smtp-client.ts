import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from 'node:tls';
import { normalizeLineEndings } from '@mailyard/smtp-core';

/** One (possibly multi-line) reply of the remote server. */
export interface SmtpReply {
  code: number;
  /** RFC 3463 enhanced status code, when the server sent one. */
  enhanced: string | null;
  /** Reply lines without their codes. */
  lines: string[];
}

/** `550 5.1.1 <x>: user unknown` (first and last line only, for DSNs and logs). */
export function replyText(r: SmtpReply): string {
  const text = r.lines.length > 1 ? `${r.lines[0]} ... ${r.lines[r.lines.length - 1]}` : (r.lines[0] ?? '');
  return `${r.code} ${r.enhanced ? r.enhanced + ' ' : ''}${text}`.trim();
}

/** The connection failed or broke, or the server did not answer in time: try the next address. */
export class SmtpConnectionError extends Error {
  override readonly name: string = 'SmtpConnectionError';
}

export interface TlsInfo {
  protocol: string;
  cipher: string;
  /** The certificate chain verified and matched the name we asked for. */
  verified: boolean;
  /** An earlier session was resumed (no full handshake). */
  resumed: boolean;
}

export interface OpenOptions {
  host: string;
  ip: string;
  port: number;
  connectTimeoutMs: number;
  replyTimeoutMs: number;
  /**
   * While the message goes out, how long the server may take none of it (Postfix:
   * smtp_data_xfer_timeout, 180 s): the time between blocks written, not for the whole.
   */
  dataXferTimeoutMs?: number | undefined;
  /**
   * How long the reply after the message may take once all of it is sent (Postfix:
   * smtp_data_done_timeout, 600 s). RFC 5321 §4.5.3.2.6 asks for at least 10 minutes:
   * giving up early on a server that took the message sends it again, a copy each time.
   */
  dataDoneTimeoutMs?: number | undefined;
  localAddress?: string | undefined;
}

export const DATA_XFER_TIMEOUT_MS = 180_000;
/** The message goes out in blocks of this size, each a sign of progress once written. */
const DATA_BLOCK = 64 * 1024;
export const DATA_DONE_TIMEOUT_MS = 600_000;

export interface MailTransaction {
  from: string;
  mailParams: string[];
  recipients: string[];
  /** The message as stored; line endings and dot-stuffing are handled here. */
  data: Buffer;
}

export interface TransactionResult {
  mail: SmtpReply;
  /**
   * One reply per recipient, in order; fewer after a 421, when the server closed the
   * session without answering the rest (and none after a 421 to MAIL).
   */
  rcpts: SmtpReply[];
  /** Final reply after the data; null when DATA was not reached (no recipient accepted, MAIL refused). */
  data: SmtpReply | null;
}

/** `250-text` goes on, `250 text` or a bare `250` ends a reply (RFC 5321 §4.2: text is optional). */
const REPLY_LINE = /^(\d{3})(?:([ -])(.*))?$/;
const ENHANCED = /^([245]\.\d{1,3}\.\d{1,3})\s+/;

/**
 * What a server may send before it is no longer believed: a reply line (RFC 5321
 * §4.5.3.1.5 allows 512 bytes; Postfix reads up to line_length_limit, 2048), the lines of
 * one reply (an EHLO answer has a few dozen), and replies read ahead beyond those a
 * pipelined group of commands still owes. Past any of them the connection fails, as a
 * temporary error: a server sending without end would otherwise fill our memory.
 */
export const MAX_REPLY_LINE = 4096;
export const MAX_REPLY_LINES = 1000;
const MAX_UNASKED_REPLIES = 100;

/**
 * Prepares message bytes for DATA: every bare LF and bare CR becomes CRLF (RFC 5321
 * §2.3.8, so no downstream parser can be made to see a different end of data), lines
 * that start with "." get a second one (RFC 5321 §4.5.2), and the message ends with
 * CRLF "." CRLF.
 */
export function encodeData(message: Buffer): Buffer {
  let body = normalizeLineEndings(message);
  const parts: Buffer[] = [];
  let start = 0;
  if (body[0] === 0x2e) {
    parts.push(Buffer.from('.'));
  }
  for (let i = body.indexOf('\r\n.'); i !== -1; i = body.indexOf('\r\n.', i + 3)) {
    parts.push(body.subarray(start, i + 2), Buffer.from('.'));
    start = i + 2;
  }
  parts.push(body.subarray(start));
  body = Buffer.concat(parts);
  const tail =
    body.length && !(body[body.length - 2] === 0x0d && body[body.length - 1] === 0x0a) ? '\r\n' : '';
  return Buffer.concat([body, Buffer.from(`${tail}.\r\n`)]);
}

/**
 * A minimal ESMTP client for relaying: greeting, EHLO (HELO fallback), STARTTLS, AUTH,
 * one pipelined transaction per call (RFC 2920), QUIT. Everything that breaks the
 * connection is an SmtpConnectionError; everything the server says is a reply.
 */
export class SmtpClient {
  private socket: Socket | TLSSocket;
  private buf: Buffer = Buffer.alloc(0);
  private pendingLines: string[] = [];
  private replies: SmtpReply[] = [];
  private waiters: { resolve: (r: SmtpReply) => void; reject: (e: Error) => void }[] = [];
  private failure: Error | null = null;
  /** Replies to commands already sent that no read() has asked for yet (a pipelined group). */
  private owed = 0;
  greeting!: SmtpReply;
  extensions = new Map<string, string>();
  /** The last hello was EHLO (false: the server refused it and HELO was answered). */
  esmtp = true;
  tls: TlsInfo | null = null;
  /** When the connection was opened, and the mail transactions it carried (for reuse limits). */
  readonly openedAt = Date.now();
  transactions = 0;

  private constructor(
    socket: Socket,
    readonly opts: OpenOptions,
  ) {
    this.socket = socket;
    this.attach(socket);
  }

  /** Connects and reads the greeting (any code: the caller decides what a 4xx/5xx greeting means). */
  static async open(opts: OpenOptions): Promise<SmtpClient> {
    const socket = netConnect({
      host: opts.ip,
      port: opts.port,
      ...(opts.localAddress ? { localAddress: opts.localAddress } : {}),
    });
    socket.setNoDelay(true);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new SmtpConnectionError(`connect to ${opts.host}[${opts.ip}]:${opts.port}: timed out`));
      }, opts.connectTimeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        resolve();
      });
      socket.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(
          new SmtpConnectionError(
            `connect to ${opts.host}[${opts.ip}]:${opts.port}: ${err.code ?? err.message}`,
          ),
        );
      });
    });
    const c = new SmtpClient(socket, opts);
    c.greeting = await c.read();
    return c;
  }

  /** Connected, not failed, and nothing unasked-for from the server (such as a 421 before it hangs up). */
  get usable(): boolean {
    return (
      !this.failure &&
      !this.socket.destroyed &&
      !this.replies.length &&
      !this.pendingLines.length &&
      !this.buf.length
    );
  }

  get peer(): string {
    return `${this.opts.host}[${this.opts.ip}]`;
  }

  private attach(socket: Socket | TLSSocket): void {
    socket.on('data', (d: Buffer) => this.onData(d));
    socket.on('error', (err: NodeJS.ErrnoException) =>
      this.fail(new SmtpConnectionError(`${this.peer}: ${err.code ?? err.message}`)),
    );
    socket.on('close', () => this.fail(new SmtpConnectionError(`${this.peer}: connection closed by server`)));
  }

  private fail(err: Error): void {
    this.failure ??= err;
    for (const w of this.waiters.splice(0)) w.reject(this.failure);
  }

  /** The connection ends: the server sent more than a client takes. */
  private refuse(what: string): void {
    this.fail(new SmtpConnectionError(`${this.peer}: ${what}`));
    this.socket.destroy();
  }

  private onData(d: Buffer): void {
    if (this.failure) return;
    // what was buffered holds no line end: only the new bytes are searched
    const scanned = this.buf.length;
    this.buf = scanned ? Buffer.concat([this.buf, d]) : d;
    for (let i = this.buf.indexOf(0x0a, scanned); i !== -1; i = this.buf.indexOf(0x0a)) {
      if (i > MAX_REPLY_LINE) return this.refuse(`reply line longer than ${MAX_REPLY_LINE} bytes`);
      const line = this.buf.subarray(0, i).toString('utf8').replace(/\r$/, '');
      this.buf = this.buf.subarray(i + 1);
      const m = REPLY_LINE.exec(line);
      if (!m) return this.refuse(`malformed reply line ${JSON.stringify(line.slice(0, 100))}`);
      if (this.pendingLines.push(line) > MAX_REPLY_LINES)
        return this.refuse(`reply of more than ${MAX_REPLY_LINES} lines`);
      if (m[2] !== '-') {
        const lines = this.pendingLines.splice(0);
        const code = Number(m[1]);
        const texts = lines.map((l) => l.slice(4));
        const enh = ENHANCED.exec(texts[0] ?? '');
        const reply: SmtpReply = {
          code,
          enhanced: enh && enh[1]![0] === String(code)[0] ? enh[1]! : null,
          lines: enh ? texts.map((t) => t.replace(ENHANCED, '')) : texts,
        };
        const w = this.waiters.shift();
        if (w) w.resolve(reply);
        else if (this.replies.push(reply) > MAX_UNASKED_REPLIES + this.owed)
          return this.refuse(`more than ${MAX_UNASKED_REPLIES} replies nobody asked for`);
      }
    }
    if (this.buf.length > MAX_REPLY_LINE) this.refuse(`reply line longer than ${MAX_REPLY_LINE} bytes`);
  }

  /** Reads the next reply, or fails after the reply timeout (or `timeoutMs`). */
  read(timeoutMs = this.opts.replyTimeoutMs): Promise<SmtpReply> {
    if (this.owed > 0) this.owed--;
    const ready = this.replies.shift();
    if (ready) return Promise.resolve(ready);
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.fail(new SmtpConnectionError(`${this.peer}: no reply within ${timeoutMs} ms`));
        this.socket.destroy();
      }, timeoutMs);
      this.waiters.push({
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
    });
  }

  write(data: string | Buffer): void {
    if (this.failure) return;
    this.socket.write(data);
  }

  /**
   * Sends the message (dot-stuffed, with its final dot) and reads the reply after it:
   * the sending fails once the server has taken nothing for dataXferTimeoutMs, the reply
   * may take dataDoneTimeoutMs from the moment the last byte is out.
   */
  private async sendData(payload: Buffer): Promise<SmtpReply> {
    const idleMs = this.opts.dataXferTimeoutMs ?? DATA_XFER_TIMEOUT_MS;
    const socket = this.socket;
    await new Promise<void>((resolve) => {
      if (this.failure) return resolve();
      // progress is a block handed to the kernel: the socket's own count includes what
      // still waits in its buffer, so blocks go one buffer's worth at a time
      let progress = performance.now();
      const finish = () => {
        clearInterval(watch);
        socket.off('close', finish);
        resolve();
      };
      const watch = setInterval(
        () => {
          if (performance.now() - progress < idleMs) return;
          this.fail(new SmtpConnectionError(`${this.peer}: the message not taken for ${idleMs} ms`));
          socket.destroy();
        },
        Math.min(idleMs, 1000),
      );
      socket.once('close', finish);
      let at = 0;
      const pump = () => {
        while (at < payload.length && !this.failure) {
          const block = payload.subarray(at, (at += DATA_BLOCK));
          const last = at >= payload.length;
          const more = socket.write(block, () => {
            progress = performance.now();
            if (last) finish();
          });
          if (!more && !last) return void socket.once('drain', pump);
        }
      };
      pump();
    });
    return this.read(this.opts.dataDoneTimeoutMs ?? DATA_DONE_TIMEOUT_MS);
  }

  async command(line: string): Promise<SmtpReply> {
    this.write(line + '\r\n');
    return this.read();
  }

  /**
   * EHLO, falling back to HELO when the server refuses it (RFC 5321 §3.2: a client must
   * accommodate servers that reject EHLO; Postfix smtp_helo() does so for any refusal but
   * 421, with which the server closes the session). `esmtp` tells which one was answered.
   */
  async ehlo(name: string): Promise<SmtpReply> {
    this.extensions.clear();
    this.esmtp = true;
    const r = await this.command(`EHLO ${name}`);
    if (r.code === 250) {
      for (const line of r.lines.slice(1)) {
        const [kw, ...rest] = line.trim().split(/\s+/);
        if (kw) this.extensions.set(kw.toUpperCase(), rest.join(' '));
      }
      return r;
    }
    if (r.code === 421) return r;
    this.esmtp = false;
    return this.command(`HELO ${name}`);
  }

  has(ext: string): boolean {
    return this.extensions.has(ext);
  }

  /**
   * RFC 3207: upgrade to TLS after 220. Data the server sent before the handshake is
   * discarded. `resume`: a session to offer the server, and where to keep the one it issues.
   */
  async startTls(
    tlsOpts: ConnectionOptions,
    resume?: { session: Buffer | undefined; save: (session: Buffer) => void },
  ): Promise<SmtpReply> {
    const r = await this.command('STARTTLS');
    if (r.code !== 220) return r;
    const plain = this.socket;
    plain.removeAllListeners('data');
    plain.removeAllListeners('close');
    plain.removeAllListeners('error');
    this.buf = Buffer.alloc(0);
    this.pendingLines = [];
    this.replies = [];
    const secure = tlsConnect({
      ...tlsOpts,
      socket: plain,
      ...(resume?.session ? { session: resume.session } : {}),
    });
    // TLS 1.3 tickets arrive after the handshake
    if (resume) secure.on('session', (s: Buffer) => resume.save(s));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        secure.destroy();
        reject(new SmtpConnectionError(`${this.peer}: TLS handshake timed out`));
      }, this.opts.replyTimeoutMs);
      secure.once('secureConnect', () => {
        clearTimeout(timer);
        resolve();
      });
      secure.once('error', (err: Error) => {
        clearTimeout(timer);
        plain.destroy();
        const e = new TlsHandshakeError(`${this.peer}: TLS handshake failed: ${err.message}`);
        this.fail(e);
        reject(e);
      });
    });
    this.socket = secure;
    this.attach(secure);
    const cipher = secure.getCipher();
    this.tls = {
      protocol: secure.getProtocol() ?? 'TLS',
      cipher: cipher?.standardName ?? cipher?.name ?? 'unknown',
      verified: secure.authorized,
      resumed: secure.isSessionReused(),
    };
    return r;
  }

  /** AUTH PLAIN (RFC 4616) or LOGIN, whichever the server offers (PLAIN first). */
  async auth(user: string, pass: string): Promise<SmtpReply> {
    const mechs = (this.extensions.get('AUTH') ?? '').toUpperCase().split(/\s+/);
    if (mechs.includes('PLAIN') || !mechs.includes('LOGIN')) {
      const token = Buffer.from(`\0${user}\0${pass}`).toString('base64');
      return this.command(`AUTH PLAIN ${token}`);
    }
    let r = await this.command('AUTH LOGIN');
    if (r.code !== 334) return r;
    r = await this.command(Buffer.from(user).toString('base64'));
    if (r.code !== 334) return r;
    return this.command(Buffer.from(pass).toString('base64'));
  }

  /**
   * One mail transaction. With PIPELINING (RFC 2920) MAIL, every RCPT and DATA go out in
   * one write and the replies are read in order; without it, one command at a time.
   * A 421 ends it where it comes: the server closes the session (RFC 5321 §3.8) and
   * answers nothing more, and the reply is the outcome, not the lost connection after it
   * (as Postfix reports the 421's text).
   */
  async transaction(t: MailTransaction): Promise<TransactionResult> {
    this.transactions++;
    const mailCmd = `MAIL FROM:<${t.from}>${t.mailParams.length ? ' ' + t.mailParams.join(' ') : ''}`;
    const rcptCmds = t.recipients.map((r) => `RCPT TO:<${r}>`);
    const payload = encodeData(t.data);
    if (this.has('PIPELINING')) {
      // a server may answer the whole group at once: those replies are not unasked
      this.owed = rcptCmds.length + 2;
      this.write([mailCmd, ...rcptCmds, 'DATA'].map((l) => l + '\r\n').join(''));
      const mail = await this.read();
      if (mail.code === 421) return { mail, rcpts: [], data: null };
      const rcpts: SmtpReply[] = [];
      for (let i = 0; i < rcptCmds.length; i++) {
        const r = await this.read();
        rcpts.push(r);
        if (r.code === 421) return { mail, rcpts, data: null };
      }
      const dataReply = await this.read();
      const accepted = mail.code === 250 && rcpts.some((r) => r.code >= 200 && r.code < 300);
      if (dataReply.code !== 354) return { mail, rcpts, data: accepted ? dataReply : null };
      if (!accepted) {
        // RFC 2920 §3.1: DATA accepted although no recipient was: send an empty message's end
        this.write('.\r\n');
        await this.read();
        return { mail, rcpts, data: null };
      }
      return { mail, rcpts, data: await this.sendData(payload) };
    }
    const mail = await this.command(mailCmd);
    if (mail.code !== 250) return { mail, rcpts: [], data: null };
    const rcpts: SmtpReply[] = [];
    for (const cmd of rcptCmds) {
      const r = await this.command(cmd);
      rcpts.push(r);
      if (r.code === 421) return { mail, rcpts, data: null };
    }
    if (!rcpts.some((r) => r.code >= 200 && r.code < 300)) return { mail, rcpts, data: null };
    const go = await this.command('DATA');
    if (go.code !== 354) return { mail, rcpts, data: go };
    return { mail, rcpts, data: await this.sendData(payload) };
  }

  /** QUIT politely (without waiting long for the answer), then close. */
  async quit(): Promise<void> {
    if (!this.failure) {
      this.write('QUIT\r\n');
      await Promise.race([this.read().catch(() => undefined), new Promise((r) => setTimeout(r, 1000))]);
    }
    this.close();
  }

  close(): void {
    this.socket.destroy();
  }
}

/** The TLS handshake failed: the caller may retry the host without TLS when TLS was only opportunistic. */
export class TlsHandshakeError extends SmtpConnectionError {
  override readonly name = 'TlsHandshakeError';
}
