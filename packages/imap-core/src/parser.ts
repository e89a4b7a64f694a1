// IMAP command grammar, RFC 9051 §9. Turns a framed command into tokens; each
// command's argument shape is then read through an ArgReader, so every syntax error
// becomes a ParseError (answered `BAD` with the tag) and never reaches a handler.
import type { FramedCommand } from './framer.js';
import { decodeMutf7 } from './mutf7.js';
import { parseSequenceSet, type SequenceSet } from './sequence.js';

/** RFC 9051 §9 number64: an unsigned 63-bit integer. */
const NUMBER64_MAX = 2n ** 63n - 1n;

export type Token =
  | { t: 'atom'; v: string }
  /** `binary`: a literal8 (RFC 3516 §4.4), which only APPEND's message and CATENATE's TEXT take. */
  | { t: 'string'; v: Buffer; literal: boolean; binary?: boolean }
  | { t: 'list'; v: Token[] }
  /** NIL as the client spelled it: an atom too (RFC 9051 §9), where an atom is wanted. */
  | { t: 'nil'; v: string };

export interface ParsedCommand {
  tag: string;
  /** Upper-cased; `UID FETCH` is `UID FETCH`. */
  name: string;
  args: Token[];
}

export class ParseError extends Error {
  constructor(
    message: string,
    readonly tag: string | null = null,
  ) {
    super(message);
  }
}

/**
 * A mailbox name that is a well-formed astring but no modified UTF-7 (RFC 3501 §5.1.3, a
 * naming convention, not grammar): a name no mailbox can have, answered NO, not BAD.
 */
export class MailboxNameError extends Error {}

// RFC 3501/9051 §9: "]" is not an ATOM-CHAR but is an ASTRING-CHAR, and arguments are
// astrings wherever a bare "]" can stand; so it is read as part of an atom ("[" is an
// ATOM-CHAR anyway). Tags exclude it (readTag).
const ATOM_SPECIALS = new Set([...'(){ "\\'].map((c) => c.charCodeAt(0)));
/** The fetch attributes whose `[section]` may hold spaces: `BODY[HEADER.FIELDS (A B)]`. */
const SECTIONED = /^(BODY|BODY\.PEEK|BINARY|BINARY\.PEEK|BINARY\.SIZE)$/i;

/**
 * Deepest parenthesised list read. Real commands nest a few levels (SEARCH, FETCH items,
 * SELECT parameters); the bound keeps a client from taking the parser's stack
 * (10,000 nested parentheses) and matches how deep search keys may nest.
 */
export const MAX_LIST_DEPTH = 100;

/**
 * The tag of a command line (RFC 9051 §9: tag = 1*<any ASTRING-CHAR except "+">, so
 * printable ASCII but specials, wildcards, "+" and, here, "]"), when the line starts with
 * one followed by a space or the line's end; null otherwise, and the error is then
 * answered untagged (`* BAD`), as Dovecot does. 8-bit bytes are no tag: echoed back after
 * decoding they would not be the bytes the client sent.
 */
export function readTag(line: string): string | null {
  const m = /^([^\x00-\x20\x7f-\uffff(){%*"\\\]+]+)(?: |$)/.exec(line);
  return m ? m[1]! : null;
}

/**
 * Where on `line`, from `from`, is the "]" that ends a section, and how deep in its
 * header-list the line ends when it holds none (end -1). A field name is an astring
 * (RFC 9051 §9 header-fld-name) and ASTRING-CHAR takes "]": one inside a quoted name or
 * inside the header-list's parentheses is part of a name, as Dovecot reads it.
 */
function sectionEnd(line: string, from: number, depth: number): { end: number; depth: number } {
  for (let i = from; i < line.length; i++) {
    const ch = line[i];
    if (ch === '"') {
      for (i++; i < line.length && line[i] !== '"'; i++) if (line[i] === '\\') i++;
      if (i >= line.length) throw new ParseError('unterminated quoted string');
    } else if (ch === '(') depth++;
    else if (ch === ')') depth--;
    else if (ch === ']' && depth <= 0) return { end: i, depth };
  }
  return { end: -1, depth };
}

class Tokenizer {
  private li = 0;
  private pos = 0;
  /** Bytes of the command's lines and of the literals read as section text so far. */
  private textBytes: number | undefined;
  constructor(
    private readonly cmd: FramedCommand,
    /** Most text the command may carry, its lines and the literals read as section text. */
    private readonly maxText = Infinity,
  ) {}

  private get line(): string {
    return this.cmd.lines[this.li] ?? '';
  }

  atEnd(): boolean {
    return this.pos >= this.line.length && this.li >= this.cmd.lines.length - 1;
  }

  peek(): string {
    return this.line[this.pos] ?? '';
  }

  space(): void {
    if (this.line[this.pos] !== ' ') throw new ParseError('expected a space');
    this.pos++;
  }

  rest(): string {
    const r = this.line.slice(this.pos);
    this.pos = this.line.length;
    return r;
  }

  atomText(allowBrackets: boolean): string {
    let start = this.pos;
    let line = this.line;
    /** Text of the lines before this one, when a section went on past a literal. */
    let before = '';
    while (this.pos < line.length) {
      const c = line.charCodeAt(this.pos);
      if (c <= 0x1f || c === 0x7f) throw new ParseError('control character in command');
      if (c === 0x5b /* [ */ && allowBrackets && SECTIONED.test(before + line.slice(start, this.pos))) {
        let depth = 0;
        for (;;) {
          const close = sectionEnd(line, this.pos, depth);
          if (close.end >= 0) {
            this.pos = close.end + 1;
            break;
          }
          depth = close.depth;
          // a header field name sent as a literal (RFC 9051 §9: header-fld-name is an
          // astring): the section goes on after it on the next line
          const lit = /\{(\d+)\+?\}$/.exec(line);
          if (!lit || this.li >= this.cmd.lines.length - 1) throw new ParseError('unterminated [');
          before += line.slice(start, lit.index) + this.sectionLiteral(this.cmd.literals[this.li]!);
          this.li++;
          this.pos = start = 0;
          line = this.line;
        }
        continue;
      }
      if (ATOM_SPECIALS.has(c)) break;
      this.pos++;
    }
    if (this.pos === start && !before) throw new ParseError('expected an atom');
    return before + line.slice(start, this.pos);
  }

  /**
   * A literal inside a section, as the quoted string that says the same, so that the
   * section is read (and named back) as if the client had quoted it. Its bytes count as
   * command text: a name sent as a literal may be no longer than a quoted one.
   */
  private sectionLiteral(data: Buffer): string {
    this.textBytes ??= this.cmd.lines.reduce((n, l) => n + Buffer.byteLength(l), 0);
    this.textBytes += data.length;
    if (this.textBytes > this.maxText) throw new ParseError('section too long');
    const text = data.toString('utf8');
    if (/[\x00\r\n]/.test(text)) throw new ParseError('bad header field name');
    return '"' + text.replace(/["\\]/g, '\\$&') + '"';
  }

  token(depth = 0): Token {
    const c = this.peek();
    if (c === '(') {
      if (depth >= MAX_LIST_DEPTH) throw new ParseError('lists nested too deeply');
      this.pos++;
      const items: Token[] = [];
      for (;;) {
        if (this.peek() === ')') {
          this.pos++;
          return { t: 'list', v: items };
        }
        if (items.length) this.space();
        if (this.pos >= this.line.length) throw new ParseError('unterminated list');
        items.push(this.token(depth + 1));
      }
    }
    if (c === '"') return this.quoted();
    if (c === '{' || (c === '~' && this.line[this.pos + 1] === '{')) return this.literal();
    if (c === '\\') {
      // flag = "\" atom (and "\*" in PERMANENTFLAGS-style lists)
      this.pos++;
      if (this.peek() === '*') {
        this.pos++;
        return { t: 'atom', v: '\\*' };
      }
      return { t: 'atom', v: '\\' + this.atomText(false) };
    }
    const a = this.atomText(true);
    if (a.toUpperCase() === 'NIL') return { t: 'nil', v: a };
    return { t: 'atom', v: a };
  }

  private quoted(): Token {
    this.pos++;
    let out = '';
    const line = this.line;
    for (;;) {
      if (this.pos >= line.length) throw new ParseError('unterminated quoted string');
      const ch = line[this.pos++]!;
      if (ch === '"') break;
      if (ch === '\\') {
        const n = line[this.pos++];
        if (n !== '\\' && n !== '"') throw new ParseError('bad escape in quoted string');
        out += n;
      } else {
        out += ch;
      }
    }
    return { t: 'string', v: Buffer.from(out, 'utf8'), literal: false };
  }

  private literal(): Token {
    const rest = this.line.slice(this.pos);
    if (!/^~?\{\d+\+?\}$/.test(rest)) throw new ParseError('literal must end the line');
    if (this.li >= this.cmd.lines.length - 1) throw new ParseError('missing literal data');
    const data = this.cmd.literals[this.li]!;
    this.li++;
    this.pos = 0;
    return { t: 'string', v: data, literal: true, ...(rest.startsWith('~') ? { binary: true } : {}) };
  }
}

/**
 * A string's bytes where the grammar has a string: a literal8 is no string (RFC 3516 §4.4,
 * RFC 9051 §9: literal8 only in append-data and CATENATE's TEXT).
 */
export function textString(t: Token & { t: 'string' }): Buffer {
  if (t.binary) throw new ParseError('a literal8 is only for APPEND data');
  return t.v;
}

/**
 * Tag, command name and the raw tokens of the arguments. `maxText` bounds the command's
 * text where literals are read as part of it (a header field name in a section).
 */
export function parseCommand(cmd: FramedCommand, maxText = Infinity): ParsedCommand {
  return tokenize(cmd, false, maxText);
}

/**
 * Tag, name and the arguments complete so far of a command whose last line announces a
 * synchronising literal not yet sent: what a server may check before it asks for the
 * bytes (RFC 9051 §7.5). The arguments stop at the first one not complete (the literal,
 * a list it is in) or not well-formed; null when the tag or the name cannot be read.
 */
export function parseCommandHead(cmd: FramedCommand): ParsedCommand | null {
  try {
    return tokenize(cmd, true);
  } catch (err) {
    if (err instanceof ParseError) return null;
    throw err;
  }
}

function tokenize(cmd: FramedCommand, head: boolean, maxText = Infinity): ParsedCommand {
  const first = cmd.lines[0] ?? '';
  const tag = readTag(first);
  if (tag === null) throw new ParseError(first.trim() ? 'missing or bad tag' : 'empty command');
  const tk = new Tokenizer(cmd, maxText);
  try {
    tk.atomText(false); // tag
    if (tk.atEnd()) throw new ParseError('missing command name');
    tk.space();
    let name = tk.atomText(false).toUpperCase();
    if (name === 'UID') {
      tk.space();
      name = 'UID ' + tk.atomText(false).toUpperCase();
    }
    const args: Token[] = [];
    try {
      while (!tk.atEnd()) {
        tk.space();
        args.push(tk.token());
      }
    } catch (err) {
      if (!head || !(err instanceof ParseError)) throw err;
    }
    return { tag, name, args };
  } catch (err) {
    if (err instanceof ParseError) throw new ParseError(err.message, tag);
    throw err;
  }
}

/** Reads one command's arguments by shape; any mismatch is a ParseError. */
export class ArgReader {
  private i = 0;
  constructor(
    private readonly args: Token[],
    readonly utf8Names = false,
  ) {}

  get remaining(): number {
    return this.args.length - this.i;
  }

  peek(): Token | undefined {
    return this.args[this.i];
  }

  next(what = 'argument'): Token {
    const t = this.args[this.i++];
    if (!t) throw new ParseError(`missing ${what}`);
    return t;
  }

  end(): void {
    if (this.i < this.args.length) throw new ParseError('too many arguments');
  }

  atom(what = 'atom'): string {
    const t = this.next(what);
    if (t.t !== 'atom') throw new ParseError(`expected ${what}`);
    return t.v;
  }

  /** An atom where nil has no place, so NIL is the atom it is (a keyword, RFC 9051 §9). */
  atomOrNil(what = 'atom'): string {
    const t = this.next(what);
    if (t.t !== 'atom' && t.t !== 'nil') throw new ParseError(`expected ${what}`);
    return t.v;
  }

  /** astring: atom or string; NIL is an atom too (RFC 9051 §9), the string as spelled. */
  astring(what = 'string'): string {
    const t = this.next(what);
    if (t.t === 'atom') return t.v;
    if (t.t === 'nil') return t.v;
    if (t.t === 'string') return textString(t).toString('utf8');
    throw new ParseError(`expected ${what}`);
  }

  bytes(what = 'string'): Buffer {
    const t = this.next(what);
    if (t.t === 'string') return textString(t);
    if (t.t === 'atom') return Buffer.from(t.v);
    throw new ParseError(`expected ${what}`);
  }

  /** A mailbox name: INBOX is case-insensitive; modified UTF-7 unless UTF8=ACCEPT. */
  mailbox(): string {
    return this.mailboxAsWritten().name;
  }

  /**
   * A mailbox name, and the client's own spelling of it (`inbox`, `"InBox"`), for an answer
   * that names the mailbox as the command did (STATUS, as Dovecot answers it).
   */
  mailboxAsWritten(): { name: string; written: string } {
    const written = this.astring('mailbox name');
    return { name: normaliseMailbox(written, this.utf8Names), written };
  }

  /** A number64 (RFC 9051 §9: 0 to 2^63-1), the widest number a command takes. */
  number(what = 'number'): number {
    const a = this.atom(what);
    if (!/^\d{1,19}$/.test(a) || BigInt(a) > NUMBER64_MAX) throw new ParseError(`expected ${what}`);
    return Number(a);
  }

  seqSet(): SequenceSet {
    const a = this.atom('sequence set');
    try {
      return parseSequenceSet(a);
    } catch (err) {
      throw new ParseError((err as Error).message);
    }
  }

  list(what = 'list'): Token[] {
    const t = this.next(what);
    if (t.t !== 'list') throw new ParseError(`expected ${what}`);
    return t.v;
  }

  optionalList(): Token[] | null {
    const t = this.peek();
    if (t?.t !== 'list') return null;
    this.i++;
    return t.v;
  }
}

export function normaliseMailbox(raw: string, utf8: boolean): string {
  let name: string;
  if (utf8) name = raw;
  else {
    try {
      name = decodeMutf7(raw);
    } catch (err) {
      throw new MailboxNameError((err as Error).message);
    }
  }
  if (/^inbox$/i.test(name)) return 'INBOX';
  if (/^inbox\//i.test(name)) return 'INBOX' + name.slice(5);
  return name;
}

export function tokenText(t: Token): string {
  switch (t.t) {
    case 'atom':
      return t.v;
    case 'string':
      return textString(t).toString('utf8');
    case 'nil':
      return t.v;
    case 'list':
      return '(' + t.v.map(tokenText).join(' ') + ')';
  }
}
