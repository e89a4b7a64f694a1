import {
  decodeTransfer,
  encapsulated,
  findPart,
  headerLines,
  literal,
  withoutNulText,
  type FetchItem,
  type MimePart,
  type Section,
} from '@mailyard/imap-core';
import type { MailFolder, MessageInfo } from '@mailyard/mailstore';
import {
  INDEXED_FIELDS,
  rev1Differs,
  type CachedMessage,
  type FullMessage,
  type MessageCache,
} from '../message-cache.js';

/** Messages whose headers are read together (FETCH, SORT, THREAD). */
export const FETCH_CHUNK = 500;

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** date-time, RFC 9051 §9: "dd-Mon-yyyy hh:mm:ss +zzzz" (we answer in UTC). */
export function imapDate(d: Date): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `"${p(d.getUTCDate())}-${MONTHS[d.getUTCMonth()]}-${d.getUTCFullYear()} ${p(d.getUTCHours())}:${p(
    d.getUTCMinutes(),
  )}:${p(d.getUTCSeconds())} +0000"`;
}

export function parseImapDate(text: string): Date | null {
  const m = /^\s?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})$/.exec(text);
  if (!m) return null;
  const mon = MONTHS.findIndex((x) => x.toLowerCase() === m[2]!.toLowerCase());
  if (mon < 0) return null;
  const offset = (Number(m[8]) * 60 + Number(m[9])) * (m[7] === '-' ? -1 : 1);
  // a day the month does not have (31-Feb) is no date, not a day in the next month
  if (new Date(utc(Number(m[3]), mon, Number(m[1]), 0, 0, 0)).getUTCDate() !== Number(m[1])) return null;
  // nor is a time the day does not have (24:00:00, 10:60:00); a leap second (23:59:60) is
  // the day's last second, not the next day's first, as Dovecot keeps it
  if (Number(m[4]) > 23 || Number(m[5]) > 59 || Number(m[6]) > 60) return null;
  const sec = Math.min(Number(m[6]), 59);
  const t = utc(Number(m[3]), mon, Number(m[1]), Number(m[4]), Number(m[5]), sec) - offset * 60000;
  return new Date(t);
}

/** Date.UTC that takes the years 0 to 99 as given, not as 1900 to 1999. */
function utc(year: number, mon: number, day: number, h: number, min: number, sec: number): number {
  const d = new Date(Date.UTC(year, mon, day, h, min, sec));
  if (year < 100) d.setUTCFullYear(year, mon, day);
  return d.getTime();
}

/** Raw header lines of a header block, keeping folding, for HEADER.FIELDS. */
function filterHeaders(block: Buffer, fields: string[], not: boolean): Buffer {
  const lines = headerLines(block.toString('latin1'), (name) => fields.includes(name) !== not);
  return Buffer.from(lines + '\r\n', 'latin1');
}

/** BODY[HEADER.FIELDS (...)] of the message itself, every field one the index keeps. */
function fromIndex(i: FetchItem): boolean {
  return (
    i.k === 'SECTION' &&
    i.kind === 'BODY' &&
    !i.section.path.length &&
    i.section.spec === 'HEADER.FIELDS' &&
    i.section.fields.every((f) => INDEXED_FIELDS.has(f))
  );
}

/** A part whose Content-Transfer-Encoding BINARY cannot decode (RFC 3516 §4.3). */
export class UnknownCteError extends Error {}

/** Bytes a literal carries as 7-bit text: no NUL, no 8-bit byte. */
const SEVEN_BIT = /^[\x01-\x7f]*$/;

/**
 * The bytes a BODY[section] names, RFC 9051 §6.4.5. `rev2`: the session enabled IMAP4rev2,
 * where HEADER and TEXT of a message/global part name its message's (see encapsulated).
 */
export function sectionBytes(data: Buffer, root: MimePart, s: Section, rev2: boolean): Buffer | null {
  let part: MimePart | null = root;
  if (s.path.length) part = findPart(root, s.path, rev2);
  if (!part) return null;
  const headerOf = (p: MimePart) => data.subarray(p.start, p.bodyStart);
  switch (s.spec) {
    case null:
      return s.path.length ? data.subarray(part.bodyStart, part.end) : data;
    case 'MIME':
      return headerOf(part);
    case 'HEADER':
    case 'TEXT':
    case 'HEADER.FIELDS':
    case 'HEADER.FIELDS.NOT': {
      // on a part, these apply to the encapsulated message (message/rfc822)
      const msg = s.path.length ? encapsulated(part, rev2) : root;
      if (!msg) return null;
      if (s.spec === 'TEXT') return data.subarray(msg.bodyStart, msg.end);
      if (s.spec === 'HEADER') return headerOf(msg);
      return filterHeaders(headerOf(msg), s.fields, s.spec === 'HEADER.FIELDS.NOT');
    }
  }
}

export interface FetchContext {
  folder: MailFolder;
  cache: MessageCache;
  utf8: boolean;
  /** The session enabled IMAP4rev2: message/global is an attached message (see encapsulated). */
  rev2: boolean;
  /**
   * MODSEQ in every response, asked for or not: the unsolicited FETCH of a session with
   * CONDSTORE on (RFC 7162 §3.1). A FETCH command adds it only where §3.1 requires it.
   */
  unsolicitedModseq: boolean;
  byUid: boolean;
  /** A message's flags as the session shows them (with \Recent to an IMAP4rev1 session). */
  flags: (m: MessageInfo) => string;
}

/** A piece of a response: strings hold one char per byte (latin1), as header text is read. */
export type Piece = string | Buffer;

/** A JS (UTF-16) string as one char per byte of its UTF-8 encoding. */
export function utf8Bytes(s: string): string {
  return /[^\x00-\x7f]/.test(s) ? Buffer.from(s, 'utf8').toString('latin1') : s;
}

/** What a FETCH's items need of each message, decided once per command. */
export interface FetchPlan {
  /** Sections, BINARY, RFC822.HEADER/TEXT: bytes and MIME structure. */
  mime: boolean;
  /** BODY[] and RFC822: bytes only, no MIME parsing. */
  raw: boolean;
  /** BODY[HEADER.FIELDS (...)] of fields the index keeps: from the index. */
  headerFields: boolean;
  envelope: boolean;
  size: boolean;
  date: boolean;
  structure: boolean;
  uid: boolean;
  modseq: boolean;
}

export function planFetch(items: FetchItem[]): FetchPlan {
  const has = (k: FetchItem['k']) => items.some((i) => i.k === k);
  const mime = items.some(
    (i) =>
      (i.k === 'SECTION' &&
        !fromIndex(i) &&
        (i.kind !== 'BODY' || i.section.path.length > 0 || i.section.spec !== null)) ||
      i.k === 'RFC822.HEADER' ||
      i.k === 'RFC822.TEXT',
  );
  return {
    mime,
    raw: !mime && items.some((i) => (i.k === 'SECTION' && !fromIndex(i)) || i.k === 'RFC822'),
    headerFields: items.some(fromIndex),
    envelope: has('ENVELOPE'),
    size: has('RFC822.SIZE'),
    date: has('INTERNALDATE'),
    structure: has('BODYSTRUCTURE') || has('BODY'),
    uid: has('UID'),
    modseq: has('MODSEQ'),
  };
}

/** Everything rendering one message needs beyond its MessageInfo. */
export interface FetchData {
  cached: CachedMessage | null;
  /** The message bytes (BODY[], RFC822, sections). */
  raw: Buffer | null;
  full: FullMessage | null;
  size: number;
  date: Date | null;
  bodyStructure: string | null;
  body: string | null;
}

/**
 * The data for one message: a plain object when all of it is in memory (a folder
 * listing from the index, repeated body fetches), else a promise. A listing of
 * thousands of messages then renders without a promise per message.
 */
export function gatherFetch(
  ctx: FetchContext,
  plan: FetchPlan,
  m: MessageInfo,
): FetchData | Promise<FetchData> {
  const cached = ctx.cache.peek(ctx.folder, m) ?? null;
  const d: FetchData = {
    cached,
    raw: null,
    full: null,
    size: -1,
    date: null,
    bodyStructure: null,
    body: null,
  };
  if (plan.mime) return gatherSlow(ctx, plan, m, d);
  if (plan.raw) {
    const hit = ctx.cache.peekRaw(ctx.folder, m);
    if (!hit) return gatherSlow(ctx, plan, m, d);
    d.raw = hit;
  }
  if ((plan.envelope || plan.structure || plan.headerFields) && !cached) return gatherSlow(ctx, plan, m, d);
  if (plan.headerFields && cached?.headerCut) return gatherSlow(ctx, plan, m, d);
  if (plan.size) {
    d.size = d.raw ? d.raw.length : (ctx.cache.peekSize(ctx.folder, m) ?? -1);
    if (d.size < 0) return gatherSlow(ctx, plan, m, d);
  }
  if (plan.date) {
    if (cached?.date === undefined) return gatherSlow(ctx, plan, m, d);
    d.date = new Date(cached.date);
  }
  if (plan.structure) {
    if (cached?.bodyStructure === undefined) return gatherSlow(ctx, plan, m, d);
    if (!ctx.rev2 && rev1Differs(cached.bodyStructure)) return gatherSlow(ctx, plan, m, d);
    d.bodyStructure = cached.bodyStructure;
    d.body = cached.body ?? null;
  }
  return d;
}

async function gatherSlow(
  ctx: FetchContext,
  plan: FetchPlan,
  m: MessageInfo,
  d: FetchData,
): Promise<FetchData> {
  if (plan.mime) {
    d.full = await ctx.cache.message(ctx.folder, m);
    d.raw = d.full.data;
  } else if (plan.raw && !d.raw) d.raw = await ctx.cache.raw(ctx.folder, m);
  if ((plan.envelope || plan.headerFields) && !d.cached) d.cached = await ctx.cache.header(ctx.folder, m);
  // a header too long for the index: HEADER.FIELDS from the file
  if (plan.headerFields && d.cached?.headerCut && !d.full) d.full = await ctx.cache.message(ctx.folder, m);
  if (plan.structure) {
    d.bodyStructure = await ctx.cache.structure(ctx.folder, m, true, ctx.rev2);
    d.body = await ctx.cache.structure(ctx.folder, m, false, ctx.rev2);
    d.cached = ctx.cache.peek(ctx.folder, m) ?? d.cached;
  }
  if (plan.size) d.size = d.raw ? d.raw.length : await ctx.cache.sentSize(ctx.folder, m);
  if (plan.date)
    d.date = d.cached?.date !== undefined ? new Date(d.cached.date) : await ctx.folder.internalDate(m);
  return d;
}

/** The encodings BINARY decodes (RFC 3516 §4.2). */
const DECODABLE = ['7bit', '8bit', 'binary', 'base64', 'quoted-printable'];

/**
 * The content-transfer-encoding BINARY[section] decodes, or null when there is none to
 * decode: the whole message, a multipart or an encapsulated message is sent as it is, and
 * so is a part the message lacks (NIL).
 */
function binaryEncoding(root: MimePart, s: Section, rev2: boolean): string | null {
  const part = s.path.length ? findPart(root, s.path, rev2) : null;
  if (!part || part.type === 'multipart' || encapsulated(part, rev2)) return null;
  const enc = part.encoding ?? '7bit';
  if (!DECODABLE.includes(enc)) throw new UnknownCteError(enc);
  return enc;
}

/**
 * One message's FETCH response body (without `* n FETCH`), piece by piece as the caller
 * sends them. A FETCH may name a large part thousands of times (`BINARY[2] BINARY[2]
 * ...`, a partial of it each time): each is decoded as its turn comes, and is garbage once
 * sent, as Dovecot streams each section to the client, rather than all held at once.
 * What can refuse the message (an encoding BINARY cannot decode) throws here, before a
 * piece of it is sent.
 */
export function renderFetch(
  ctx: FetchContext,
  plan: FetchPlan,
  m: MessageInfo,
  items: FetchItem[],
  d: FetchData,
): Iterable<Piece> {
  for (const it of items)
    if (it.k === 'SECTION' && it.kind !== 'BODY') binaryEncoding(d.full!.mime, it.section, ctx.rev2);
  return fetchPieces(ctx, plan, m, items, d);
}

function* fetchPieces(
  ctx: FetchContext,
  plan: FetchPlan,
  m: MessageInfo,
  items: FetchItem[],
  d: FetchData,
): Generator<Piece> {
  yield '(';
  let first = true;
  const sep = () => {
    const s = first ? '' : ' ';
    first = false;
    return s;
  };
  if (ctx.byUid && !plan.uid) yield `${sep()}UID ${m.uid}`;
  const { full, raw } = d;
  for (const it of items) {
    const out: Piece[] = [sep()];
    switch (it.k) {
      case 'UID':
        out.push(`UID ${m.uid}`);
        break;
      case 'FLAGS':
        out.push(utf8Bytes(`FLAGS (${ctx.flags(m)})`));
        break;
      case 'MODSEQ':
        out.push(`MODSEQ (${m.modseq})`);
        break;
      case 'RFC822.SIZE':
        out.push(`RFC822.SIZE ${d.size}`);
        break;
      case 'INTERNALDATE':
        out.push(`INTERNALDATE ${imapDate(d.date!)}`);
        break;
      case 'ENVELOPE':
        // an index written before NULs were kept out of literals may still hold one
        out.push('ENVELOPE ', withoutNulText(d.cached!.envelope));
        break;
      case 'BODYSTRUCTURE':
        out.push('BODYSTRUCTURE ', d.bodyStructure!);
        break;
      case 'BODY':
        out.push('BODY ', d.body!);
        break;
      case 'RFC822':
        out.push('RFC822 ', ...literal(raw!));
        break;
      case 'RFC822.HEADER':
        out.push('RFC822.HEADER ', ...literal(full!.data.subarray(0, full!.mime.bodyStart)));
        break;
      case 'RFC822.TEXT':
        out.push('RFC822.TEXT ', ...literal(full!.data.subarray(full!.mime.bodyStart)));
        break;
      case 'SECTION': {
        let bytes =
          fromIndex(it) && d.cached && !d.cached.headerCut
            ? Buffer.from(d.cached.headerFields(it.section.fields), 'latin1')
            : full
              ? sectionBytes(full.data, full.mime, it.section, ctx.rev2)
              : raw!;
        // RFC 3516 §4.2: BINARY decodes a leaf part's content-transfer-encoding
        const enc = it.kind !== 'BODY' && bytes ? binaryEncoding(full!.mime, it.section, ctx.rev2) : null;
        if (bytes && enc) bytes = decodeTransfer(bytes, enc);
        if (it.kind === 'BINARY.SIZE') {
          out.push(`BINARY.SIZE[${it.text}] ${bytes ? bytes.length : 0}`);
          break;
        }
        // a partial fetch is answered as one, of a part the message lacks too (RFC 9051 §6.4.5)
        const origin = it.partial ? `<${it.partial.start}>` : '';
        if (bytes && it.partial) {
          const { start, length } = it.partial;
          bytes = bytes.subarray(start, length === null ? undefined : start + length);
        }
        const label = utf8Bytes(`${it.kind}[${it.text}]${origin} `);
        if (!bytes) out.push(label, 'NIL');
        // literal8 for content that is not 7-bit text, as Dovecot sends it (RFC 3516 §4.3
        // requires it for NUL; a client that asked for BINARY reads it either way)
        else
          out.push(
            label,
            ...literal(bytes, it.kind === 'BINARY' && !SEVEN_BIT.test(bytes.toString('latin1'))),
          );
        break;
      }
    }
    yield* out;
  }
  if (ctx.unsolicitedModseq && !plan.modseq) yield `${sep()}MODSEQ (${m.modseq})`;
  yield ')';
}
