import type { Socket } from 'node:net';
import { LocalSlots, type ConnectionSlots } from '@mailyard/auth';
import { TLSSocket, type SecureContext } from 'node:tls';
import {
  constants as zc,
  createDeflateRaw,
  createInflateRaw,
  type DeflateRaw,
  type InflateRaw,
} from 'node:zlib';

/**
 * Commands read ahead of the one running (IMAP and POP3): past this many the client is not
 * read until they are done, so one that sends faster than its commands run (pipelining,
 * or a few bytes of COMPRESS input that inflate to millions of commands) cannot fill memory.
 */
export const READ_AHEAD_COMMANDS = 64;

/**
 * Literal bytes of the commands read ahead (IMAP) past which the client is not read until
 * they ran: 64 pipelined APPENDs of message_size_limit each, behind a command that waits
 * for the client to read its answers, would otherwise all be held at once. Dovecot holds
 * no more than the command it runs, streaming an APPEND's literal to a file.
 */
export const READ_AHEAD_BYTES = 1 << 20;

/**
 * Bytes of answers queued for a client (beyond what the kernel took) past which nothing
 * more is written for it: a bulk answer waits (drain), and so does the next command, so a
 * client that sends commands and never reads their answers stops being read once
 * READ_AHEAD_COMMANDS wait (Dovecot stops reading a client whose output buffer is full).
 */
const OUTPUT_LIMIT = 1 << 20;

/**
 * A client connection, plain or TLS, that can be upgraded in place (STARTTLS, STLS).
 * Writes respect backpressure through `drain()`.
 */
export class ClientConnection {
  socket: Socket;
  secure: boolean;
  readonly ip: string;
  private closed = false;
  onData: (chunk: Buffer) => void = () => undefined;
  onClose: () => void = () => undefined;
  /**
   * Answers that had to wait for the client were taken by it (the socket drained): output
   * progress, which counts as activity for the autologout timers, as Dovecot counts it.
   */
  onDrain: () => void = () => undefined;
  sent = 0;
  /** COMPRESS=DEFLATE: the compressor of what is written and the inflater of what is read. */
  private deflate: DeflateRaw | null = null;
  private inflate: InflateRaw | null = null;
  private flushQueued = false;
  /** end() was called: nothing more is written (a compressor that finished takes no more input). */
  private ending = false;
  /** Reading is paused because the session has READ_AHEAD_COMMANDS commands waiting. */
  private readPaused = false;

  constructor(socket: Socket, secure: boolean) {
    this.socket = socket;
    this.secure = secure;
    this.ip = (socket.remoteAddress ?? '').replace(/^::ffff:/, '');
    this.attach(socket);
  }

  private attach(s: Socket): void {
    s.on('data', (c: Buffer) => this.onData(c));
    s.on('error', () => s.destroy());
    s.on('drain', () => this.onDrain());
    s.on('close', () => {
      if (this.closed) return;
      this.closed = true;
      this.onClose();
    });
  }

  get isClosed(): boolean {
    return this.closed || this.socket.destroyed;
  }

  write(data: string | Buffer): void {
    if (this.isClosed || this.ending) return;
    this.sent += typeof data === 'string' ? Buffer.byteLength(data) : data.length;
    if (this.deflate) return this.compress(data);
    this.socket.write(data);
  }

  /** Several buffers in one writev (the socket is corked while they are queued). */
  writeMany(data: Buffer[]): void {
    if (this.isClosed || this.ending) return;
    if (data.length === 1 || this.deflate) {
      for (const d of data) this.write(d);
      return;
    }
    this.socket.cork();
    for (const d of data) {
      this.sent += d.length;
      this.socket.write(d);
    }
    this.socket.uncork();
  }

  /**
   * Writes a long answer OUTPUT_LIMIT at a time, each once the client has taken what came
   * before it: a body of many megabytes is then no single write whose progress nothing
   * shows, and a client on a slow link reading it drains the socket (onDrain) every
   * OUTPUT_LIMIT bytes, not only at the end.
   */
  async writeDrained(data: Buffer[]): Promise<void> {
    let group: Buffer[] = [];
    let size = 0;
    const flush = async () => {
      this.writeMany(group);
      group = [];
      size = 0;
      await this.drain();
    };
    for (const d of data) {
      for (let at = 0; at < d.length;) {
        const part = d.subarray(at, at + OUTPUT_LIMIT - size);
        group.push(part);
        size += part.length;
        at += part.length;
        if (size >= OUTPUT_LIMIT) await flush();
      }
    }
    if (group.length) await flush();
  }

  /** Bytes written and not yet taken by the kernel (nor the compressor). */
  get queued(): number {
    return this.socket.writableLength + (this.deflate?.writableLength ?? 0);
  }

  /** More than OUTPUT_LIMIT waits for the client: drain() before writing more. */
  get backedUp(): boolean {
    return !this.isClosed && this.queued >= OUTPUT_LIMIT;
  }

  /** Between commands, waiting in awaitReader() for the client to read its answers. */
  awaitingReader = false;

  /** drain() between two commands: the session is idle as far as a shutdown goes. */
  async awaitReader(): Promise<void> {
    this.awaitingReader = true;
    try {
      await this.drain();
    } finally {
      this.awaitingReader = false;
    }
  }

  /** Waits until less than `below` (OUTPUT_LIMIT) waits for the client, or it is gone. */
  async drain(below = OUTPUT_LIMIT): Promise<void> {
    // with compression the socket drains as the compressor catches up: wait for either
    while (!this.isClosed && this.queued >= below) {
      await new Promise<void>((resolve) => {
        const done = () => {
          this.socket.off('drain', done);
          this.socket.off('close', done);
          this.deflate?.off('drain', done);
          resolve();
        };
        this.socket.on('drain', done);
        this.socket.on('close', done);
        this.deflate?.on('drain', done);
      });
    }
  }

  /** COMPRESS=DEFLATE is on: everything after the command's OK, both ways, is raw deflate. */
  get compressed(): boolean {
    return this.deflate !== null;
  }

  /**
   * Told how many commands the session has waiting, and the literal bytes they carry: at
   * READ_AHEAD_COMMANDS or READ_AHEAD_BYTES the client is no longer read (nor what was
   * read inflated), below half of both reading goes on.
   */
  readAhead(waiting: number, bytes = 0): void {
    if (!this.readPaused && (waiting >= READ_AHEAD_COMMANDS || bytes >= READ_AHEAD_BYTES)) {
      this.readPaused = true;
      this.socket.pause();
      this.inflate?.pause();
    } else if (this.readPaused && waiting < READ_AHEAD_COMMANDS / 2 && bytes < READ_AHEAD_BYTES / 2) {
      this.readPaused = false;
      this.socket.resume();
      this.inflate?.resume();
    }
  }

  /**
   * RFC 4978: from now on the client's bytes are inflated before the session sees them,
   * and what the session writes is deflated, flushed (Z_SYNC_FLUSH) once per turn of the
   * event loop so that every response leaves at once. Call it right after writing the
   * tagged OK, in the same turn, so no later byte is read uncompressed.
   */
  startCompression(): void {
    const socket = this.socket;
    const inflate = createInflateRaw();
    const deflate = createDeflateRaw();
    socket.removeAllListeners('data');
    socket.on('data', (c: Buffer) => inflate.write(c));
    inflate.on('data', (c: Buffer) => this.onData(c));
    // a stream that does not inflate, or a compressor failing: nothing more can be said
    inflate.on('error', () => socket.destroy());
    deflate.on('data', (c: Buffer) => socket.write(c));
    deflate.on('error', () => socket.destroy());
    this.inflate = inflate;
    socket.on('close', () => {
      inflate.destroy();
      deflate.destroy();
    });
    this.deflate = deflate;
  }

  private compress(data: string | Buffer): void {
    this.deflate!.write(data);
    if (this.flushQueued) return;
    this.flushQueued = true;
    process.nextTick(() => {
      this.flushQueued = false;
      if (!this.deflate!.destroyed) this.deflate!.flush(zc.Z_SYNC_FLUSH);
    });
  }

  /** Upgrades to TLS; input read before the handshake has already been discarded by the caller. */
  async startTls(context: SecureContext): Promise<void> {
    const plain = this.socket;
    plain.removeAllListeners('data');
    plain.removeAllListeners('close');
    plain.removeAllListeners('error');
    const tls = new TLSSocket(plain, { isServer: true, secureContext: context });
    this.socket = tls;
    this.secure = true;
    this.attach(tls);
    plain.on('close', () => tls.destroy());
    await new Promise<void>((resolve, reject) => {
      tls.once('secure', () => resolve());
      tls.once('error', reject);
      tls.once('close', () => reject(new Error('closed during TLS handshake')));
    });
  }

  end(last?: string): void {
    if (this.isClosed || this.ending) return;
    if (last) this.write(last);
    this.ending = true;
    if (this.deflate) {
      // the compressed stream is finished first, then the connection
      const socket = this.socket;
      this.deflate.once('end', () => socket.end());
      this.deflate.end();
    } else this.socket.end();
    setTimeout(() => this.socket.destroy(), 2000).unref();
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/**
 * Sessions per account, counted where `slots` says: in buildRetrieval over every
 * instance (SharedSlots of @mailyard/auth, on top of the instance's own count). Per
 * client address: ClientLimits of @mailyard/auth, shared with the SMTP listeners.
 */
export class SessionLimits {
  constructor(
    private readonly maxPerAccount: number,
    private readonly slots: ConnectionSlots = new LocalSlots(),
  ) {}

  openAccount(account: string): Promise<boolean> {
    return this.slots.take(`account:${account}`, this.maxPerAccount);
  }

  closeAccount(account: string): void {
    this.slots.give(`account:${account}`);
  }
}
