import { promises as fs } from 'node:fs';

import {
  bodyStructure,
  envelope,
  parseHeaderBlock,
  parseMime,
  type Chunk,
  type HeaderField,
  type MimePart,
} from '@mailyard/imap-core';
import type { MailFolder, MessageInfo } from '@mailyard/mailstore';

export interface HeaderMeta {
  headers: HeaderField[];
  /** ENVELOPE, rendered once. */
  envelope: Buffer;
}

export interface FullMessage {
  data: Buffer;
  mime: MimePart;
  bodyStructure: Buffer;
  body: Buffer;
}

function flatten(chunks: Chunk[]): Buffer {
  return Buffer.concat(chunks.map((c) => (typeof c === 'string' ? Buffer.from(c, 'utf8') : c)));
}

/**
 * Parsed headers (ENVELOPE) and MIME structure of messages, keyed by file identity
 * (a Maildir file's content never changes), as Dovecot's dovecot.index.cache: FETCH
 * ENVELOPE of a whole folder reads each file once per process, then never again.
 */
export class MessageCache {
  private readonly headers = new Map<string, HeaderMeta>();
  private readonly full = new Map<string, FullMessage>();
  private fullBytes = 0;

  constructor(
    private readonly maxHeaderEntries = 200_000,
    private readonly maxFullBytes = 64 * 1024 * 1024,
  ) {}

  private key(folder: MailFolder, m: MessageInfo): string {
    return folder.dir + '\0' + m.base;
  }

  async header(folder: MailFolder, m: MessageInfo): Promise<HeaderMeta> {
    const k = this.key(folder, m);
    const hit = this.headers.get(k);
    if (hit) return hit;
    const full = this.full.get(k);
    let headerText: string;
    if (full) headerText = full.data.toString('latin1', 0, full.mime.bodyStart);
    else headerText = await readHeader(await folder.resolvePath(m));
    const headers = parseHeaderBlock(headerText);
    const meta = { headers, envelope: flatten(envelope(headersOnly(headers))) };
    if (this.headers.size >= this.maxHeaderEntries) this.headers.delete(this.headers.keys().next().value!);
    this.headers.set(k, meta);
    return meta;
  }

  async message(folder: MailFolder, m: MessageInfo): Promise<FullMessage> {
    const k = this.key(folder, m);
    const hit = this.full.get(k);
    if (hit) {
      // LRU: move to the end
      this.full.delete(k);
      this.full.set(k, hit);
      return hit;
    }
    const data = await folder.read(m);
    const mime = parseMime(data);
    const fm: FullMessage = {
      data,
      mime,
      bodyStructure: flatten(bodyStructure(mime, true)),
      body: flatten(bodyStructure(mime, false)),
    };
    if (data.length < this.maxFullBytes / 8) {
      this.full.set(k, fm);
      this.fullBytes += data.length;
      while (this.fullBytes > this.maxFullBytes) {
        const [oldKey, old] = this.full.entries().next().value!;
        this.full.delete(oldKey);
        this.fullBytes -= old.data.length;
      }
    }
    return fm;
  }
}

function headersOnly(headers: HeaderField[]): MimePart {
  return {
    start: 0,
    bodyStart: 0,
    end: 0,
    headers,
    type: 'text',
    subtype: 'plain',
    params: {},
    encoding: '7bit',
    id: null,
    description: null,
    md5: null,
    disposition: null,
    language: null,
    location: null,
    lines: 0,
    children: [],
    message: null,
  };
}

/** Reads up to the end of the header block without reading the whole file. */
async function readHeader(path: string): Promise<string> {
  const fh = await fs.open(path, 'r');
  try {
    let buf = Buffer.alloc(0);
    const chunk = Buffer.alloc(16384);
    for (;;) {
      const { bytesRead } = await fh.read(chunk, 0, chunk.length, buf.length);
      if (!bytesRead) return buf.toString('latin1');
      buf = Buffer.concat([buf, chunk.subarray(0, bytesRead)]);
      const end = findHeaderEnd(buf);
      if (end >= 0) return buf.toString('latin1', 0, end);
      if (buf.length > 1024 * 1024) return buf.toString('latin1');
    }
  } finally {
    await fh.close();
  }
}

function findHeaderEnd(buf: Buffer): number {
  if (buf[0] === 10 || (buf[0] === 13 && buf[1] === 10)) return 0;
  const a = buf.indexOf('\r\n\r\n');
  const b = buf.indexOf('\n\n');
  if (a < 0) return b < 0 ? -1 : b + 1;
  if (b < 0) return a + 2;
  return Math.min(a + 2, b + 1);
}
