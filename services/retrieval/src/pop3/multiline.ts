// The body of a RETR or TOP answer, as it is sent: RFC 1939 §3 byte-stuffing of lines that
// begin with ".", CRLF line ends (a file with LF line ends is sent with CRLF, as Dovecot
// sends it) and the terminating line; TOP's headers and first body lines (§7). Fed the
// message a piece at a time, wherever the pieces split lines or a CRLF.

const LF = 0x0a;
const CR = 0x0d;
const DOT = 0x2e;
const CRLF = Buffer.from('\r\n');
const STUFF = Buffer.from('.');
const TERMINATOR = Buffer.from('.\r\n');

export class MultilineBody {
  /** The message is cut here (TOP's last line was sent): what follows is not needed. */
  done = false;
  /** The next byte begins a line. */
  private lineStart = true;
  /** Bytes of the line being read so far, across pieces. */
  private lineBytes = 0;
  /** The last byte fed, across pieces; before the first, LF: an empty message has no line to end. */
  private last = LF;
  /** In the header (TOP: until the empty line that ends it). */
  private inHeader: boolean;

  /** @param bodyLines TOP's count of body lines; null: the whole message (RETR). */
  constructor(private bodyLines: number | null) {
    this.inHeader = bodyLines !== null;
  }

  /** What to send of `piece`; the result may share `piece`'s memory. */
  push(piece: Buffer): Buffer[] {
    const out: Buffer[] = [];
    let from = 0;
    let at = 0;
    while (at < piece.length && !this.done) {
      // RFC 1939 §3: a line beginning with the termination octet gets one more
      if (this.lineStart && piece[at] === DOT) {
        out.push(piece.subarray(from, at), STUFF);
        from = at;
      }
      const lf = piece.indexOf(LF, at);
      if (lf < 0) {
        this.lineBytes += piece.length - at;
        this.last = piece[piece.length - 1]!;
        this.lineStart = false;
        at = piece.length;
        break;
      }
      const before = lf > at ? piece[lf - 1]! : this.lineBytes > 0 ? this.last : -1;
      if (before !== CR) {
        // a bare LF: sent as CRLF
        out.push(piece.subarray(from, lf), CRLF);
        from = lf + 1;
      }
      const length = this.lineBytes + (lf - at);
      const empty = length === 0 || (length === 1 && before === CR);
      at = lf + 1;
      this.lineBytes = 0;
      this.last = LF;
      this.lineStart = true;
      if (this.inHeader) {
        if (empty) {
          this.inHeader = false;
          if (this.bodyLines === 0) this.done = true;
        }
      } else if (this.bodyLines !== null && --this.bodyLines === 0) this.done = true;
    }
    out.push(piece.subarray(from, at));
    return out.filter((b) => b.length > 0);
  }

  /** The end of the answer: a CRLF ending the last line if it had none, and ".". */
  end(): Buffer {
    return this.last === LF ? TERMINATOR : Buffer.concat([CRLF, TERMINATOR]);
  }
}
