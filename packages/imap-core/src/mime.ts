// MIME structure of a stored message, with byte offsets, for BODYSTRUCTURE, ENVELOPE
// and BODY[section] (RFC 9051 §6.4.5, §7.5.2; RFC 2045/2046). Pure: works on a Buffer.

export interface HeaderField {
  /** Lower-cased name. */
  name: string;
  /** Unfolded value, raw (encoded words kept). */
  value: string;
}

export interface MimePart {
  /** Offsets into the message buffer. */
  start: number;
  bodyStart: number;
  end: number;
  headers: HeaderField[];
  type: string;
  subtype: string;
  params: Record<string, string>;
  encoding: string;
  id: string | null;
  description: string | null;
  md5: string | null;
  disposition: { type: string; params: Record<string, string> } | null;
  language: string[] | null;
  location: string | null;
  /** Body lines (text/* and message/rfc822). */
  lines: number;
  children: MimePart[];
  /** The encapsulated message of a message/rfc822 part. */
  message: MimePart | null;
}

/**
 * Offset just past the header block (after the empty line), or the end. The empty line
 * must lie within the part: a part cut off by the CRLF its delimiter takes (RFC 2046
 * §5.1.1) may end in a header line whose empty line follows only past `end`.
 */
function headerEnd(buf: Buffer, start: number, end: number): { bodyStart: number; headerStop: number } {
  let next = start;
  for (;;) {
    if (next >= end) return { bodyStart: end, headerStop: end };
    if (buf[next] === 10) return { bodyStart: next + 1, headerStop: next };
    if (buf[next] === 13 && next + 1 < end && buf[next + 1] === 10)
      return { bodyStart: next + 2, headerStop: next };
    const nl = buf.indexOf(10, next);
    if (nl < 0 || nl >= end) return { bodyStart: end, headerStop: end };
    next = nl + 1;
  }
}

/**
 * The raw lines (folding and line ends kept, one char per byte) of the fields of a
 * header block whose lower-case name `keep` accepts, up to the empty line: what
 * BODY[HEADER.FIELDS (...)] returns, without its closing empty line.
 */
export function headerLines(text: string, keep: (name: string) => boolean): string {
  let out = '';
  let kept = false;
  const n = text.length;
  for (let pos = 0; pos < n;) {
    const lf = text.indexOf('\n', pos);
    const next = lf < 0 ? n : lf + 1;
    const c = text.charCodeAt(pos);
    // the empty line ends the header
    if (c === 10 || (c === 13 && next === pos + 2 && lf === pos + 1)) break;
    if (c === 32 || c === 9) {
      if (kept) out += text.slice(pos, next);
    } else {
      // the name ends at the colon; a line without one is taken whole, less its last
      // char. The search stops at the line's end: one through the rest of the header
      // would make a long run of lines without a colon quadratic
      const colon = indexInLine(text, 58, pos, next);
      const end = colon >= 0 ? colon : next - 1;
      kept = keep(text.slice(pos, end).trim().toLowerCase());
      if (kept) out += text.slice(pos, next);
    }
    pos = next;
  }
  return out;
}

/** Index of the char code `c` in `text[from, to)`, or -1. */
function indexInLine(text: string, c: number, from: number, to: number): number {
  for (let i = from; i < to; i++) if (text.charCodeAt(i) === c) return i;
  return -1;
}

export function parseHeaderBlock(text: string): HeaderField[] {
  return parseHeaderFields(text);
}

/**
 * Header fields of a header block, unfolded; with `wanted` (lower-case names), only
 * those, which skips the Received and DKIM lines that make up most of a real header.
 */
export function parseHeaderFields(text: string, wanted?: ReadonlySet<string>): HeaderField[] {
  const out: HeaderField[] = [];
  // the field that continuation lines extend; null after a field that was not wanted
  let last: HeaderField | null = null;
  let any = false;
  const n = text.length;
  let pos = 0;
  while (pos <= n) {
    let nl = text.indexOf('\n', pos);
    if (nl < 0) nl = n;
    const end = nl > pos && text.charCodeAt(nl - 1) === 13 ? nl - 1 : nl;
    const start = pos;
    pos = nl + 1;
    if (end === start) continue;
    const c = text.charCodeAt(start);
    if ((c === 32 || c === 9) && any) {
      if (last) last.value += ' ' + text.slice(start, end).trim();
      continue;
    }
    const colon = indexInLine(text, 58, start, end);
    if (colon <= start) continue;
    const name = text.slice(start, colon).trim().toLowerCase();
    any = true;
    if (wanted && !wanted.has(name)) {
      last = null;
      continue;
    }
    last = { name, value: text.slice(colon + 1, end).trim() };
    out.push(last);
  }
  return out;
}

export function header(h: HeaderField[], name: string): string | null {
  for (const f of h) if (f.name === name) return f.value;
  return null;
}

/**
 * `value` without its comments (RFC 5322 §3.2.2, which RFC 2045 §5.1 takes for MIME
 * fields): `text/plain (a comment); charset=us-ascii (Plain text)` is text/plain in
 * us-ascii. Quoted strings keep their parentheses.
 */
export function withoutComments(value: string): string {
  let out = '';
  let depth = 0;
  let q = false;
  for (let i = 0; i < value.length; i++) {
    const c = value[i]!;
    if (c === '\\' && (q || depth)) {
      if (!depth) out += c + (value[i + 1] ?? '');
      i++;
    } else if (q) {
      out += c;
      if (c === '"') q = false;
    } else if (c === '(') depth++;
    else if (c === ')' && depth) depth--;
    else if (!depth) {
      out += c;
      if (c === '"') q = true;
    }
  }
  return out;
}

/** RFC 2231 §7 attribute-char: what a value of an extended parameter holds unescaped. */
const ATTRIBUTE_CHAR = /[\w!#$&+.^`{|}~-]/;

/**
 * The segments of a parameter continued over several (`name*0`, `name*1*`, RFC 2231 §3,
 * §4.1) as one parameter, as Dovecot shows it: `name` if no segment is encoded, else
 * `name*` with the first segment's charset and language and every plain segment escaped,
 * so a client decodes it as it would a one-segment `name*` (RFC 2231 §4). The value stays
 * 7-bit, as an IMAP string must.
 */
function joinSegments(name: string, segs: { v: string; ext: boolean }[]): [key: string, value: string] {
  if (!segs.some((s) => s.ext)) return [name, segs.map((s) => s.v).join('')];
  const escape = (v: string) =>
    [...Buffer.from(v, 'latin1')]
      .map((b) => {
        const c = String.fromCharCode(b);
        return ATTRIBUTE_CHAR.test(c) ? c : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
      })
      .join('');
  const value = segs.map((s) => (s.ext ? s.v : escape(s.v))).join('');
  return [`${name}*`, segs[0]!.ext ? value : `''${value}`];
}

/**
 * `type/sub; a=b; c="d"` -> value and parameters (RFC 2045 §5.1), comments left out,
 * RFC 2231 continuations joined (joinSegments).
 */
export function parseParamHeader(value: string): { value: string; params: Record<string, string> } {
  value = withoutComments(value);
  const parts: string[] = [];
  let cur = '';
  let q = false;
  for (let i = 0; i < value.length; i++) {
    const c = value[i]!;
    if (c === '"') q = !q;
    if (c === '\\' && q) {
      cur += c + (value[++i] ?? '');
      continue;
    }
    if (c === ';' && !q) {
      parts.push(cur);
      cur = '';
    } else cur += c;
  }
  parts.push(cur);
  const params: Record<string, string> = {};
  // segments by number: a Map, not an array, since a number comes from the message
  // (`name*4294967294=`) and an array that long would take the worker down
  const continued: Record<string, Map<number, { v: string; ext: boolean }>> = {};
  for (const p of parts.slice(1)) {
    const eq = p.indexOf('=');
    if (eq < 0) continue;
    const k = p.slice(0, eq).trim().toLowerCase();
    let v = p.slice(eq + 1).trim();
    if (v.startsWith('"')) v = v.slice(1, v.endsWith('"') ? -1 : undefined).replace(/\\(.)/g, '$1');
    const m = /^(.+?)\*(?:(\d+)(\*)?)?$/.exec(k);
    if (!m) params[k] = v;
    // `name*=` alone is one encoded segment (RFC 2231 §4)
    else if (m[2] === undefined) (continued[m[1]!] ??= new Map()).set(0, { v, ext: true });
    else (continued[m[1]!] ??= new Map()).set(Number(m[2]), { v, ext: m[3] === '*' });
  }
  for (const [k, segs] of Object.entries(continued)) {
    // segments are numbered from 0 without a gap; with one, nothing is joined and each
    // segment is shown as it came, as on Dovecot
    const numbers = [...segs.keys()].sort((a, b) => a - b);
    if (numbers[numbers.length - 1] !== numbers.length - 1) {
      for (const i of numbers) {
        const seg = segs.get(i)!;
        params[`${k}*${i}${seg.ext ? '*' : ''}`] ??= seg.v;
      }
      continue;
    }
    const [key, v] = joinSegments(
      k,
      numbers.map((i) => segs.get(i)!),
    );
    params[key] ??= v;
  }
  return { value: (parts[0] ?? '').trim(), params };
}

/**
 * A body's size in text lines (RFC 9051 §7.5.2): its line ends, as Dovecot counts. Text
 * after the last line end is no line of its own: it is what a part holds before the CRLF
 * that belongs to the next delimiter (RFC 2046 §5.1.1), or a message that lacks its
 * final CRLF.
 */
function countLines(buf: Buffer, start: number, end: number): number {
  let n = 0;
  for (let i = buf.indexOf(10, start); i >= 0 && i < end; i = buf.indexOf(10, i + 1)) n++;
  return n;
}

/**
 * At most this many parts in one message's structure, as Dovecot's `mail_max_mime_parts`
 * (10,000, since CVE-2020-12100): a message of nothing but boundaries would otherwise be
 * a million parts per 5 MB, and its structure gigabytes. Parts past it are not listed;
 * their bytes stay in the part that holds them.
 */
export const MAX_MIME_PARTS = 10_000;

export function parseMime(
  buf: Buffer,
  start = 0,
  end = buf.length,
  defaultType = 'text/plain',
  depth = 0,
  budget: { parts: number } = { parts: MAX_MIME_PARTS },
): MimePart {
  budget.parts--;
  const { bodyStart, headerStop } = headerEnd(buf, start, end);
  const headers = parseHeaderBlock(buf.toString('latin1', start, headerStop));
  const ct = parseParamHeader(header(headers, 'content-type') ?? defaultType);
  let [type, subtype] = ct.value
    .toLowerCase()
    .split('/')
    .map((s) => s.trim());
  if (!type || !subtype) {
    [type, subtype] = ['text', 'plain'];
    if (!ct.params.charset) ct.params.charset = 'us-ascii';
  }
  if (type === 'text' && !ct.params.charset) ct.params.charset = 'us-ascii';
  const disp = header(headers, 'content-disposition');
  const dp = disp ? parseParamHeader(disp) : null;
  const lang = header(headers, 'content-language');
  const part: MimePart = {
    start,
    bodyStart,
    end,
    headers,
    type,
    subtype,
    params: ct.params,
    encoding: (header(headers, 'content-transfer-encoding') ?? '7bit').trim().toLowerCase(),
    id: header(headers, 'content-id'),
    description: header(headers, 'content-description'),
    md5: header(headers, 'content-md5'),
    disposition: dp ? { type: dp.value.toLowerCase(), params: dp.params } : null,
    language: lang
      ? withoutComments(lang)
          .split(/[\s,]+/)
          .filter(Boolean)
      : null,
    location: header(headers, 'content-location'),
    lines: 0,
    children: [],
    message: null,
  };
  if (depth > 50 || budget.parts <= 0) return part;
  // RFC 2046 §5.1.1: a boundary of no characters is short but still one: its delimiter
  // lines are "--" and "----" (Dovecot splits on them); without one there are no parts
  if (type === 'multipart' && ct.params.boundary !== undefined) {
    const delim = Buffer.from('--' + ct.params.boundary);
    const bounds: { lineStart: number; after: number; close: boolean }[] = [];
    let i = bodyStart;
    while (i < end) {
      let nl = buf.indexOf(10, i);
      if (nl < 0 || nl >= end) nl = end;
      if (buf.compare(delim, 0, delim.length, i, Math.min(i + delim.length, end)) === 0) {
        const tail = buf.toString('latin1', i + delim.length, nl).trimEnd();
        if (tail === '' || tail === '--') {
          bounds.push({ lineStart: i, after: Math.min(nl + 1, end), close: tail === '--' });
          // one bound more than parts left: the last part listed ends at it
          if (tail === '--' || bounds.length > budget.parts) break;
        }
      }
      i = nl + 1;
    }
    for (let k = 0; k < bounds.length; k++) {
      const b = bounds[k]!;
      if (b.close || budget.parts <= 0) break;
      const next = bounds[k + 1];
      let pEnd = next ? next.lineStart : end;
      // the CRLF before a delimiter belongs to the delimiter (RFC 2046 §5.1.1)
      if (next) {
        if (buf[pEnd - 1] === 10) pEnd--;
        if (buf[pEnd - 1] === 13) pEnd--;
      }
      pEnd = Math.max(pEnd, b.after);
      const childDefault = subtype === 'digest' ? 'message/rfc822' : 'text/plain';
      part.children.push(parseMime(buf, b.after, pEnd, childDefault, depth + 1, budget));
    }
  } else if (type === 'message' && (subtype === 'rfc822' || (subtype === 'global' && !encoded(part)))) {
    part.message = parseMime(buf, bodyStart, end, 'text/plain', depth + 1, budget);
    part.lines = countLines(buf, bodyStart, end);
  } else if (type === 'text') {
    part.lines = countLines(buf, bodyStart, end);
  }
  return part;
}

/**
 * RFC 6532 §3.5 lets message/global, unlike message/rfc822 (RFC 2046 §5.2.1), travel
 * base64 or quoted-printable: the message inside is then not in the part's bytes as they
 * stand, and the part is shown as a basic one, its body decoded by BINARY and SEARCH.
 */
function encoded(part: MimePart): boolean {
  return part.encoding !== '7bit' && part.encoding !== '8bit' && part.encoding !== 'binary';
}

/**
 * The part a multipart without parts (its boundary missing, or never found) is shown
 * with: RFC 9051's body-type-mpart needs one body, so BODYSTRUCTURE lists an empty
 * text/plain part, as Dovecot does, and BODY[1] names that part: there, and empty.
 */
export function emptyPart(at: number): MimePart {
  return {
    start: at,
    bodyStart: at,
    end: at,
    headers: [],
    type: 'text',
    subtype: 'plain',
    params: { charset: 'us-ascii' },
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

/**
 * The message a part encapsulates, as a session sees it. message/rfc822 always has one.
 * message/global (RFC 6532 §3.5) has one only in IMAP4rev2: RFC 9051 §7.5.2 gives it the
 * envelope, body structure and line count, and §6.4.5 lets HEADER and TEXT name its
 * header and body; RFC 3501's grammar (body-type-msg) has that form for MESSAGE/RFC822
 * alone, so an IMAP4rev1 client may fail to parse it there, and it is a basic part, as
 * Dovecot shows it.
 */
export function encapsulated(part: MimePart, rev2: boolean): MimePart | null {
  return part.message && (rev2 || part.subtype !== 'global') ? part.message : null;
}

/**
 * Finds the part a section number path (`1.2.3`) names, RFC 9051 §6.4.5. Each number
 * indexes the body of what the previous one named: the parts of a multipart, or of the
 * message a message/rfc822 part encapsulates; a body that is not multipart has only a
 * part 1, itself. So BODY[1] of a message that is itself message/rfc822 is the embedded
 * message, and 1.1 the first part inside it. `rev2`: the session enabled IMAP4rev2, where
 * message/global encapsulates a message too (see encapsulated).
 */
export function findPart(root: MimePart, path: number[], rev2: boolean): MimePart | null {
  let cur = root;
  // what the next number counts parts of: null under a leaf, which has no parts inside
  let body: MimePart | null = root;
  for (const n of path) {
    if (!body) return null;
    if (body.type === 'multipart') {
      const c = body.children.length ? body.children[n - 1] : n === 1 ? emptyPart(body.end) : undefined;
      if (!c) return null;
      cur = c;
    } else if (n === 1) cur = body;
    else return null;
    // RFC 9051 §6.4.5: a non-multipart message (or an encapsulated one) has a part 1, the
    // parts of a multipart are numbered, and a leaf part has none: 1.1 of a text is nothing
    body = encapsulated(cur, rev2) ?? (cur.type === 'multipart' ? cur : null);
  }
  return cur;
}

/** Decodes RFC 2047 encoded words, for SEARCH and SORT. */
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * A header value read one char per byte (latin1), as text: raw UTF-8 (RFC 6532) decoded
 * first when the bytes are valid UTF-8, then the RFC 2047 encoded words. A string that
 * holds wider chars was decoded already and only has its encoded words decoded.
 */
export function decodeHeader(raw: string): string {
  if (/[\x80-\xff]/.test(raw) && !/[^\x00-\xff]/.test(raw)) {
    try {
      raw = strictUtf8.decode(Buffer.from(raw, 'latin1'));
    } catch {
      // 8-bit bytes that are not UTF-8: left as latin1, as before
    }
  }
  return decodeWords(raw);
}

export function decodeWords(text: string): string {
  return text
    .replace(/(=\?[^?]+\?[bBqQ]\?[^?]*\?=)\s+(?==\?)/g, '$1')
    .replace(
      /=\?([^?*]+)(?:\*[^?]*)?\?([bBqQ])\?([^?]*)\?=/g,
      (all, cs: string, enc: string, data: string) => {
        try {
          const bytes =
            enc.toUpperCase() === 'B'
              ? Buffer.from(data, 'base64')
              : Buffer.from(
                  data
                    .replace(/_/g, ' ')
                    .replace(/=([0-9a-fA-F]{2})/g, (_m, h: string) => String.fromCharCode(parseInt(h, 16))),
                  'latin1',
                );
          return new TextDecoder(cs).decode(bytes);
        } catch {
          return all;
        }
      },
    );
}

/** Content of a body after transfer decoding. */
export function decodeTransfer(data: Buffer, encoding: string): Buffer {
  if (encoding === 'base64')
    return Buffer.from(data.toString('latin1').replace(/[^A-Za-z0-9+/=]/g, ''), 'base64');
  if (encoding === 'quoted-printable') {
    const s = data
      .toString('latin1')
      .replace(/=\r?\n/g, '')
      .replace(/=([0-9a-fA-F]{2})/g, (_m, h: string) => String.fromCharCode(parseInt(h, 16)));
    return Buffer.from(s, 'latin1');
  }
  return data;
}

/** The names of US-ASCII (RFC 2046 §4.1.2, IANA charset aliases) a part may be labelled with. */
const US_ASCII = new Set(['us-ascii', 'ascii', 'us', 'ansi_x3.4-1968', 'iso646-us', 'csascii', 'iso-ir-6']);

/** A charset name that says US-ASCII, which the WHATWG decoder would take for Windows-1252. */
export function isUsAscii(charset: string): boolean {
  return US_ASCII.has(charset.trim().toLowerCase());
}

const utf8Strict = new TextDecoder('utf-8', { fatal: true });

/**
 * A text part's content in its charset. A part labelled US-ASCII (the default, RFC 2045
 * §5.2) that holds 8-bit octets was written by a sender that did not say which charset:
 * they are read as UTF-8 when they are (a raw RFC 6532 message; Dovecot reads them so
 * too), else as Windows-1252. WHATWG's decoder would read every such part as
 * Windows-1252, "ü" in UTF-8 becoming "Ã¼", which no search then finds.
 */
export function decodeText(data: Buffer, charset: string | undefined): string {
  const cs = charset || 'utf-8';
  try {
    if (isUsAscii(cs)) return utf8Strict.decode(data);
  } catch {
    return new TextDecoder('windows-1252').decode(data);
  }
  try {
    return new TextDecoder(cs).decode(data);
  } catch {
    return data.toString('latin1');
  }
}
