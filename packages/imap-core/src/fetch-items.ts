// FETCH data items, RFC 9051 §6.4.5 (and RFC 3516 BINARY, RFC 7162 MODSEQ).
import { ParseError, type Token } from './parser.js';

export interface Section {
  /** Part number path; empty for the whole message. */
  path: number[];
  spec: null | 'HEADER' | 'TEXT' | 'MIME' | 'HEADER.FIELDS' | 'HEADER.FIELDS.NOT';
  fields: string[];
}

export type FetchItem =
  | {
      k: 'FLAGS' | 'UID' | 'RFC822.SIZE' | 'INTERNALDATE' | 'ENVELOPE' | 'BODYSTRUCTURE' | 'BODY' | 'MODSEQ';
    }
  | { k: 'RFC822' | 'RFC822.HEADER' | 'RFC822.TEXT' }
  | {
      k: 'SECTION';
      /** The name echoed in the response (`BODY[1.MIME]<0>`, `BINARY[1]`). */
      kind: 'BODY' | 'BINARY' | 'BINARY.SIZE';
      peek: boolean;
      section: Section;
      partial: { start: number; length: number | null } | null;
      /** Text of the section as it appeared, for the response (`HEADER.FIELDS (FROM)`). */
      text: string;
    };

const SIMPLE = new Set([
  'FLAGS',
  'UID',
  'RFC822.SIZE',
  'INTERNALDATE',
  'ENVELOPE',
  'BODYSTRUCTURE',
  'BODY',
  'MODSEQ',
]);
const MACROS: Record<string, string[]> = {
  ALL: ['FLAGS', 'INTERNALDATE', 'RFC822.SIZE', 'ENVELOPE'],
  FAST: ['FLAGS', 'INTERNALDATE', 'RFC822.SIZE'],
  FULL: ['FLAGS', 'INTERNALDATE', 'RFC822.SIZE', 'ENVELOPE', 'BODY'],
};

const SECTION_RE =
  /^(BODY|BODY\.PEEK|BINARY|BINARY\.PEEK|BINARY\.SIZE)\[(.*)\](?:<(\d{1,10})(?:\.(\d{1,10}))?>)?$/i;

export function parseSection(text: string, binary: boolean): Section {
  const m =
    /^((?:[1-9]\d*)(?:\.[1-9]\d*)*)?(?:(?:^|\.)(HEADER\.FIELDS\.NOT|HEADER\.FIELDS|HEADER|TEXT|MIME)(?: \((.*)\))?)?$/i.exec(
      text,
    );
  if (!m) throw new ParseError(`bad section [${text}]`);
  const path = m[1] ? m[1].split('.').map(Number) : [];
  const spec = (m[2]?.toUpperCase() ?? null) as Section['spec'];
  if (binary && spec) throw new ParseError('BINARY takes part numbers only');
  if (spec === 'MIME' && !path.length) throw new ParseError('MIME needs a part number');
  const isFields = spec === 'HEADER.FIELDS' || spec === 'HEADER.FIELDS.NOT';
  if (isFields !== (m[3] !== undefined)) throw new ParseError('HEADER.FIELDS needs a field list');
  const fields = m[3] !== undefined ? headerList(m[3]).names : [];
  return { path, spec, fields };
}

// header-fld-name = astring (RFC 9051 §9): an atom, or a quoted string with \" and \\
const FIELD_NAME = /"((?:[^"\\\r\n]|\\["\\])*)"|([^\x00-\x20\x7f(){%*"\\]+)/;

/**
 * The names of a header-list, `(` header-fld-name *(SP header-fld-name) `)`, each as the
 * client spelled it and as it names a field (unquoted, lower-cased). A quoted name may be
 * empty (`""`): it names no field, as in Dovecot, so HEADER.FIELDS ("") is the empty line
 * alone and HEADER.FIELDS.NOT ("") the whole header. Spaces around and between names are
 * let pass, as Dovecot lets them.
 */
function headerList(list: string): { spelled: string[]; names: string[] } {
  const spelled: string[] = [];
  const names: string[] = [];
  const text = list.trim();
  const name = new RegExp(FIELD_NAME.source, 'y');
  const gap = / +/y;
  while (name.lastIndex < text.length) {
    if (spelled.length) {
      gap.lastIndex = name.lastIndex;
      if (!gap.exec(text)) throw new ParseError('header field names need spaces between them');
      name.lastIndex = gap.lastIndex;
    }
    const f = name.exec(text);
    if (!f) throw new ParseError('bad header field name');
    spelled.push(f[0]);
    names.push((f[2] ?? f[1]!.replace(/\\(.)/g, '$1')).toLowerCase());
  }
  if (!names.length) throw new ParseError('empty field list');
  return { spelled, names };
}

/**
 * The section as a response names it: as the client wrote it, with a header-list one
 * space apart (`HEADER.FIELDS ( A  B)` is answered as `HEADER.FIELDS (A B)`, RFC 9051 §9
 * allowing no other), upper-cased, as Dovecot does.
 */
function sectionLabel(text: string): string {
  const list = /^([^(]*\()(.*)\)$/.exec(text);
  const label = list ? `${list[1]}${headerList(list[2]!).spelled.join(' ')})` : text;
  return label.toUpperCase();
}

function item(atom: string): FetchItem[] {
  const up = atom.toUpperCase();
  if (MACROS[up]) return MACROS[up].map((k) => ({ k }) as FetchItem);
  if (SIMPLE.has(up)) return [{ k: up } as FetchItem];
  if (up === 'RFC822' || up === 'RFC822.HEADER' || up === 'RFC822.TEXT') return [{ k: up }];
  const m = SECTION_RE.exec(atom);
  if (!m) throw new ParseError(`unknown FETCH item ${atom}`);
  const name = m[1]!.toUpperCase();
  const kind = name.startsWith('BINARY.SIZE') ? 'BINARY.SIZE' : name.startsWith('BINARY') ? 'BINARY' : 'BODY';
  if (kind === 'BINARY.SIZE' && m[3] !== undefined) throw new ParseError('BINARY.SIZE takes no partial');
  const section = parseSection(m[2]!, kind !== 'BODY');
  return [
    {
      k: 'SECTION',
      kind,
      peek: name.endsWith('.PEEK'),
      section,
      partial:
        m[3] !== undefined ? { start: Number(m[3]), length: m[4] !== undefined ? Number(m[4]) : null } : null,
      text: sectionLabel(m[2]!),
    },
  ];
}

/**
 * A data item asked for twice (`UID UID`) is answered once, as Dovecot does;
 * body sections are answered as asked, each one.
 */
function once(items: FetchItem[]): FetchItem[] {
  const seen = new Set<string>();
  return items.filter((i) => i.k === 'SECTION' || (!seen.has(i.k) && !!seen.add(i.k)));
}

/** The item list of a FETCH command: one atom or a parenthesised list. */
export function parseFetchItems(t: Token): FetchItem[] {
  if (t.t === 'atom') return item(t.v);
  if (t.t === 'list' && t.v.length) {
    return once(
      t.v.flatMap((x) => {
        if (x.t !== 'atom') throw new ParseError('bad FETCH item');
        const up = x.v.toUpperCase();
        if (MACROS[up]) throw new ParseError(`${up} cannot be in a list`);
        return item(x.v);
      }),
    );
  }
  throw new ParseError('expected FETCH items');
}
