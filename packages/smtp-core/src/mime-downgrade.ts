import { isAscii } from 'node:buffer';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Joiner, Splitter, type MimeNode, type SplitterChunk } from '@zone-eu/mailsplit';

/**
 * An 8-bit message made fit for a server without 8BITMIME (RFC 6152 §3), as Postfix's
 * smtp(8) does with disable_mime_output_conversion = no: every leaf part that holds 8-bit
 * data is re-encoded, text as quoted-printable and anything else as base64, and its
 * Content-Transfer-Encoding says so; a multipart or message/rfc822 container labelled
 * 8bit or binary is relabelled 7bit (RFC 2046 §5.2.1 allows no other encoding for a
 * message/rfc822, whose inner message is converted in turn). A leaf labelled 8bit or binary
 * that holds only 7-bit bytes is relabelled 7bit, or re-encoded when a line of it is longer
 * than SMTP carries or it has a CR or LF alone (RFC 2045 §2.7). Everything else, the message
 * header first of all, stays byte for byte. 8-bit data that no encoding can carry (in a
 * header, or a multipart preamble or epilogue) makes the message unconvertible.
 */
export type Downgrade = { kind: 'converted'; data: Buffer } | { kind: 'refused'; reason: string };

/** An attached message inside an attached message... converted this deep at most. */
const MAX_DEPTH = 8;
/** Parts of one message at most (mailsplit's limit on a node's children). */
const MAX_CHILD_NODES = 1000;

class Unconvertible extends Error {}

const SEVEN_BIT_LABELS = new Set(['8bit', 'binary']);

/** Octets on a line at most, without its CRLF (RFC 5321 §4.5.3.1.6). */
const MAX_LINE = 998;

/**
 * Why a body of 7-bit bytes is not 7bit data (RFC 2045 §2.7): a `line` over 998 octets or
 * with a NUL, which quoted-printable mends, or a `line break` that is a CR or LF alone, which
 * only base64 keeps (the SMTP client sends a bare CR or LF as CRLF). Null when it is 7bit data.
 */
function sevenBitFault(chunks: readonly Buffer[]): 'line' | 'line break' | null {
  let fault: 'line' | null = null;
  let length = 0;
  let cr = false;
  for (const chunk of chunks)
    for (let i = 0; i < chunk.length; i++) {
      const b = chunk[i]!;
      // a CR not followed by LF, or an LF not after a CR
      if (cr !== (b === 0x0a)) return 'line break';
      cr = b === 0x0d;
      if (b === 0x0a) length = 0;
      else if (!cr && (b === 0 || ++length > MAX_LINE)) fault = 'line';
    }
  return cr ? 'line break' : fault;
}

/**
 * A held body is encoded this many bytes at a time: the encoders turn each chunk they are
 * given into a string and a wrapped copy of it, so one large chunk (a whole attachment) would
 * be held several times over. A multiple of 3, so base64 carries nothing from one to the next.
 */
const SLICE_SIZE = 48 * 1024;

function* slices(chunks: readonly Buffer[]): Generator<Buffer> {
  for (const chunk of chunks)
    for (let start = 0; start < chunk.length; start += SLICE_SIZE)
      yield chunk.subarray(start, start + SLICE_SIZE);
}

function isUtf8(chunks: readonly Buffer[]): boolean {
  const decoder = new TextDecoder('utf-8', { fatal: true });
  try {
    for (const slice of slices(chunks)) decoder.decode(slice, { stream: true });
    decoder.decode();
    return true;
  } catch {
    return false;
  }
}

/**
 * Converts the leaves of one message. A leaf's node is held back with its body until the
 * body has ended: only then is it known whether its header must change.
 */
class SevenBit extends Transform {
  private held: { node: MimeNode; body: Buffer[] } | null = null;

  constructor(private readonly depth: number) {
    super({ objectMode: true });
  }

  override _transform(chunk: SplitterChunk, _enc: BufferEncoding, done: TransformCallback): void {
    if (this.held && chunk.type === 'body' && chunk.node === this.held.node) {
      this.held.body.push(chunk.value);
      return done();
    }
    this.release()
      .then(() => this.forward(chunk))
      .then(() => done(), done);
  }

  override _flush(done: TransformCallback): void {
    this.release().then(() => done(), done);
  }

  private forward(chunk: SplitterChunk): void {
    if (chunk.type !== 'node') {
      if (!isAscii(chunk.value))
        throw new Unconvertible('8-bit data outside of any MIME part (a preamble or epilogue)');
      this.push(chunk);
      return;
    }
    if (!isAscii(chunk.getHeaders()))
      throw new Unconvertible(`8-bit data in the ${chunk.root ? 'message' : 'MIME part'} header`);
    if (chunk.multipart) {
      if (SEVEN_BIT_LABELS.has(chunk.encoding || '')) chunk.getEncoder('7bit');
      this.push(chunk);
      return;
    }
    this.held = { node: chunk, body: [] };
  }

  private async release(): Promise<void> {
    const held = this.held;
    if (!held) return;
    this.held = null;
    const { node, body } = held;
    const eightBit = body.some((b) => !isAscii(b));
    // a part labelled 8bit or binary is not 7 bit even when its bytes are: its label, and
    // a line too long for SMTP or a bare CR or LF, must not reach the server either
    if (!eightBit && !SEVEN_BIT_LABELS.has(node.encoding || '')) return this.pass(node, body);
    if (eightBit && (node.encoding === 'base64' || node.encoding === 'quoted-printable'))
      throw new Unconvertible(`8-bit data in a ${node.encoding} part`);
    if (node.contentType === 'message/rfc822') {
      const inner = await convert(body, this.depth + 1);
      if (inner.kind === 'refused') throw new Unconvertible(`attached message: ${inner.reason}`);
      if (SEVEN_BIT_LABELS.has(node.encoding || '')) node.getEncoder('7bit');
      return this.pass(node, [inner.data]);
    }
    const text = !node.contentType || node.contentType.startsWith('text/');
    if (node.contentType && /^(message|multipart)\//.test(node.contentType)) {
      // RFC 2046 §5.2: these take no encoding but 7bit, 8bit and binary
      if (eightBit) throw new Unconvertible(`8-bit data in a ${node.contentType} part`);
      if (!sevenBitFault(body)) node.getEncoder('7bit');
      return this.pass(node, body);
    }
    if (!eightBit) {
      const fault = sevenBitFault(body);
      if (!fault) {
        node.getEncoder('7bit');
        return this.pass(node, body);
      }
      return this.encode(node, body, text && fault === 'line' ? 'quoted-printable' : 'base64');
    }
    const headers = node.headers;
    // headers the message lacks go after its own, which keep their place
    if (node.root && headers && !headers.hasHeader('MIME-Version'))
      headers.add('MIME-Version', '1.0', Infinity);
    if (node.root && headers && !headers.hasHeader('Content-Type')) {
      // RFC 1428: an 8-bit message without MIME becomes text in its charset (UTF-8 when
      // it is valid UTF-8, unknown-8bit otherwise)
      const charset = isUtf8(body) ? 'utf-8' : 'unknown-8bit';
      headers.add('Content-Type', `text/plain; charset=${charset}`, Infinity);
    }
    if (headers && !headers.hasHeader('Content-Transfer-Encoding'))
      headers.add('Content-Transfer-Encoding', '8bit', Infinity);
    return this.encode(node, body, text ? 'quoted-printable' : 'base64');
  }

  private async encode(
    node: MimeNode,
    body: readonly Buffer[],
    encoding: 'quoted-printable' | 'base64',
  ): Promise<void> {
    const encoder = node.getEncoder(encoding);
    this.push(node);
    // the held chunks go through the encoder a slice at a time, and what it makes goes on
    // as it comes: the body is never copied whole, nor its encoded form collected
    await pipeline(Readable.from(slices(body)), encoder, async (source: AsyncIterable<Buffer>) => {
      for await (const value of source) this.push({ type: 'body', node, value });
    });
  }

  private pass(node: MimeNode, body: readonly Buffer[]): void {
    this.push(node);
    for (const value of body) if (value.length) this.push({ type: 'body', node, value });
  }
}

async function convert(message: readonly Buffer[], depth: number): Promise<Downgrade> {
  if (depth > MAX_DEPTH) return { kind: 'refused', reason: `messages nested more than ${MAX_DEPTH} deep` };
  const out: Buffer[] = [];
  try {
    await pipeline(
      Readable.from(message),
      new Splitter({ ignoreEmbedded: true, maxChildNodes: MAX_CHILD_NODES }),
      new SevenBit(depth),
      new Joiner(),
      async function* (source: AsyncIterable<Buffer>) {
        for await (const chunk of source) out.push(chunk);
      },
    );
  } catch (err) {
    if (err instanceof Unconvertible) return { kind: 'refused', reason: err.message };
    return { kind: 'refused', reason: `the message could not be parsed as MIME: ${(err as Error).message}` };
  }
  // whatever the parser did not see as a part must not slip through either
  if (out.some((b) => !isAscii(b)))
    return { kind: 'refused', reason: '8-bit data that could not be converted' };
  // the only copy of the whole message: the parts left as they were are still views of the input
  return { kind: 'converted', data: Buffer.concat(out) };
}

/** The message with every 8-bit part re-encoded to 7 bit, or why that cannot be done. */
export function downgradeTo7Bit(message: Buffer): Promise<Downgrade> {
  return convert([message], 0);
}
