import { Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Joiner, Splitter, type MimeNode, type SplitterChunk } from '@zone-eu/mailsplit';

/**
 * An 8-bit message made fit for a server without 8BITMIME (RFC 6152 §3), as Postfix's
 * smtp(8) does with disable_mime_output_conversion = no: every leaf part that holds 8-bit
 * data is re-encoded, text as quoted-printable and anything else as base64, and its
 * Content-Transfer-Encoding says so; a multipart or message/rfc822 container labelled
 * 8bit or binary is relabelled 7bit (RFC 2046 §5.2.1 allows no other encoding for a
 * message/rfc822, whose inner message is converted in turn). Everything else, the message
 * header first of all, stays byte for byte. 8-bit data that no encoding can carry (in a
 * header, or a multipart preamble or epilogue) makes the message unconvertible.
 */
export type Downgrade = { kind: 'converted'; data: Buffer } | { kind: 'refused'; reason: string };

/** An attached message inside an attached message... converted this deep at most. */
const MAX_DEPTH = 8;
/** Parts of one message at most (mailsplit's limit on a node's children). */
const MAX_CHILD_NODES = 1000;

class Unconvertible extends Error {}

function hasEightBit(buf: Buffer): boolean {
  for (const b of buf) if (b > 0x7f) return true;
  return false;
}

const SEVEN_BIT_LABELS = new Set(['8bit', 'binary']);

/** Bytes the encoder of `node` makes of `body` (and the node's Content-Transfer-Encoding updated). */
async function encode(
  node: MimeNode,
  body: Buffer,
  encoding: 'quoted-printable' | 'base64',
): Promise<Buffer> {
  const encoder = node.getEncoder(encoding);
  const out: Buffer[] = [];
  await pipeline(Readable.from([body]), encoder, async function* (source: AsyncIterable<Buffer>) {
    for await (const chunk of source) out.push(chunk);
  });
  return Buffer.concat(out);
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
      if (hasEightBit(chunk.value))
        throw new Unconvertible('8-bit data outside of any MIME part (a preamble or epilogue)');
      this.push(chunk);
      return;
    }
    if (hasEightBit(chunk.getHeaders()))
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
    const { node } = held;
    let body: Buffer = Buffer.concat(held.body);
    if (hasEightBit(body)) {
      if (node.encoding === 'base64' || node.encoding === 'quoted-printable')
        throw new Unconvertible(`8-bit data in a ${node.encoding} part`);
      if (node.contentType === 'message/rfc822') {
        const inner = await convert(body, this.depth + 1);
        if (inner.kind === 'refused') throw new Unconvertible(`attached message: ${inner.reason}`);
        body = inner.data;
        if (SEVEN_BIT_LABELS.has(node.encoding || '')) node.getEncoder('7bit');
      } else if (node.contentType && /^(message|multipart)\//.test(node.contentType)) {
        // RFC 2046 §5.2: these take no encoding but 7bit, 8bit and binary
        throw new Unconvertible(`8-bit data in a ${node.contentType} part`);
      } else {
        const headers = node.headers;
        // headers the message lacks go after its own, which keep their place
        if (node.root && headers && !headers.hasHeader('MIME-Version'))
          headers.add('MIME-Version', '1.0', Infinity);
        if (node.root && headers && !headers.hasHeader('Content-Type')) {
          // RFC 1428: an 8-bit message without MIME becomes text in its charset (UTF-8 when
          // it is valid UTF-8, unknown-8bit otherwise)
          const utf8 = Buffer.from(body.toString('utf8'), 'utf8').equals(body);
          headers.add('Content-Type', `text/plain; charset=${utf8 ? 'utf-8' : 'unknown-8bit'}`, Infinity);
        }
        if (headers && !headers.hasHeader('Content-Transfer-Encoding'))
          headers.add('Content-Transfer-Encoding', '8bit', Infinity);
        const text = !node.contentType || node.contentType.startsWith('text/');
        body = await encode(node, body, text ? 'quoted-printable' : 'base64');
      }
    }
    this.push(node);
    if (body.length) this.push({ type: 'body', node, value: body });
  }
}

async function convert(message: Buffer, depth: number): Promise<Downgrade> {
  if (depth > MAX_DEPTH) return { kind: 'refused', reason: `messages nested more than ${MAX_DEPTH} deep` };
  const out: Buffer[] = [];
  try {
    await pipeline(
      Readable.from([message]),
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
  const data = Buffer.concat(out);
  // whatever the parser did not see as a part must not slip through either
  if (hasEightBit(data)) return { kind: 'refused', reason: '8-bit data that could not be converted' };
  return { kind: 'converted', data };
}

/** The message with every 8-bit part re-encoded to 7 bit, or why that cannot be done. */
export function downgradeTo7Bit(message: Buffer): Promise<Downgrade> {
  return convert(message, 0);
}
