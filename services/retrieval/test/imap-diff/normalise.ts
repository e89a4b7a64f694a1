// Turns a server's responses to one command into lines two servers can be compared on:
// what the RFCs leave to the server (human text, the order of untagged responses, of
// FETCH items, of flags and capabilities, quoted string or literal, UIDVALIDITY and
// MODSEQ values) is put in one form; everything else is kept.

/** One token of a response: an atom (with any `[...]` section), a string, or a list. */
export type Token =
  { t: 'atom'; v: string } | { t: 'string'; v: string; literal8: boolean } | { t: 'list'; v: Token[] };

/** Splits raw server output (latin1) into responses; a literal stays inside its response. */
export function splitResponses(raw: string): string[] {
  const out: string[] = [];
  let i = 0;
  while (i < raw.length) {
    let j = i;
    for (;;) {
      const eol = raw.indexOf('\r\n', j);
      if (eol < 0) throw new Error(`incomplete response: ${raw.slice(i)}`);
      const lit = /~?\{(\d+)\+?\}$/.exec(raw.slice(j, eol));
      if (!lit) {
        j = eol + 2;
        break;
      }
      j = eol + 2 + Number(lit[1]);
    }
    out.push(raw.slice(i, j - 2));
    i = j;
  }
  return out;
}

/** Parses one response into tokens. */
export function tokenise(line: string): Token[] {
  let i = 0;
  const list = (close: string | null): Token[] => {
    const toks: Token[] = [];
    for (;;) {
      while (line[i] === ' ') i++;
      if (i >= line.length) {
        if (close) throw new Error(`unclosed list in ${line}`);
        return toks;
      }
      const c = line[i]!;
      if (c === close) {
        i++;
        return toks;
      }
      if (c === '(') {
        i++;
        toks.push({ t: 'list', v: list(')') });
      } else if (c === '"') {
        let v = '';
        i++;
        while (line[i] !== '"') {
          if (i >= line.length) throw new Error(`unclosed string in ${line}`);
          if (line[i] === '\\') i++;
          v += line[i++];
        }
        i++;
        toks.push({ t: 'string', v, literal8: false });
      } else if (/^~?\{\d+\+?\}\r\n/.test(line.slice(i))) {
        const m = /^(~?)\{(\d+)\+?\}\r\n/.exec(line.slice(i))!;
        i += m[0].length;
        toks.push({ t: 'string', v: line.slice(i, i + Number(m[2])), literal8: m[1] === '~' });
        i += Number(m[2]);
      } else {
        // An atom; `[...]` inside it (a section, a response code) may hold spaces.
        let v = '';
        let depth = 0;
        /** Parentheses open in a section's header-list. */
        let parens = 0;
        while (i < line.length) {
          const ch = line[i]!;
          if (depth === 0 && (ch === ' ' || ch === '(' || ch === ')' || ch === close)) break;
          // a section (`BODY[HEADER.FIELDS (A B)]`) may hold spaces; elsewhere "[" is an atom char
          if (ch === '[' && (depth > 0 || /^(BODY|BINARY|BINARY\.SIZE)$/i.test(v))) depth++;
          if (ch === ']' && depth > 0 && parens === 0) depth--;
          if (depth > 0 && ch === '(') parens++;
          if (depth > 0 && ch === ')') parens--;
          if (ch === '"' && depth > 0) {
            // a field name in a section may hold "]" (`HEADER.FIELDS ("X]Y")`)
            const q = /^"(?:[^"\\]|\\.)*"/.exec(line.slice(i));
            if (q) {
              v += q[0];
              i += q[0].length;
              continue;
            }
          }
          v += ch;
          i++;
        }
        if (!v) throw new Error(`unexpected ${JSON.stringify(c)} in ${line}`);
        toks.push({ t: 'atom', v });
      }
    }
  };
  return list(null);
}

/** Renders tokens in the compared form: strings quoted (`~"..."` for literal8). */
export function render(toks: Token[]): string {
  return toks
    .map((t) =>
      t.t === 'atom'
        ? t.v
        : t.t === 'list'
          ? `(${render(t.v)})`
          : `${t.literal8 ? '~' : ''}${JSON.stringify(t.v)}`,
    )
    .join(' ');
}

/** Numbers the server chose (UIDVALIDITY, MODSEQ): replaced by names in order of appearance. */
export class Renumber {
  private seen = new Map<string, string>();
  constructor(private prefix: string) {}
  name(v: string): string {
    let n = this.seen.get(v);
    if (!n) this.seen.set(v, (n = `${this.prefix}${this.seen.size + 1}>`));
    return n;
  }
  /** The number named `name` (as `name()` gave it), or undefined. */
  value(name: string): string | undefined {
    for (const [v, n] of this.seen) if (n === name) return v;
    return undefined;
  }
}

export interface Normaliser {
  uidvalidity: Renumber;
  modseq: Renumber;
}

export function newNormaliser(): Normaliser {
  return { uidvalidity: new Renumber('<uidvalidity-'), modseq: new Renumber('<modseq-') };
}

/**
 * A command with the names of numbers a server chose (`<uidvalidity-1>`, `<modseq-3>`, as
 * its compared answers named them) replaced by that server's own numbers, so a script
 * can hand them back (SELECT ... (QRESYNC (uidvalidity modseq)), CHANGEDSINCE).
 */
export function substituteNames(n: Normaliser, command: string): string {
  return command.replace(/<(uidvalidity|modseq)-\d+>/g, (name, kind: string) => {
    const v = (kind === 'modseq' ? n.modseq : n.uidvalidity).value(name);
    if (v === undefined) throw new Error(`${name} was not in an answer before ${command}`);
    return v;
  });
}

const sortAtoms = (toks: Token[]): Token[] =>
  [...toks].sort((a, b) => render([a]).localeCompare(render([b])));

/** `[CODE args] text` → `[CODE args]`, with the code's arguments in their compared form. */
function responseCode(n: Normaliser, rest: string): string {
  if (!rest.startsWith('[')) return '';
  let end = 1;
  for (let depth = 0; end < rest.length && (depth > 0 || rest[end] !== ']'); end++) {
    if (rest[end] === '(') depth++;
    if (rest[end] === ')') depth--;
  }
  const code = tokenise(rest.slice(1, end));
  const name = code[0]?.t === 'atom' ? code[0].v.toUpperCase() : '';
  if (name === 'CAPABILITY') code.splice(1, code.length, ...sortAtoms(code.slice(1)));
  if (name === 'PERMANENTFLAGS' && code[1]?.t === 'list') code[1] = { t: 'list', v: sortAtoms(code[1].v) };
  if (/^(UIDVALIDITY|APPENDUID|COPYUID)$/.test(name) && code[1]?.t === 'atom')
    code[1] = { t: 'atom', v: n.uidvalidity.name(code[1].v) };
  if (name === 'HIGHESTMODSEQ' && code[1]?.t === 'atom') code[1] = { t: 'atom', v: n.modseq.name(code[1].v) };
  return `[${render(code)}]`;
}

function upperStrings(t: Token): Token {
  if (t.t === 'string') return { ...t, v: t.v.toUpperCase() };
  if (t.t === 'list') return { t: 'list', v: t.v.map(upperStrings) };
  return t;
}

/** FETCH items sorted by name, FLAGS sorted, MODSEQ renamed. */
function fetchItems(n: Normaliser, items: Token[]): Token[] {
  const pairs: [Token, Token][] = [];
  for (let i = 0; i + 1 < items.length; i += 2) {
    const k = items[i]!;
    let v = items[i + 1]!;
    const name = k.t === 'atom' ? k.v.toUpperCase() : '';
    if (name === 'FLAGS' && v.t === 'list') v = { t: 'list', v: sortAtoms(v.v) };
    if (name === 'MODSEQ' && v.t === 'list' && v.v[0]?.t === 'atom')
      v = { t: 'list', v: [{ t: 'atom', v: n.modseq.name(v.v[0].v) }] };
    // MIME types, subtypes, parameter names and encodings are case-insensitive (RFC 2045)
    if (name === 'BODY' || name === 'BODYSTRUCTURE') v = upperStrings(v);
    pairs.push([k, v]);
  }
  pairs.sort((a, b) => render([a[0]]).localeCompare(render([b[0]])));
  return pairs.flat();
}

/** A mailbox name is an astring: an atom and the same quoted string are one name. */
function mailboxName(t: Token): Token {
  return t.t === 'atom' ? { t: 'string', v: t.v, literal8: false } : t;
}

/** One untagged or tagged response in its compared form. */
export function normaliseResponse(n: Normaliser, line: string): string {
  const status = /^(\*|[A-Za-z0-9.]+) (OK|NO|BAD|BYE|PREAUTH)(?: (.*))?$/s.exec(line);
  if (status) {
    let code = responseCode(n, status[3] ?? '');
    // a hint of Dovecot's (RFC 5530) on a command that succeeded
    if (status[2] === 'OK' && code === '[CLIENTBUG]') code = '';
    return `${status[1] === '*' ? '* ' : ''}${status[2]}${code ? ` ${code}` : ''}`;
  }
  const toks = tokenise(line);
  const [star, a, b] = toks;
  if (star?.t !== 'atom' || star.v !== '*') return render(toks);
  const word = a?.t === 'atom' ? a.v.toUpperCase() : '';
  if (word === 'CAPABILITY') return render([star, a!, ...sortAtoms(toks.slice(2))]);
  if (word === 'FLAGS' && b?.t === 'list') return render([star, a!, { t: 'list', v: sortAtoms(b.v) }]);
  if (word === 'STATUS' && b && toks[3]?.t === 'list') {
    const pairs: [Token, Token][] = [];
    const list = toks[3].v;
    for (let i = 0; i + 1 < list.length; i += 2) {
      const k = list[i]!;
      let v = list[i + 1]!;
      const key = k.t === 'atom' ? k.v.toUpperCase() : '';
      if (v.t === 'atom' && key === 'UIDVALIDITY') v = { t: 'atom', v: n.uidvalidity.name(v.v) };
      if (v.t === 'atom' && key === 'HIGHESTMODSEQ') v = { t: 'atom', v: n.modseq.name(v.v) };
      pairs.push([k, v]);
    }
    pairs.sort((x, y) => render([x[0]]).localeCompare(render([y[0]])));
    return render([star, a!, mailboxName(b), { t: 'list', v: pairs.flat() }]);
  }
  if ((word === 'LIST' || word === 'LSUB') && toks[4])
    return render([...toks.slice(0, 4), mailboxName(toks[4])]);
  if (b?.t === 'atom' && b.v.toUpperCase() === 'FETCH' && toks[3]?.t === 'list')
    return render([star, a!, b, { t: 'list', v: fetchItems(n, toks[3].v) }]);
  if (word === 'SEARCH' || word === 'SORT') {
    // `(MODSEQ n)` at the end of a CONDSTORE search result
    const last = toks[toks.length - 1];
    if (
      last?.t === 'list' &&
      last.v[0]?.t === 'atom' &&
      last.v[0].v.toUpperCase() === 'MODSEQ' &&
      last.v[1]?.t === 'atom'
    )
      return render([
        ...toks.slice(0, -1),
        { t: 'list', v: [last.v[0], { t: 'atom', v: n.modseq.name(last.v[1].v) }] },
      ]);
  }
  return render(toks);
}

/** The kind an untagged response is grouped by: the order between kinds is the server's. */
function kind(line: string): string {
  const m = /^\* (?:\d+ )?([A-Z]+)(?: \[([A-Z-]+))?/i.exec(line);
  return m ? `${m[1]!.toUpperCase()} ${m[2] ?? ''}` : line;
}

/** Kinds whose responses come in no defined order (RFC 9051 §6.3.9: LIST names any way round). */
const UNORDERED = new Set(['LIST ', 'LSUB ', 'STATUS ']);

/**
 * The responses to one command, compared form: untagged ones grouped by kind (a stable
 * sort, so FETCH and EXPUNGE keep their order; LIST, LSUB and STATUS lines sorted), the
 * tagged one last.
 */
export function normaliseCommand(n: Normaliser, responses: string[]): string[] {
  // STATUS lines in order of mailbox name before the numbers the server chose are named:
  // their order is the server's (NOTIFY's STATUS for many mailboxes), the names must not be
  const at = responses.flatMap((r, i) => (r.startsWith('* STATUS ') ? [i] : []));
  const mailbox = (r: string) => render([mailboxName(tokenise(r)[2]!)]);
  const statuses = at.map((i) => responses[i]!).sort((x, y) => mailbox(x).localeCompare(mailbox(y)));
  responses = responses.map((r, i) => (at.includes(i) ? statuses[at.indexOf(i)]! : r));
  const lines = responses.map((r) => normaliseResponse(n, r));
  const tagged = lines.pop()!;
  const untagged = lines
    .filter((l) => l.startsWith('*'))
    .map((l, i) => ({ l, i, k: kind(l) }))
    .sort((x, y) => x.k.localeCompare(y.k) || (UNORDERED.has(x.k) ? x.l.localeCompare(y.l) : 0) || x.i - y.i)
    .map((x) => x.l);
  return [...untagged, tagged];
}
