// Splits the client's byte stream into command lines and the literals they announce
// (RFC 9051 §4.3, RFC 7888 LITERAL+). No I/O: the session feeds bytes and acts on the
// events, so literal limits are enforced before a single literal byte is read.
import { readTag } from './parser.js';

/** A complete command: text lines, each but the last followed by one literal. */
export interface FramedCommand {
  lines: string[];
  literals: Buffer[];
}

export type FramerEvent =
  | { type: 'command'; command: FramedCommand }
  /**
   * A synchronising literal was announced within the limits, and the framer reads no
   * further until the session answers: `+` and push() (the client then sends the
   * literal), or a tagged NO and dropCommand() (RFC 9051 §7.5: the client sends none of
   * it). `command` is the command so far, its last line the one announcing the literal.
   */
  | { type: 'continue'; size: number; command: FramedCommand }
  /** The command was dropped; `fatal` means the connection cannot continue. */
  | {
      type: 'error';
      reason: 'line-too-long' | 'literal-too-large' | 'command-too-long';
      tag: string | null;
      fatal: boolean;
    };

export interface FramerLimits {
  /**
   * Longest line in bytes (without literals), and the most text one command may carry
   * in all of its lines: lines ending in empty literals (`{0+}`) add no literal bytes.
   */
  maxLine: number;
  /** Largest literal accepted, and the most literal bytes one command may carry in all. */
  maxLiteral: number;
}

const LITERAL_AT_END = /(~?)\{(\d{1,12})(\+?)\}$/;

export class CommandFramer {
  /**
   * Bytes received and not yet framed: `store[start, end)`. A chunk is copied in behind
   * them, into a store that doubles when full, and a line is searched for its end only
   * where it was not searched yet: a line sent a byte at a time (a byte per TLS record)
   * costs no more than one sent at once, rather than a copy and a search of all of it for
   * every byte. Bytes before `end` are never written again: literals refer to them.
   */
  private store: Buffer = Buffer.alloc(0);
  private start = 0;
  private end = 0;
  /** `store[start, scanned)` holds no line feed. */
  private scanned = 0;
  private lines: string[] = [];
  private literals: Buffer[] = [];
  private literalLeft = 0;
  private literalChunks: Buffer[] = [];
  /** Literal bytes announced by the command being read: many literals may not add up past maxLiteral. */
  private literalBytes = 0;
  /** Text of the command being read, in all its lines so far: it may not add up past maxLine. */
  private lineBytes = 0;
  /** Skipping the rest of an over-long line. */
  private discarding = false;
  /**
   * Raw mode: the next line is a command with no literal parsing (IDLE's DONE, a SASL
   * response). It ends the mode, so the framer stops after it as after `holdAfter`.
   */
  raw = false;
  /**
   * Stop after each complete command: what follows stays unread until the next push(),
   * so that its literals are measured against the limits in force once the command
   * before it has run (before and after login).
   */
  hold = false;
  /**
   * Commands (by their first line) after which the framer stops as with `hold`: those
   * after which the client's bytes are read another way (IDLE, AUTHENTICATE, STARTTLS,
   * COMPRESS), so that a line pipelined after them is framed once they ran.
   */
  holdAfter: (line: string) => boolean = () => false;
  /**
   * push() stopped after a command that must run, or at a literal the session must
   * accept, before what follows is framed.
   */
  private stopped = false;

  constructor(private limits: FramerLimits) {}

  /** The limits for literals and lines announced from now on. */
  setLimits(limits: FramerLimits): void {
    this.limits = limits;
  }

  /** Keeps bytes to be framed by a later push(), without looking at them. */
  append(chunk: Buffer): void {
    if (!chunk.length) return;
    if (this.start === this.end && chunk.length >= 4096) {
      // nothing waits: the chunk itself (a literal's bytes are then not copied); full, so
      // nothing is written into it
      this.store = chunk;
      this.start = this.scanned = 0;
      this.end = chunk.length;
      return;
    }
    if (this.end + chunk.length > this.store.length) {
      const size = this.end - this.start;
      const next = Buffer.allocUnsafe(Math.max(2 * (size + chunk.length), 4096));
      this.store.copy(next, 0, this.start, this.end);
      this.scanned -= this.start;
      this.store = next;
      this.start = 0;
      this.end = size;
    }
    this.end += chunk.copy(this.store, this.end);
  }

  /** The bytes not yet framed. */
  private get buf(): Buffer {
    return this.store.subarray(this.start, this.end);
  }

  /** Drops the first `n` bytes not yet framed. */
  private consume(n: number): void {
    this.start += n;
    this.scanned = Math.max(this.scanned, this.start);
  }

  push(chunk: Buffer): FramerEvent[] {
    const events: FramerEvent[] = [];
    this.append(chunk);
    this.stopped = false;
    for (;;) {
      if (this.literalLeft > 0) {
        if (this.start === this.end) break;
        const take = Math.min(this.literalLeft, this.end - this.start);
        this.literalChunks.push(this.store.subarray(this.start, this.start + take));
        this.consume(take);
        this.literalLeft -= take;
        if (this.literalLeft > 0) break;
        this.literals.push(Buffer.concat(this.literalChunks));
        this.literalChunks = [];
        continue;
      }
      const found = this.store.subarray(0, this.end).indexOf(10, Math.max(this.scanned, this.start));
      const nl = found < 0 ? -1 : found - this.start;
      if (nl < 0) {
        this.scanned = this.end;
        if (this.end - this.start > this.limits.maxLine) {
          if (!this.discarding) {
            events.push({ type: 'error', reason: 'line-too-long', tag: this.tagOf(), fatal: false });
          }
          this.discarding = true;
          this.consume(this.end - this.start);
          this.reset();
        }
        break;
      }
      const lineBuf = this.buf.subarray(0, nl > 0 && this.store[found - 1] === 13 ? nl - 1 : nl);
      this.consume(nl + 1);
      if (this.discarding) {
        this.discarding = false;
        continue;
      }
      if (lineBuf.length > this.limits.maxLine) {
        events.push({ type: 'error', reason: 'line-too-long', tag: this.tagOf(lineBuf), fatal: false });
        this.reset();
        continue;
      }
      this.lineBytes += lineBuf.length;
      if (this.lineBytes > this.limits.maxLine) {
        // the rest of the command (literals it announced without waiting) would follow as
        // if it were commands: the connection cannot go on
        events.push({ type: 'error', reason: 'command-too-long', tag: this.tagOf(), fatal: true });
        this.reset();
        continue;
      }
      const line = lineBuf.toString('utf8');
      this.lines.push(line);
      const m = this.raw ? null : LITERAL_AT_END.exec(line);
      if (!m) {
        const command = { lines: this.lines, literals: this.literals };
        events.push({ type: 'command', command });
        this.lines = [];
        this.literals = [];
        this.literalBytes = 0;
        this.lineBytes = 0;
        if (this.hold || this.raw || this.holdAfter(command.lines[0]!)) {
          this.stopped = true;
          break;
        }
        continue;
      }
      const size = Number(m[2]);
      const nonSync = m[3] === '+';
      if (size > this.limits.maxLiteral - this.literalBytes) {
        // RFC 7888 §4: a non-synchronising literal cannot be refused without reading it
        events.push({ type: 'error', reason: 'literal-too-large', tag: this.tagOf(), fatal: nonSync });
        this.reset();
        continue;
      }
      this.literalBytes += size;
      if (!nonSync)
        events.push({
          type: 'continue',
          size,
          command: { lines: [...this.lines], literals: [...this.literals] },
        });
      if (size === 0) this.literals.push(Buffer.alloc(0));
      this.literalLeft = size;
      if (!nonSync) {
        this.stopped = true;
        break;
      }
    }
    return events;
  }

  /** Bytes kept unframed: what follows a command while holding, or the start of one. */
  get held(): boolean {
    return this.buf.length > 0;
  }

  /**
   * The last push() stopped after a command that must run first (`hold`, `raw`,
   * `holdAfter`) or at a synchronising literal: what arrives meanwhile is to be
   * append()ed, and framed by the next push() once the session acted on it.
   */
  get holding(): boolean {
    return this.stopped;
  }

  /**
   * The session refused the command at its synchronising literal with a tagged reply
   * instead of the continuation: the client sends none of the literal, so the next line
   * starts a command.
   */
  dropCommand(): void {
    this.reset();
  }

  /** Bytes received but not yet consumed (for STARTTLS: must be none). */
  get pending(): number {
    return this.buf.length + this.lines.length;
  }

  private tagOf(line?: Buffer): string | null {
    const first = this.lines[0] ?? line?.toString('utf8') ?? this.buf.toString('utf8');
    // the tag of a line cut short is only known when a space follows it
    const tag = readTag(first);
    return tag !== null && first.length > tag.length ? tag : null;
  }

  private reset(): void {
    this.lines = [];
    this.literals = [];
    this.literalChunks = [];
    this.literalLeft = 0;
    this.literalBytes = 0;
    this.lineBytes = 0;
  }
}
