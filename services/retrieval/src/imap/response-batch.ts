import type { Piece } from './fetch.js';

/**
 * A response failed after part of it was sent (a FETCH line, a literal cut short): no
 * reply after it can be parsed, so the connection ends, as Dovecot ends it, where a
 * failure before anything of it was sent is a tagged NO.
 */
export class ResponseCutError extends Error {
  constructor(cause: unknown) {
    super('response failed after part of it was sent', { cause });
  }
}

/** Pieces at least this large go to the socket as they are, not copied into the batch. */
const DIRECT = 64 * 1024;

/**
 * Gathers a long response (FETCH of many messages) into one buffer of about `size`
 * bytes: text pieces are written into it as latin1 (one char per byte, see Piece),
 * small buffers copied, so a batch costs one allocation and one copy per byte. Large
 * message bodies are queued behind it without a copy; `take()` hands everything over
 * for one writev.
 */
export class ResponseBatch {
  private buf: Buffer;
  private used = 0;
  private out: Buffer[] = [];
  private queued = 0;

  constructor(private readonly size = 80 * 1024) {
    this.buf = Buffer.allocUnsafe(size);
  }

  /** Bytes gathered since the last take(). */
  get length(): number {
    return this.queued + this.used;
  }

  push(p: Piece): void {
    if (p.length >= DIRECT && typeof p !== 'string') {
      this.seal();
      this.out.push(p);
      this.queued += p.length;
      return;
    }
    if (this.used + p.length > this.buf.length) {
      this.seal();
      if (p.length > this.buf.length) this.buf = Buffer.allocUnsafe(Math.max(this.size, p.length));
    }
    if (typeof p === 'string') this.used += this.buf.write(p, this.used, 'latin1');
    else this.used += p.copy(this.buf, this.used);
  }

  /** Moves the filled part of the buffer to the output; the next pieces go to a new one. */
  private seal(): void {
    if (!this.used) return;
    this.out.push(this.buf.subarray(0, this.used));
    this.queued += this.used;
    this.buf = Buffer.allocUnsafe(this.size);
    this.used = 0;
  }

  take(): Buffer[] {
    this.seal();
    const out = this.out;
    this.out = [];
    this.queued = 0;
    return out;
  }
}
