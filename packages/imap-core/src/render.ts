// Rendering of response data, RFC 9051 §9: strings as quoted or literal, ENVELOPE and
// BODYSTRUCTURE from a parsed MIME tree. Output is a list of chunks (string | Buffer)
// so message bytes are never re-encoded.
import { emptyPart, encapsulated, header, type HeaderField, type MimePart } from './mime.js';

export type Chunk = string | Buffer;

/** nstring: quoted when safe, literal otherwise, NIL for null. */
export function str(value: string | Buffer | null | undefined, utf8 = false): Chunk[] {
  if (value === null || value === undefined) return ['NIL'];
  const text = typeof value === 'string' ? value : value.toString('utf8');
  const safe = utf8 ? /^[^\r\n\0]*$/ : /^[\x20-\x7e]*$/;
  if (typeof value === 'string' && text.length < 200 && safe.test(text)) {
    return ['"' + text.replace(/[\\"]/g, '\\$&') + '"'];
  }
  return literal(typeof value === 'string' ? Buffer.from(value, 'utf8') : value);
}

/**
 * A literal, which holds no NUL (RFC 9051 §9: CHAR8 is any octet but NUL), or with
 * `binary` a literal8 (RFC 3516 §4.2), which holds any. A message that has NULs (a broken
 * sender's) is sent with each one as 0x80, as Dovecot sends it, so every size stays the
 * message's own; BINARY sends them as they are.
 */
export function literal(buf: Buffer, binary = false): Chunk[] {
  return [`${binary ? '~' : ''}{${buf.length}}\r\n`, binary ? buf : withoutNul(buf)];
}

const NUL_STAND_IN = 0x80;

function withoutNul(buf: Buffer): Buffer {
  let at = buf.indexOf(0);
  if (at < 0) return buf;
  const out = Buffer.from(buf);
  for (; at >= 0; at = out.indexOf(0, at + 1)) out[at] = NUL_STAND_IN;
  return out;
}

/** The same for a literal held as text, one char per byte (latin1). */
export function withoutNulText(text: string): string {
  return text.includes('\0') ? text.replaceAll('\0', String.fromCharCode(NUL_STAND_IN)) : text;
}

export function join(items: Chunk[][], sep = ' '): Chunk[] {
  const out: Chunk[] = [];
  items.forEach((it, i) => {
    if (i) out.push(sep);
    out.push(...it);
  });
  return out;
}

export function paren(items: Chunk[][]): Chunk[] {
  return ['(', ...join(items), ')'];
}

export interface Address {
  name: string | null;
  mailbox: string | null;
  host: string | null;
  /** Group start (mailbox = group name, host null) or end (all null). */
  group?: 'start' | 'end';
  /** An obsolete source route: `@a.example,@b.example` of `<@a.example,@b.example:u@c>`. */
  route?: string;
}

/** `<>,:;@`, the specials that separate address tokens. */
function isSpecial(c: number): boolean {
  return c === 60 || c === 62 || c === 44 || c === 58 || c === 59 || c === 64;
}

/** What `\s` matches in a regular expression. */
function isSpace(c: number): boolean {
  if (c <= 32) return c === 32 || (c >= 9 && c <= 13);
  if (c < 0xa0) return false;
  return (
    c === 0xa0 ||
    c === 0x1680 ||
    (c >= 0x2000 && c <= 0x200a) ||
    c === 0x2028 ||
    c === 0x2029 ||
    c === 0x202f ||
    c === 0x205f ||
    c === 0x3000 ||
    c === 0xfeff
  );
}

/** Display text of tokens: quoted strings unquoted, words joined by one space, comments left out. */
function tokenText(ts: string[], from: number, to: number): string {
  let out = '';
  for (let i = from; i < to; i++) {
    const t = ts[i]!;
    if (t.charCodeAt(0) === 40) continue;
    if (out) out += ' ';
    out += t.charCodeAt(0) === 34 ? t.slice(1) : t;
  }
  return out;
}

/** addr-spec from tokens `from..to`: mailbox before the last `@`, host after it. */
function addrOf(ts: string[], from: number, to: number, name: string | null): Address | null {
  let at = -1;
  for (let i = to - 1; i >= from; i--) {
    if (ts[i] === '@') {
      at = i;
      break;
    }
  }
  let mailbox = '';
  let comment: string | null = null;
  for (let i = from; i < (at >= 0 ? at : to); i++) {
    const t = ts[i]!;
    // a comment after the local part began (`jane(the boss)@x`, `user@x (Name)`)
    if (t.charCodeAt(0) === 40) {
      if (mailbox) comment ??= t.slice(1);
    } else mailbox += t.charCodeAt(0) === 34 ? t.slice(1) : t;
  }
  let host = '';
  if (at >= 0)
    for (let i = at + 1; i < to; i++) {
      const t = ts[i]!;
      if (t.charCodeAt(0) === 40) comment ??= t.slice(1);
      else host += t;
    }
  // `user@domain (Real Name)`: the comment is the display name (RFC 5322 §3.4, obsolete
  // but common; Dovecot and most clients show it so)
  if (name === null && comment !== null) name = comment.trim().replace(/\s+/g, ' ') || null;
  if (!mailbox && !host) return null;
  return { name, mailbox: mailbox || null, host: host || null };
}

/** One address from the tokens `from..to` (between commas), appended to `out`. */
function pushAddress(ts: string[], from: number, to: number, out: Address[]): void {
  if (from >= to) return;
  let lt = -1;
  for (let i = from; i < to; i++) {
    if (ts[i] === '<') {
      lt = i;
      break;
    }
  }
  let a: Address | null;
  if (lt >= 0) {
    let gt = -1;
    for (let i = lt; i < to; i++) {
      if (ts[i] === '>') {
        gt = i;
        break;
      }
    }
    const name = tokenText(ts, from, lt).trim() || null;
    const end = gt < 0 ? to : gt;
    // RFC 5322 §4.4 obs-route: "@a.example,@b.example:" before the addr-spec
    let colon = -1;
    if (ts[lt + 1] === '@') for (let i = lt + 1; i < end && colon < 0; i++) if (ts[i] === ':') colon = i;
    a = addrOf(ts, colon < 0 ? lt + 1 : colon + 1, end, name);
    if (a && colon >= 0) a.route = ts.slice(lt + 1, colon).join('');
  } else a = addrOf(ts, from, to, null);
  if (a) out.push(a);
}

/** RFC 5322 address-list, tolerant of what real mail contains. */
export function parseAddressList(value: string): Address[] {
  const toks: string[] = [];
  // tokenise: quoted strings, comments dropped, specials (by char code: this runs for
  // every address of every message a client lists)
  const n = value.length;
  let i = 0;
  while (i < n) {
    const c = value.charCodeAt(i);
    if (c === 34 /* " */) {
      let j = i + 1;
      let s = '';
      let from = j;
      while (j < n && value.charCodeAt(j) !== 34) {
        if (value.charCodeAt(j) === 92 /* \\ */) {
          s += value.slice(from, j);
          j++;
          from = j;
        }
        j++;
      }
      s += value.slice(from, Math.min(j, n));
      toks.push('"' + s);
      i = j + 1;
    } else if (c === 40 /* ( */) {
      // a comment: kept as "(text" for the display name of a bare addr-spec
      let depth = 1;
      const from = ++i;
      while (i < n && depth) {
        const d = value.charCodeAt(i);
        if (d === 92) i++;
        else if (d === 40) depth++;
        else if (d === 41) depth--;
        i++;
      }
      toks.push('(' + value.slice(from, depth ? i : i - 1).replace(/\\(.)/g, '$1'));
    } else if (isSpecial(c)) {
      toks.push(value[i]!);
      i++;
    } else if (isSpace(c)) i++;
    else {
      let j = i;
      while (j < n) {
        const d = value.charCodeAt(j);
        if (isSpace(d) || isSpecial(d) || d === 34 || d === 40) break;
        j++;
      }
      toks.push(value.slice(i, j));
      i = j;
    }
  }
  const out: Address[] = [];
  let start = 0;
  let hasLt = false;
  let inGroup = false;
  // in a source route (`<@a.example,@b.example:u@c>`) a comma or colon is the route's
  let inRoute = false;
  for (let k = 0; k < toks.length; k++) {
    const t = toks[k]!;
    if (inRoute) {
      if (t === '>') inRoute = false;
    } else if (t === ',') {
      pushAddress(toks, start, k, out);
      start = k + 1;
      hasLt = false;
    } else if (t === ':' && !inGroup && !hasLt) {
      out.push({ name: null, mailbox: tokenText(toks, start, k), host: null, group: 'start' });
      start = k + 1;
      inGroup = true;
    } else if (t === ';' && inGroup) {
      pushAddress(toks, start, k, out);
      start = k + 1;
      hasLt = false;
      out.push({ name: null, mailbox: null, host: null, group: 'end' });
      inGroup = false;
    } else if (t === '<') {
      hasLt = true;
      inRoute = toks[k + 1] === '@';
    }
  }
  pushAddress(toks, start, toks.length, out);
  if (inGroup) out.push({ name: null, mailbox: null, host: null, group: 'end' });
  return out;
}

const QUOTABLE = /^[\x20-\x7e]*$/;
const QUOTABLE_UTF8 = /^[^\r\n\0]*$/;

/**
 * nstring of a header value read as latin1 (one char per byte), rendered the same way:
 * a literal counts bytes, and 8-bit header bytes go out as they were received.
 */
function nstringBytes(value: string | null, utf8: boolean): string {
  if (value === null) return 'NIL';
  if (value.length < 200 && (utf8 ? QUOTABLE_UTF8 : QUOTABLE).test(value)) {
    return (
      '"' + (value.includes('"') || value.includes('\\') ? value.replace(/[\\"]/g, '\\$&') : value) + '"'
    );
  }
  return `{${value.length}}\r\n${withoutNulText(value)}`;
}

function addresses(value: string | null, utf8: boolean): string {
  if (!value) return 'NIL';
  const list = parseAddressList(value);
  if (!list.length) return 'NIL';
  // RFC 9051 §9 env-from: "(" 1*address ")", addresses not separated by spaces
  let out = '(';
  for (const a of list) {
    // a NIL host marks a group (RFC 9051 §7.5.2): an address without a domain gets one,
    // the placeholder Dovecot gives it, so that no client reads it as a group's start
    const host = a.host ?? (a.group ? null : 'MISSING_DOMAIN');
    out += `(${nstringBytes(a.name, utf8)} ${nstringBytes(a.route ?? null, utf8)} ${nstringBytes(a.mailbox, utf8)} ${nstringBytes(host, utf8)})`;
  }
  return out + ')';
}

/**
 * ENVELOPE, RFC 9051 §7.5.2, from header fields whose values were read as latin1; the
 * result has one char per byte (write it with `Buffer.from(text, 'latin1')`).
 */
export function envelopeText(h: HeaderField[], utf8 = false): string {
  const from = header(h, 'from');
  const fromList = addresses(from, utf8);
  // Sender and Reply-To default to From when absent or present but empty (RFC 3501
  // §7.4.2); From is rendered once
  const orFrom = (value: string | null) => {
    const list = value === null ? 'NIL' : addresses(value, utf8);
    return list === 'NIL' ? fromList : list;
  };
  return (
    '(' +
    nstringBytes(header(h, 'date'), utf8) +
    ' ' +
    nstringBytes(header(h, 'subject'), utf8) +
    ' ' +
    fromList +
    ' ' +
    orFrom(header(h, 'sender')) +
    ' ' +
    orFrom(header(h, 'reply-to')) +
    ' ' +
    addresses(header(h, 'to'), utf8) +
    ' ' +
    addresses(header(h, 'cc'), utf8) +
    ' ' +
    addresses(header(h, 'bcc'), utf8) +
    ' ' +
    nstringBytes(header(h, 'in-reply-to'), utf8) +
    ' ' +
    nstringBytes(header(h, 'message-id'), utf8) +
    ')'
  );
}

/** ENVELOPE, RFC 9051 §7.5.2. */
export function envelope(root: MimePart, utf8 = false): Chunk[] {
  return [Buffer.from(envelopeText(root.headers, utf8), 'latin1')];
}

/** The header fields ENVELOPE is made of. */
export const ENVELOPE_FIELDS: readonly string[] = [
  'date',
  'subject',
  'from',
  'sender',
  'reply-to',
  'to',
  'cc',
  'bcc',
  'in-reply-to',
  'message-id',
];

function params(p: Record<string, string>): Chunk[] {
  const keys = Object.keys(p);
  if (!keys.length) return ['NIL'];
  return paren(keys.flatMap((k) => [str(k.toUpperCase()), str(p[k])]));
}

/**
 * BODY / BODYSTRUCTURE, RFC 9051 §7.5.2; `extended` adds the extension data. `rev2`: for a
 * session that enabled IMAP4rev2, message/global is shown as an attached message (see
 * encapsulated), else as a basic part.
 */
export function bodyStructure(part: MimePart, extended: boolean, rev2: boolean): Chunk[] {
  const dsp = (): Chunk[] =>
    part.disposition
      ? paren([str(part.disposition.type.toUpperCase()), params(part.disposition.params)])
      : ['NIL'];
  const lang = (): Chunk[] =>
    part.language
      ? part.language.length === 1
        ? str(part.language[0])
        : paren(part.language.map((l) => str(l)))
      : ['NIL'];
  if (part.type === 'multipart') {
    // an empty multipart still needs one body (RFC 9051 body-type-mpart requires 1*body)
    const kids = (part.children.length ? part.children : [emptyPart(part.end)]).map((c) =>
      bodyStructure(c, extended, rev2),
    );
    const out: Chunk[] = ['('];
    for (const k of kids) out.push(...k);
    out.push(' ', ...str(part.subtype.toUpperCase()));
    if (extended)
      out.push(' ', ...params(part.params), ' ', ...dsp(), ' ', ...lang(), ' ', ...str(part.location));
    out.push(')');
    return out;
  }
  const size = part.end - part.bodyStart;
  const fields: Chunk[][] = [
    str(part.type.toUpperCase()),
    str(part.subtype.toUpperCase()),
    params(part.params),
    str(part.id),
    str(part.description),
    str(part.encoding.toUpperCase()),
    [String(size)],
  ];
  const message = encapsulated(part, rev2);
  if (message) {
    fields.push(envelope(message), bodyStructure(message, extended, rev2), [String(part.lines)]);
  } else if (part.type === 'text') {
    fields.push([String(part.lines)]);
  }
  if (extended) fields.push(str(part.md5), dsp(), lang(), str(part.location));
  return paren(fields);
}
