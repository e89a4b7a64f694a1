// Rendering of response data, RFC 9051 §9: strings as quoted or literal, ENVELOPE and
// BODYSTRUCTURE from a parsed MIME tree. Output is a list of chunks (string | Buffer)
// so message bytes are never re-encoded.
import { header, type MimePart } from './mime.js';

export type Chunk = string | Buffer;

/** nstring: quoted when safe, literal otherwise, NIL for null. */
export function str(value: string | Buffer | null | undefined, utf8 = false): Chunk[] {
  if (value === null || value === undefined) return ['NIL'];
  const text = typeof value === 'string' ? value : value.toString('utf8');
  const safe = utf8 ? /^[^\r\n\0]*$/ : /^[\x20-\x7e]*$/;
  if (typeof value === 'string' && text.length < 200 && safe.test(text)) {
    return ['"' + text.replace(/[\\"]/g, '\\$&') + '"'];
  }
  const buf = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
  return [`{${buf.length}}\r\n`, buf];
}

export function literal(buf: Buffer, binary = false): Chunk[] {
  return [`${binary ? '~' : ''}{${buf.length}}\r\n`, buf];
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

export function chunksLength(chunks: Chunk[]): number {
  let n = 0;
  for (const c of chunks) n += typeof c === 'string' ? Buffer.byteLength(c) : c.length;
  return n;
}

export interface Address {
  name: string | null;
  mailbox: string | null;
  host: string | null;
  /** Group start (mailbox = group name, host null) or end (all null). */
  group?: 'start' | 'end';
}

/** RFC 5322 address-list, tolerant of what real mail contains. */
export function parseAddressList(value: string): Address[] {
  const out: Address[] = [];
  const toks: string[] = [];
  // tokenise: quoted strings, comments dropped, specials
  let i = 0;
  while (i < value.length) {
    const c = value[i]!;
    if (c === '"') {
      let j = i + 1;
      let s = '';
      while (j < value.length && value[j] !== '"') {
        if (value[j] === '\\') j++;
        s += value[j] ?? '';
        j++;
      }
      toks.push('"' + s);
      i = j + 1;
    } else if (c === '(') {
      let depth = 1;
      i++;
      while (i < value.length && depth) {
        if (value[i] === '\\') i++;
        else if (value[i] === '(') depth++;
        else if (value[i] === ')') depth--;
        i++;
      }
    } else if ('<>,:;@'.includes(c)) {
      toks.push(c);
      i++;
    } else if (/\s/.test(c)) i++;
    else {
      let j = i;
      while (j < value.length && !/[\s"(<>,:;@]/.test(value[j]!)) j++;
      toks.push(value.slice(i, j));
      i = j;
    }
  }
  const text = (ts: string[]) => ts.map((t) => (t.startsWith('"') ? t.slice(1) : t)).join(' ');
  const addrOf = (ts: string[], name: string | null): Address | null => {
    const at = ts.lastIndexOf('@');
    const mailbox = (at >= 0 ? ts.slice(0, at) : ts)
      .map((t) => (t.startsWith('"') ? t.slice(1) : t))
      .join('');
    const host = at >= 0 ? ts.slice(at + 1).join('') : null;
    if (!mailbox && !host) return null;
    return { name, mailbox: mailbox || null, host: host || null };
  };
  let cur: string[] = [];
  let inGroup = false;
  const flush = () => {
    if (!cur.length) return;
    const lt = cur.indexOf('<');
    if (lt >= 0) {
      const gt = cur.indexOf('>', lt);
      const name = text(cur.slice(0, lt)).trim() || null;
      const a = addrOf(cur.slice(lt + 1, gt < 0 ? undefined : gt), name);
      if (a) out.push(a);
    } else {
      const a = addrOf(cur, null);
      if (a) out.push(a);
    }
    cur = [];
  };
  for (const t of toks) {
    if (t === ',') flush();
    else if (t === ':' && !inGroup && !cur.includes('<')) {
      out.push({ name: null, mailbox: text(cur), host: null, group: 'start' });
      cur = [];
      inGroup = true;
    } else if (t === ';' && inGroup) {
      flush();
      out.push({ name: null, mailbox: null, host: null, group: 'end' });
      inGroup = false;
    } else cur.push(t);
  }
  flush();
  if (inGroup) out.push({ name: null, mailbox: null, host: null, group: 'end' });
  return out;
}

function addresses(value: string | null, utf8: boolean): Chunk[] {
  if (!value) return ['NIL'];
  const list = parseAddressList(value);
  if (!list.length) return ['NIL'];
  // RFC 9051 §9 env-from: "(" 1*address ")", addresses not separated by spaces
  const out: Chunk[] = ['('];
  for (const a of list)
    out.push(...paren([str(a.name, utf8), ['NIL'], str(a.mailbox, utf8), str(a.host, utf8)]));
  out.push(')');
  return out;
}

/** ENVELOPE, RFC 9051 §7.5.2. */
export function envelope(root: MimePart, utf8 = false): Chunk[] {
  const h = root.headers;
  const from = header(h, 'from');
  const addrs = (name: string, fallback?: string | null) =>
    addresses(header(h, name) ?? fallback ?? null, utf8);
  return paren([
    str(header(h, 'date'), utf8),
    str(header(h, 'subject'), utf8),
    addrs('from'),
    addrs('sender', from),
    addrs('reply-to', from),
    addrs('to'),
    addrs('cc'),
    addrs('bcc'),
    str(header(h, 'in-reply-to'), utf8),
    str(header(h, 'message-id'), utf8),
  ]);
}

function params(p: Record<string, string>): Chunk[] {
  const keys = Object.keys(p);
  if (!keys.length) return ['NIL'];
  return paren(keys.flatMap((k) => [str(k.toUpperCase()), str(p[k])]));
}

/** BODY / BODYSTRUCTURE, RFC 9051 §7.5.2; `extended` adds the extension data. */
export function bodyStructure(part: MimePart, extended: boolean): Chunk[] {
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
    const kids = part.children.length
      ? part.children.map((c) => bodyStructure(c, extended))
      : // an empty multipart still needs one body (RFC 9051 body-type-mpart requires 1*body)
        [
          paren([
            str('TEXT'),
            str('PLAIN'),
            paren([str('CHARSET'), str('US-ASCII')]),
            ['NIL'],
            ['NIL'],
            str('7BIT'),
            ['0'],
            ['0'],
          ]),
        ];
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
  if (part.message) {
    fields.push(envelope(part.message), bodyStructure(part.message, extended), [String(part.lines)]);
  } else if (part.type === 'text') {
    fields.push([String(part.lines)]);
  }
  if (extended) fields.push(str(part.md5), dsp(), lang(), str(part.location));
  return paren(fields);
}
