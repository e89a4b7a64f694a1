import type { Socket } from 'node:net';
import { TLSSocket, type SecureContext } from 'node:tls';

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
  sent = 0;

  constructor(socket: Socket, secure: boolean) {
    this.socket = socket;
    this.secure = secure;
    this.ip = (socket.remoteAddress ?? '').replace(/^::ffff:/, '');
    this.attach(socket);
  }

  private attach(s: Socket): void {
    s.on('data', (c: Buffer) => this.onData(c));
    s.on('error', () => s.destroy());
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
    if (this.isClosed) return;
    this.sent += typeof data === 'string' ? Buffer.byteLength(data) : data.length;
    this.socket.write(data);
  }

  /** Several buffers in one writev (the socket is corked while they are queued). */
  writeMany(data: Buffer[]): void {
    if (this.isClosed) return;
    if (data.length === 1) return this.write(data[0]!);
    this.socket.cork();
    for (const d of data) {
      this.sent += d.length;
      this.socket.write(d);
    }
    this.socket.uncork();
  }

  async drain(): Promise<void> {
    if (this.isClosed || this.socket.writableLength < 1 << 20) return;
    await new Promise<void>((resolve) => {
      const done = () => {
        this.socket.off('drain', done);
        this.socket.off('close', done);
        resolve();
      };
      this.socket.on('drain', done);
      this.socket.on('close', done);
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
    if (this.isClosed) return;
    if (last) this.write(last);
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 2000).unref();
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/** Sessions per IP and per account, counted on this instance. */
export class SessionLimits {
  private readonly byIp = new Map<string, number>();
  private readonly byAccount = new Map<string, number>();
  constructor(
    private readonly maxPerIp: number,
    private readonly maxPerAccount: number,
  ) {}

  private static inc(m: Map<string, number>, k: string, d: number): void {
    const v = (m.get(k) ?? 0) + d;
    if (v <= 0) m.delete(k);
    else m.set(k, v);
  }

  openIp(ip: string): boolean {
    if ((this.byIp.get(ip) ?? 0) >= this.maxPerIp) return false;
    SessionLimits.inc(this.byIp, ip, 1);
    return true;
  }

  closeIp(ip: string): void {
    SessionLimits.inc(this.byIp, ip, -1);
  }

  openAccount(account: string): boolean {
    if ((this.byAccount.get(account) ?? 0) >= this.maxPerAccount) return false;
    SessionLimits.inc(this.byAccount, account, 1);
    return true;
  }

  closeAccount(account: string): void {
    SessionLimits.inc(this.byAccount, account, -1);
  }
}
