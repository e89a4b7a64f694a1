import { connect, type Socket } from 'node:net';
import { connectTimedOut, connectWithin, withScanSlot } from './scanner-limits.js';

export type ScanResult = { infected: false } | { infected: true; signature: string };

/**
 * clamd's INSTREAM command over TCP (clamd(8)): `zINSTREAM\0`, then chunks each
 * prefixed with a 4-byte big-endian length, then a zero length; the answer is
 * `stream: OK` or `stream: <signature> FOUND`, NUL-terminated.
 *
 * The scans go through IDSESSION connections kept open between messages, one scan at a
 * time on each: a connection per message cost clamd and the caller more than the scan
 * of a small message does (its accept, a socket and its teardown on both sides). In a
 * session each answer carries the command's number (`1: stream: OK`).
 */
export async function clamdScan(
  url: string,
  data: Buffer,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<ScanResult> {
  const u = new URL(url);
  const port = Number(u.port || 3310);
  const host = u.hostname.replace(/^\[|\]$/g, '');
  return withScanSlot(
    url,
    timeoutMs,
    () => unanswered(timeoutMs),
    (left) => scan(url, host, port, data, left, signal),
    signal,
  );
}

function unanswered(timeoutMs: number): Error {
  return new Error(`clamd did not answer within ${timeoutMs} ms`);
}

/**
 * How long a session waits unused before we end it: well under clamd's ReadTimeout (120 s
 * by default), after which clamd ends an unused session, so that it seldom does so just
 * as a scan starts on it.
 */
const SESSION_IDLE_MS = 10_000;
/** A scan found its kept session ended is made again only with this much of its time left. */
const RETRY_MIN_MS = 1000;
/** Sessions kept unused per clamd at most; a burst beyond it closes the extra ones. */
const MAX_IDLE_SESSIONS = 16;
/** An answer is a line; anything far longer is not clamd's. */
const MAX_ANSWER = 64 * 1024;
const CHUNK = 64 * 1024;

/** Unused sessions per clamd URL, the most recently used last. */
const idle = new Map<string, Session[]>();

/** A kept session clamd closed before it answered anything: the scan is made again on a new one. */
class StaleSession extends Error {}

async function scan(
  url: string,
  host: string,
  port: number,
  data: Buffer,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<ScanResult> {
  const started = Date.now();
  const kept = idle.get(url)?.pop();
  if (kept) {
    try {
      return await kept.scan(data, timeoutMs, signal);
    } catch (err) {
      const left = timeoutMs - (Date.now() - started);
      if (!(err instanceof StaleSession)) throw err;
      if (left < RETRY_MIN_MS) throw new Error(err.message, { cause: err.cause });
      return new Session(url, host, port).scan(data, left, signal);
    }
  }
  return new Session(url, host, port).scan(data, timeoutMs, signal);
}

class Session {
  private readonly sock: Socket;
  private answer = '';
  /** Whether any byte came since the current scan was sent. */
  private heard = false;
  private used = false;
  private closed = false;
  private idleTimer: NodeJS.Timeout | null = null;
  /** The scan waiting for its answer, if any. */
  private current: { settle: (err: Error | null, res?: ScanResult, stale?: boolean) => void } | null = null;

  constructor(
    private readonly url: string,
    host: string,
    port: number,
  ) {
    this.sock = connect({ host, port });
    this.sock.on('data', (d: Buffer) => this.onData(d));
    this.sock.on('error', (err) => this.onClose(new Error(`clamd: ${err.message}`, { cause: err })));
    this.sock.on('close', () => this.onClose(null));
  }

  /** `signal`: the caller stopped waiting; the session is closed (clamd stops scanning for it). */
  scan(data: Buffer, timeoutMs: number, signal?: AbortSignal): Promise<ScanResult> {
    signal?.throwIfAborted();
    const reused = this.used;
    this.used = true;
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.sock.ref();
    this.heard = false;
    return new Promise<ScanResult>((resolve, reject) => {
      /** `stale`: a session we had kept turned out to be ended before it heard the scan. */
      const settle = (err: Error | null, res?: ScanResult, stale = false) => {
        if (this.current !== entry) return;
        this.current = null;
        clearTimeout(timer);
        signal?.removeEventListener('abort', aborted);
        if (err) {
          this.close();
          reject(reused && stale ? new StaleSession(err.message, { cause: err.cause }) : err);
        } else {
          this.release();
          resolve(res!);
        }
      };
      const entry = { settle };
      this.current = entry;
      // not even connected by then: as the connection timeout (a connect timer as long
      // as this one, made after it, would never fire first)
      const timer = setTimeout(
        () => settle(this.sock.connecting ? connectTimedOut('clamd', timeoutMs) : new ScanTimeout(timeoutMs)),
        timeoutMs,
      );
      connectWithin(this.sock, timeoutMs, 'clamd', (err) => settle(err));
      const aborted = () => settle(signal!.reason as Error);
      signal?.addEventListener('abort', aborted, { once: true });
      // every piece in one system call (one per chunk header otherwise), the session's
      // opening with the first scan
      this.sock.cork();
      if (!reused) this.sock.write('zIDSESSION\0');
      this.sock.write('zINSTREAM\0');
      for (let i = 0; i < data.length; i += CHUNK) {
        const part = data.subarray(i, i + CHUNK);
        const len = Buffer.alloc(4);
        len.writeUInt32BE(part.length);
        this.sock.write(len);
        this.sock.write(part);
      }
      this.sock.write(Buffer.alloc(4));
      this.sock.uncork();
    });
  }

  private onData(d: Buffer): void {
    if (!this.current) return this.close();
    this.heard = true;
    this.answer += d.toString('latin1');
    const end = this.answer.indexOf('\0');
    if (end < 0) {
      // clamd ending an unused session (ReadTimeout) says so on a line of its own, without
      // the command's number, and closes: the scan never reached it
      const line = /^(?!\d+: )([^\n]*)\n/.exec(this.answer);
      if (line)
        return this.current.settle(new Error(`clamd: ${line[1]!.trim().slice(0, 200)}`), undefined, true);
      if (this.answer.length > MAX_ANSWER) this.current.settle(new Error('clamd: answer too long'));
      return;
    }
    const line = this.answer
      .slice(0, end)
      .replace(/^\d+: /, '')
      .trim();
    const rest = this.answer.slice(end + 1);
    this.answer = '';
    const { settle } = this.current;
    if (rest) return settle(new Error(`clamd: unexpected answer "${rest.slice(0, 200)}"`));
    const m = /^stream: (.+) FOUND$/.exec(line);
    if (m) return settle(null, { infected: true, signature: m[1]! });
    if (line === 'stream: OK') return settle(null, { infected: false });
    // an error (e.g. "INSTREAM size limit exceeded. ERROR"); clamd ends the session after it
    settle(new Error(`clamd: unexpected answer "${line.slice(0, 200)}"`));
  }

  private onClose(err: Error | null): void {
    this.closed = true;
    // nothing heard since the scan was sent: the session was ended before it reached clamd
    this.current?.settle(
      err ?? new Error('clamd closed the connection without an answer'),
      undefined,
      !this.heard,
    );
    this.forget();
  }

  /** Back among the unused sessions, until it is taken or has waited SESSION_IDLE_MS. */
  private release(): void {
    if (this.closed) return;
    let list = idle.get(this.url);
    if (!list) idle.set(this.url, (list = []));
    if (list.length >= MAX_IDLE_SESSIONS) return this.close(true);
    list.push(this);
    // an unused session does not keep the process alive
    this.sock.unref();
    this.idleTimer = setTimeout(() => this.close(true), SESSION_IDLE_MS);
    this.idleTimer.unref();
  }

  private forget(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = null;
    const list = idle.get(this.url);
    const i = list?.indexOf(this) ?? -1;
    if (i >= 0) list!.splice(i, 1);
  }

  /** Ends the session: politely when it is unused and sound, else at once. */
  private close(polite = false): void {
    this.forget();
    if (this.closed) return;
    this.closed = true;
    if (!polite) return void this.sock.destroy();
    // a clamd that never closes its side cannot keep the session, nor the process, alive
    this.sock.unref();
    this.sock.end('zEND\0');
    setTimeout(() => this.sock.destroy(), 2000).unref();
  }
}

/** No answer within the request's deadline: the session is closed, the scan not made again. */
class ScanTimeout extends Error {
  constructor(timeoutMs: number) {
    super(unanswered(timeoutMs).message);
  }
}
