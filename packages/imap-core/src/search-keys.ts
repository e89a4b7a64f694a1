// SEARCH keys, RFC 9051 §6.4.4 (and RFC 7162 MODSEQ). Parsing only; the service evaluates.
import { isUsAscii } from './mime.js';
import { ArgReader, ParseError, textString } from './parser.js';
import type { SequenceSet } from './sequence.js';
import { parseSequenceSet } from './sequence.js';

export type SearchKey =
  | { k: 'all' }
  | { k: 'flag'; flag: string; set: boolean }
  | { k: 'new' }
  | { k: 'old' }
  | { k: 'recent' }
  | { k: 'seq'; set: SequenceSet }
  | { k: 'uid'; set: SequenceSet }
  | { k: 'header'; field: string; value: string }
  | { k: 'body'; value: string }
  | { k: 'text'; value: string }
  | { k: 'date'; field: 'internal' | 'sent'; op: 'before' | 'on' | 'since'; day: number }
  | { k: 'size'; op: 'larger' | 'smaller'; n: number }
  | { k: 'modseq'; n: number }
  | { k: 'not'; key: SearchKey }
  | { k: 'or'; a: SearchKey; b: SearchKey }
  | { k: 'and'; keys: SearchKey[] };

const MONTHS = ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'];

/** `1-Feb-1994` -> days since the epoch (UTC), RFC 9051 date. */
export function parseSearchDate(text: string): number {
  const m = /^(\d{1,2})-([A-Za-z]{3})-(\d{4})$/.exec(text);
  const mon = m ? MONTHS.indexOf(m[2]!.toLowerCase()) : -1;
  if (!m || mon < 0) throw new ParseError(`bad date ${text}`);
  return Math.floor(Date.UTC(Number(m[3]), mon, Number(m[1])) / 86400000);
}

/**
 * The day (days since 1970-01-01) a `Date:` header names in its own zone, time and zone
 * disregarded (RFC 3501 §6.4.4 SENTBEFORE/SENTON/SENTSINCE); null when it names none.
 */
export function headerDateDay(value: string): number | null {
  // RFC 5322 §3.3 date = day month year, after an optional "Www,"; two- and three-digit
  // years are the obsolete forms (§4.3)
  const m = /(?:^|[\s,])(\d{1,2})\s+([A-Za-z]{3})[a-z]*\.?\s+(\d{2,4})(?!\d)/.exec(value);
  const mon = m ? MONTHS.indexOf(m[2]!.toLowerCase()) : -1;
  if (!m || mon < 0) return null;
  let year = Number(m[3]);
  if (m[3]!.length === 2) year += year < 50 ? 2000 : 1900;
  else if (m[3]!.length === 3) year += 1900;
  return Math.floor(Date.UTC(year, mon, Number(m[1])) / 86400000);
}

const FLAG_KEYS: Record<string, [string, boolean]> = {
  ANSWERED: ['\\Answered', true],
  DELETED: ['\\Deleted', true],
  DRAFT: ['\\Draft', true],
  FLAGGED: ['\\Flagged', true],
  SEEN: ['\\Seen', true],
  UNANSWERED: ['\\Answered', false],
  UNDELETED: ['\\Deleted', false],
  UNDRAFT: ['\\Draft', false],
  UNFLAGGED: ['\\Flagged', false],
  UNSEEN: ['\\Seen', false],
};
const HEADER_KEYS = new Set(['BCC', 'CC', 'FROM', 'SUBJECT', 'TO']);
const DATE_KEYS: Record<string, ['internal' | 'sent', 'before' | 'on' | 'since']> = {
  BEFORE: ['internal', 'before'],
  ON: ['internal', 'on'],
  SINCE: ['internal', 'since'],
  SENTBEFORE: ['sent', 'before'],
  SENTON: ['sent', 'on'],
  SENTSINCE: ['sent', 'since'],
};

/**
 * The charsets a BADCHARSET names (RFC 9051 §7.1): the two every client can write its
 * search in, of the many searchCharset() reads.
 */
export const SUPPORTED_CHARSETS = ['UTF-8', 'US-ASCII'];

export class BadCharsetError extends Error {}

/** Reads a search string (astring) in the charset the command names. */
export type SearchText = (r: ArgReader) => string;

/** UTF-8, as quoted strings and atoms are read whatever the charset. */
const utf8Text: SearchText = (r) => r.astring();

function decoderFor(charset: string) {
  try {
    return new TextDecoder(charset);
  } catch {
    return null;
  }
}

/**
 * How search strings in `charset` are read (SEARCH's CHARSET, SORT's and THREAD's
 * charset), null for a charset not known. Beyond UTF-8 and US-ASCII, every charset the
 * WHATWG Encoding Standard decodes (ISO-8859-x, Windows-125x, KOI8-R, Shift_JIS,
 * GB18030...), as Dovecot takes every charset iconv knows: SquirrelMail names its
 * language's charset in every SEARCH. The charset is that of literals; 8-bit text in a
 * quoted string is UTF-8 (RFC 9051 §9 quoted), so it is read as such. 8-bit octets in a
 * US-ASCII literal are taken as UTF-8 too, as in a message (decodeText). Once UTF8=ACCEPT
 * is on (`utf8Only`), every string is UTF-8 and no other charset may be named (RFC 6855
 * §3, erratum 4029): it is refused as one not known.
 */
export function searchCharset(charset: string, utf8Only = false): SearchText | null {
  const d = decoderFor(charset);
  if (!d) return null;
  if (d.encoding === 'utf-8' || isUsAscii(charset)) return utf8Text;
  if (utf8Only) return null;
  // the WHATWG name for bytes as they are, which no mail charset is
  if (d.encoding === 'x-user-defined') return null;
  return (r) => {
    const t = r.peek();
    if (t?.t !== 'string' || !t.literal) return r.astring();
    r.next();
    return d.decode(textString(t));
  };
}

/**
 * KEYWORD's argument: flag-keyword is an atom (RFC 9051 §9), and a backslash is no atom
 * char, so `KEYWORD \Seen` is a syntax error rather than a search for the system flag.
 */
function keyword(r: ArgReader): string {
  const k = r.atomOrNil('keyword');
  if (k.includes('\\')) throw new ParseError('a keyword has no "\\"; system flags have keys of their own');
  // ATOM-CHAR is a CHAR: no keyword has an 8-bit byte
  if (/[^\x00-\x7f]/.test(k)) throw new ParseError('8-bit data in keyword');
  return k;
}

function one(r: ArgReader, depth: number, text: SearchText): SearchKey {
  if (depth > 100) throw new ParseError('search keys nested too deeply');
  const t = r.next('search key');
  if (t.t === 'list') {
    if (!t.v.length) throw new ParseError('empty search list');
    const inner = new ArgReader(t.v, r.utf8Names);
    const keys: SearchKey[] = [];
    while (inner.remaining) keys.push(one(inner, depth + 1, text));
    return keys.length === 1 ? keys[0]! : { k: 'and', keys };
  }
  if (t.t !== 'atom') throw new ParseError('expected a search key');
  const up = t.v.toUpperCase();
  if (FLAG_KEYS[up]) return { k: 'flag', flag: FLAG_KEYS[up][0], set: FLAG_KEYS[up][1] };
  if (HEADER_KEYS.has(up)) return { k: 'header', field: up.toLowerCase(), value: text(r) };
  if (DATE_KEYS[up])
    return {
      k: 'date',
      field: DATE_KEYS[up][0],
      op: DATE_KEYS[up][1],
      day: parseSearchDate(r.astring('date')),
    };
  switch (up) {
    case 'ALL':
      return { k: 'all' };
    case 'NEW':
      return { k: 'new' };
    case 'OLD':
      return { k: 'old' };
    case 'RECENT':
      return { k: 'recent' };
    case 'KEYWORD':
      return { k: 'flag', flag: keyword(r), set: true };
    case 'UNKEYWORD':
      return { k: 'flag', flag: keyword(r), set: false };
    case 'HEADER':
      return { k: 'header', field: r.astring('header name').toLowerCase(), value: text(r) };
    case 'BODY':
      return { k: 'body', value: text(r) };
    case 'TEXT':
      return { k: 'text', value: text(r) };
    case 'LARGER':
      return { k: 'size', op: 'larger', n: r.number() };
    case 'SMALLER':
      return { k: 'size', op: 'smaller', n: r.number() };
    case 'UID':
      return { k: 'uid', set: r.seqSet() };
    case 'NOT':
      return { k: 'not', key: one(r, depth + 1, text) };
    case 'OR': {
      const a = one(r, depth + 1, text);
      return { k: 'or', a, b: one(r, depth + 1, text) };
    }
    case 'MODSEQ': {
      // RFC 7162 §3.1.5: optional entry name and type before the number
      const t2 = r.peek();
      if (t2?.t === 'string' || (t2?.t === 'atom' && !/^\d+$/.test(t2.v))) {
        r.next();
        r.atom('entry type');
      }
      return { k: 'modseq', n: r.number('mod-sequence') };
    }
    default:
      if (/^[\d*$]/.test(up)) {
        try {
          return { k: 'seq', set: parseSequenceSet(t.v) };
        } catch (err) {
          throw new ParseError((err as Error).message);
        }
      }
      throw new ParseError(`unknown search key ${t.v}`);
  }
}

/** Reads `[CHARSET x] key...`; throws BadCharsetError for charsets we do not decode. */
export function parseSearch(r: ArgReader): SearchKey {
  const first = r.peek();
  let text = utf8Text;
  if (first?.t === 'atom' && first.v.toUpperCase() === 'CHARSET') {
    r.next();
    const cs = r.astring('charset');
    text = searchCharset(cs, r.utf8Names) ?? badCharset(cs);
  }
  return parseSearchKeys(r, text);
}

function badCharset(cs: string): never {
  throw new BadCharsetError(cs);
}

/**
 * Reads `key...` alone, strings read by `text`: SORT and THREAD name their charset before
 * the keys (RFC 5256), so a CHARSET there is a bad key.
 */
export function parseSearchKeys(r: ArgReader, text: SearchText = utf8Text): SearchKey {
  const keys: SearchKey[] = [];
  while (r.remaining) keys.push(one(r, 0, text));
  if (!keys.length) throw new ParseError('missing search key');
  return keys.length === 1 ? keys[0]! : { k: 'and', keys };
}

export function usesModseq(key: SearchKey): boolean {
  switch (key.k) {
    case 'modseq':
      return true;
    case 'not':
      return usesModseq(key.key);
    case 'or':
      return usesModseq(key.a) || usesModseq(key.b);
    case 'and':
      return key.keys.some(usesModseq);
    case 'all':
    case 'body':
    case 'date':
    case 'flag':
    case 'header':
    case 'new':
    case 'old':
    case 'recent':
    case 'seq':
    case 'size':
    case 'text':
    case 'uid':
      return false;
  }
}
