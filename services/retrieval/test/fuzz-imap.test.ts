// A bounded fuzz run of the IMAP front end: commands with mutated arguments, literals of
// every size, deep nesting, long lines and random bytes, sent over real sessions to the
// real service on port 0. Whatever comes in, the service stays up, its heap stays bounded,
// every reply line is well-formed and every command gets exactly one tagged completion
// (or the session ends with * BYE). FUZZ_RUNS and FUZZ_SEED widen the search locally.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { fuzzOptions, fuzzSession, HeapWatch, LineClient } from '@mailyard/testkit';
import { addAccount, startPlatform, type Platform } from '../../../test/harness.js';
import { PASSWORD, sampleMessage, sendRaw, startRetrieval, type Retrieval } from './helpers.js';

const USER = 'fuzz@example.test';
const LITERAL_LIMIT = 4096;
const MAX_LINE = 30_000;

let p: Platform;
let r: Retrieval;

before(async () => {
  p = await startPlatform();
  await addAccount(p.directory, USER);
  r = await startRetrieval(p, {
    message_size_limit: LITERAL_LIMIT,
    imap_max_line_length: MAX_LINE,
    imap_max_bad_commands: 50,
    mail_max_user_connections: 1000,
    mail_max_ip_connections: 1000,
  });
  for (let i = 1; i <= 3; i++) await sendRaw(p, USER, sampleMessage(i));
});
after(async () => {
  await r?.stop();
  await p?.close();
});

// --- generators ------------------------------------------------------------------------

/** An argument: wire text, or a literal ({n} or {n+} ending the line, then n bytes). */
type Arg = string | { data: Buffer; sync: boolean; announce?: number };

const atom = fc.stringMatching(/^[A-Za-z0-9.\-_:,*\\]{1,12}$/);
const quoted = fc
  .string({ maxLength: 40, unit: 'binary' })
  .filter((s) => !/[\r\n]/.test(s))
  .map((s) => `"${s.replace(/[\\"]/g, (c) => (Math.random() < 0.9 ? '\\' + c : c))}"`);
const number = fc.oneof(
  fc.nat({ max: 10 }).map(String),
  fc.constantFrom('0', '4294967295', '4294967296', '99999999999999999999999', '-1', '1e3'),
);
const nesting = fc.integer({ min: 1, max: 12_000 }).map((d) => '('.repeat(d) + ')'.repeat(d));
const literal: fc.Arbitrary<Arg> = fc.oneof(
  fc.record({ data: fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a)), sync: fc.boolean() }),
  // announced above the limit: refused before a byte of it is read (and not sent)
  fc.record({
    data: fc.constant(Buffer.alloc(0)),
    sync: fc.boolean(),
    announce: fc.constantFrom(LITERAL_LIMIT + 1, 99_999_999_999),
  }),
);
const token: fc.Arbitrary<Arg> = fc.oneof(
  { weight: 4, arbitrary: atom },
  { weight: 3, arbitrary: quoted },
  { weight: 2, arbitrary: number },
  {
    weight: 1,
    arbitrary: fc.constantFrom('NIL', '()', '(())', '[', ']', '{', '}', '"', '\\', '~{3}', '{-1}', '{}'),
  },
  { weight: 1, arbitrary: nesting },
  { weight: 1, arbitrary: literal },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 3000 }).map((n) => 'y'.repeat(n)) },
);
const list = fc.array(fc.oneof(atom, quoted, number), { maxLength: 5 }).map((a) => `(${a.join(' ')})`);

const mailbox: fc.Arbitrary<Arg> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.constantFrom('INBOX', 'inbox', 'Sent', 'Junk', 'Trash', 'fz', 'fz/sub', '"fz/sub"', '""'),
  },
  {
    weight: 2,
    arbitrary: fc.constantFrom('"&Jjo"', '"&Jjo-"', '"&-"', 'x%', '"a*b"', '"/"', '"a//b"', '"../x"'),
  },
  { weight: 1, arbitrary: fc.integer({ min: 200, max: 400 }).map((n) => 'n'.repeat(n)) },
  { weight: 1, arbitrary: fc.integer({ min: 15, max: 40 }).map((n) => Array(n).fill('d').join('/')) },
  { weight: 2, arbitrary: token },
);
const seqSet = fc.oneof(
  fc.constantFrom('1', '1:*', '*', '2,3', '1:3,2', '3:1', '$'),
  fc.constantFrom('0', '0:*', '1:', ':', '4294967296', 'x', '1,,2', '*:*'),
  token,
);
const fetchItems = fc.oneof(
  fc.constantFrom(
    'FLAGS',
    'ALL',
    'FAST',
    'FULL',
    '(UID FLAGS RFC822.SIZE)',
    '(ENVELOPE BODYSTRUCTURE INTERNALDATE)',
    'BODY[]',
    'BODY.PEEK[HEADER]',
    'BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)]',
    'BODY[HEADER.FIELDS.NOT (DATE)]',
    'BODY[TEXT]<0.10>',
    'BODY[1]',
    'BODY[1.MIME]',
    'BODY[2.3.4]<5>',
    'BINARY[1]',
    'BINARY.SIZE[1]',
    'BINARY.PEEK[1]<0.3>',
    'RFC822',
    'RFC822.HEADER',
    'MODSEQ',
  ),
  fc.constantFrom(
    'BODY[HEADER.FIELDS ()]',
    'BODY[0]',
    'BODY[1.0]',
    'BINARY[TEXT]',
    'BODY[',
    '(ALL)',
    '()',
    'BODY[]<1.2.3>',
  ),
  list,
  token,
);
const searchKeys = fc.oneof(
  fc.constantFrom(
    'ALL',
    'UNSEEN',
    'OR SEEN DELETED',
    'NOT NOT NOT ALL',
    'SUBJECT "message"',
    'FROM sender',
    'SINCE 1-Jan-2020',
    'SENTBEFORE 1-Feb-2030',
    'LARGER 10',
    'HEADER Message-ID m1',
    'UID 1:*',
    '1:2',
    'MODSEQ 1',
    'CHARSET UTF-8 TEXT x',
    'CHARSET KOI8-R ALL',
    'CHARSET X-NO-SUCH ALL',
    '(OR (SEEN) (UNSEEN))',
    'RETURN (MIN MAX COUNT) ALL',
  ),
  fc.constantFrom(
    'BEFORE 99-Foo-1',
    'LARGER 99999999999999999999',
    'OR ALL',
    'NOT',
    'HEADER',
    'KEYWORD',
    '()',
    'RETURN ()',
  ),
  fc.integer({ min: 90, max: 400 }).map((n) => 'NOT '.repeat(n) + 'ALL'),
  fc.integer({ min: 1, max: 200 }).map((n) => 'OR ALL '.repeat(n) + 'ALL'),
  token,
);
const flags = fc.oneof(
  fc.constantFrom(
    '(\\Seen)',
    '(\\Deleted \\Flagged)',
    '($Label1 foo)',
    '\\Answered',
    '()',
    '(\\Recent)',
    '(\\Bogus)',
    '(a b c d e f g h i j k l m n o p q r s t u v w x y z aa)',
  ),
  token,
);
const date = fc.constantFrom(
  '"17-Jul-1996 02:44:25 -0700"',
  '"1-Jan-2000 00:00:00 +0000"',
  '"99-Foo-1 x"',
  '""',
);
const message = fc
  .tuple(fc.string({ maxLength: 30, unit: 'binary-ascii' }), fc.boolean())
  .map(([body, sync]) => ({ data: Buffer.from(`Subject: fuzz\r\n\r\n${body}\r\n`, 'latin1'), sync }));

interface Command {
  name: string;
  args: Arg[];
}

const cmd = (name: string, ...args: fc.Arbitrary<Arg>[]): fc.Arbitrary<Command> =>
  fc.tuple(...args).map((a) => ({ name, args: a }));
const opt = (a: fc.Arbitrary<Arg>): fc.Arbitrary<Arg> => fc.oneof(a, fc.constant(''));

/** Valid commands of every state, arguments drawn from valid and hostile values. */
const validCommand: fc.Arbitrary<Command> = fc.oneof(
  cmd('NOOP'),
  cmd('CAPABILITY'),
  cmd('ID', fc.oneof(fc.constant('NIL'), fc.constant('("name" "fuzz")'), list)),
  cmd('ENABLE', fc.constantFrom('CONDSTORE', 'QRESYNC', 'UTF8=ACCEPT', 'IMAP4rev2', 'BOGUS')),
  cmd('NAMESPACE'),
  cmd(
    'SELECT',
    mailbox,
    opt(fc.constantFrom('(CONDSTORE)', '(QRESYNC (1 1))', '(QRESYNC (1 1 1:5))', '(BOGUS)')),
  ),
  cmd('EXAMINE', mailbox),
  cmd('CREATE', mailbox),
  cmd('DELETE', mailbox),
  cmd('RENAME', mailbox, mailbox),
  cmd('SUBSCRIBE', mailbox),
  cmd('UNSUBSCRIBE', mailbox),
  cmd(
    'LIST',
    opt(fc.constantFrom('(SUBSCRIBED)', '(SPECIAL-USE)', '(BOGUS)')),
    fc.oneof(fc.constantFrom('""', '"fz"'), token),
    fc.oneof(fc.constantFrom('*', '%', '"fz/*"', '("INBOX" "Sent")', '""'), mailbox),
    opt(
      fc.constantFrom('RETURN (CHILDREN)', 'RETURN (STATUS (MESSAGES UNSEEN))', 'RETURN (STATUS)', 'RETURN'),
    ),
  ),
  cmd('LSUB', fc.constant('""'), fc.constantFrom('*', '%')),
  cmd(
    'STATUS',
    mailbox,
    fc.oneof(fc.constantFrom('(MESSAGES UIDNEXT UNSEEN SIZE HIGHESTMODSEQ)', '()', '(BOGUS)'), list),
  ),
  cmd('APPEND', mailbox, opt(flags), opt(date), fc.oneof(message, literal)),
  cmd('IDLE'),
  cmd('GETQUOTAROOT', mailbox),
  cmd('GETQUOTA', fc.oneof(fc.constant('""'), token)),
  cmd('SETQUOTA', fc.constant('"" (STORAGE 1)')),
  cmd('CHECK'),
  cmd('CLOSE'),
  cmd('UNSELECT'),
  cmd('EXPUNGE'),
  cmd('UID EXPUNGE', seqSet),
  cmd(
    'FETCH',
    seqSet,
    fetchItems,
    opt(fc.constantFrom('(CHANGEDSINCE 1)', '(CHANGEDSINCE 1 VANISHED)', '(BOGUS)')),
  ),
  cmd('UID FETCH', seqSet, fetchItems),
  cmd('STORE', seqSet, fc.constantFrom('+FLAGS', '-FLAGS.SILENT', 'FLAGS', 'X-FLAGS'), flags),
  cmd('UID STORE', seqSet, fc.constantFrom('(UNCHANGEDSINCE 1) +FLAGS', 'FLAGS.SILENT'), flags),
  cmd('SEARCH', searchKeys),
  cmd('UID SEARCH', searchKeys),
  cmd(
    'SORT',
    fc.constantFrom('(SUBJECT)', '(REVERSE DATE)', '(ARRIVAL CC)', '()', '(BOGUS)'),
    fc.constantFrom('UTF-8', 'KOI8-R', 'X-NO-SUCH'),
    searchKeys,
  ),
  cmd(
    'THREAD',
    fc.constantFrom('REFERENCES', 'ORDEREDSUBJECT', 'BOGUS'),
    fc.constantFrom('UTF-8', 'US-ASCII'),
    searchKeys,
  ),
  cmd('COPY', seqSet, mailbox),
  cmd('UID MOVE', seqSet, mailbox),
  cmd(
    'AUTHENTICATE',
    fc.constantFrom('PLAIN', 'LOGIN'),
    opt(fc.constantFrom('=', 'AGZvbwBiYXI=', '!!!', 'AAAA')),
  ),
  cmd('LOGIN', fc.oneof(fc.constant(USER), token), fc.oneof(fc.constant(`"${PASSWORD}"`), token)),
);

/** A valid command with an argument changed, dropped or added; or a made-up one. */
const command: fc.Arbitrary<Command> = fc.oneof(
  { weight: 6, arbitrary: validCommand },
  {
    weight: 3,
    arbitrary: fc
      .tuple(validCommand, fc.nat(), token, fc.constantFrom('replace', 'drop', 'add'))
      .map(([c, i, t, how]) => {
        const args = [...c.args];
        const at = args.length ? i % args.length : 0;
        if (how === 'replace' && args.length) args[at] = t;
        else if (how === 'drop') args.splice(at, 1);
        else args.splice(at, 0, t);
        return { name: c.name, args };
      }),
  },
  {
    weight: 1,
    arbitrary: fc
      .tuple(fc.oneof(atom, fc.constantFrom('UID', 'UID BOGUS', '')), fc.array(token, { maxLength: 4 }))
      .map(([name, args]) => ({ name, args })),
  },
);

// --- a session that checks every reply -------------------------------------------------

class Violation extends Error {}

/** Reads one response, its literals included; validates it against what was sent. */
async function response(c: LineClient, sentTags: Set<string>): Promise<string | null> {
  let text = await c.line();
  if (text === null) return null;
  const first = text;
  // an untagged response line ending in a literal continues after the literal's bytes
  for (let m = first.startsWith('* ') && /\{(\d+)\}$/.exec(text); m; m = /\{(\d+)\}$/.exec(text)) {
    await c.bytes(Number(m[1]));
    const more = await c.line();
    if (more === null) throw new Violation(`connection closed inside a response: ${first}`);
    text = more;
  }
  if (first.startsWith('* ') || first === '+' || first.startsWith('+ ')) return first;
  const tag = first.split(' ')[0]!;
  if (!sentTags.has(tag) || !/^\S+ (OK|NO|BAD) /.test(first))
    throw new Violation(`malformed response line: ${JSON.stringify(first.slice(0, 200))}`);
  // resp-text is 7-bit text (RFC 9051 section 9), and one ending in "{5}" reads as a literal
  if (!/^[\x20-\x7e]*$/.test(first) || /\{\d+\+?\}$/.test(first))
    throw new Violation(`completion a client cannot read: ${JSON.stringify(first.slice(0, 200))}`);
  // bad input gets BAD or NO for what it is: an internal error is a bug the input found
  if (/^\S+ NO \[SERVERBUG\]/.test(first)) throw new Violation(`internal error: ${first}`);
  return first;
}

let tagNo = 0;

/**
 * Sends one command and reads until its tagged completion. Returns false when the
 * session ended (which must have been announced with * BYE).
 */
async function run(c: LineClient, command: Command, sentTags: Set<string>): Promise<boolean> {
  const tag = `F${++tagNo}`;
  sentTags.add(tag);
  // the command's lines: text up to each literal, the literal, then the rest
  const parts: { text: string; lit?: Exclude<Arg, string> }[] = [];
  let text = `${tag} ${command.name}`;
  for (const a of command.args) {
    if (typeof a === 'string') {
      if (a !== '') text += ` ${a}`;
      continue;
    }
    parts.push({ text: `${text} {${a.announce ?? a.data.length}${a.sync ? '' : '+'}}`, lit: a });
    text = '';
  }
  parts.push({ text });
  let bye = false;
  let done = false;
  const completion = new RegExp(`^${tag} (OK|NO|BAD) `);
  const read = async (): Promise<'continue' | 'done' | 'closed'> => {
    const line = await response(c, sentTags).catch((err: unknown) => {
      const args = command.args.map((a) => (typeof a === 'string' ? a : `{${a.data.length}}`)).join(' ');
      throw new Violation(`${(err as Error).message}, for ${tag} ${command.name} ${args.slice(0, 300)}`);
    });
    if (line === null) return 'closed';
    if (line.startsWith('* BYE')) bye = true;
    if (line === '+' || line.startsWith('+ ')) return 'continue';
    if (line.startsWith('* ')) return read();
    if (!completion.test(line))
      throw new Violation(`completion of another command while ${tag} ran: ${line}`);
    if (done) throw new Violation(`second completion for ${tag}: ${line}`);
    done = true;
    return 'done';
  };
  const ended = () => {
    if (!bye) throw new Violation(`session closed without * BYE during ${tag} ${command.name}`);
    return false;
  };
  for (const part of parts) {
    c.write(`${part.text}\r\n`);
    // a line over the limit is refused whole (BAD): nothing after it belongs to the command
    if (Buffer.byteLength(part.text) > MAX_LINE) break;
    // a token that happens to end the line as "{3}" or "~{3+}" announces a literal too
    const m = part.lit ? null : /~?\{(\d{1,12})(\+?)\}$/.exec(part.text);
    const n = m ? Number(m[1]) : 0;
    const lit: Exclude<Arg, string> | null =
      part.lit ??
      (!m
        ? null
        : n > LITERAL_LIMIT
          ? { data: Buffer.alloc(0), sync: !m[2], announce: n }
          : { data: Buffer.alloc(n, 'x'), sync: !m[2] });
    if (!lit) break;
    const refused = lit.announce !== undefined;
    if (lit.sync) {
      // a synchronising literal: go on after "+", or stop at the refusal
      const r1 = await read();
      if (r1 === 'closed') return ended();
      if (r1 === 'done') return true;
      c.write(lit.data);
    } else if (refused) {
      // a non-synchronising literal above the limit cannot be skipped: the session ends
      const r1 = await read();
      if (r1 === 'closed') return ended();
      if (r1 === 'done') return true;
      throw new Violation(`continuation for a refused literal in ${tag}`);
    } else c.write(lit.data);
    // the line goes on after the literal (an empty rest ends the command)
    if (!part.lit) c.write('\r\n');
  }
  for (;;) {
    const r1 = await read();
    if (r1 === 'closed') return ended();
    if (r1 === 'done') return true;
    // IDLE and AUTHENTICATE wait for a line of their own
    c.write(command.name.toUpperCase() === 'AUTHENTICATE' ? '*\r\n' : 'DONE\r\n');
  }
}

/**
 * Sends commands of one line each (no literal, nothing that waits for a line of its own)
 * in one write, as a pipelining client does, and reads until each has its one completion.
 */
async function runGroup(c: LineClient, commands: Command[], sentTags: Set<string>): Promise<boolean> {
  const lines = new Map<string, string>();
  for (const { name, args } of commands) {
    if (args.some((a) => typeof a !== 'string')) continue;
    const line = [name, ...(args as string[])].filter((a) => a !== '').join(' ');
    if (/\{\d+\+?\}$/.test(line)) continue;
    if (/^(IDLE|AUTHENTICATE)( |$)/i.test(name) || Buffer.byteLength(line) > MAX_LINE - 20) continue;
    lines.set(`F${++tagNo}`, line);
  }
  if (!lines.size) return true;
  for (const tag of lines.keys()) sentTags.add(tag);
  c.write([...lines].map(([tag, line]) => `${tag} ${line}\r\n`).join(''));
  const open = new Set(lines.keys());
  let bye = false;
  while (open.size) {
    const line = await response(c, sentTags);
    if (line === null) {
      if (!bye) throw new Violation(`session closed without * BYE with ${[...open].join(' ')} open`);
      return false;
    }
    if (line.startsWith('* BYE')) bye = true;
    if (line.startsWith('* ')) continue;
    const tag = line.split(' ')[0]!;
    if (!open.delete(tag))
      throw new Violation(`completion for ${tag}, not one of the group's open commands: ${line}`);
  }
  return true;
}

async function greeted(): Promise<LineClient> {
  const c = await LineClient.connect(r.ports.imap);
  const g = await c.line();
  assert.match(g ?? '', /^\* OK /, 'a fresh connection is greeted');
  return c;
}

const start = fc.constantFrom('not-authenticated', 'authenticated', 'selected');

void describe('IMAP fuzz', () => {
  const heap = new HeapWatch();
  before(() => heap.start());

  void it(
    'answers every command exactly once, well-formed, whatever its arguments, one by one or pipelined',
    { timeout: 300_000 },
    async () => {
      await fc.assert(
        fc.asyncProperty(
          start,
          fc.array(
            fc.oneof(
              { weight: 4, arbitrary: command },
              { weight: 1, arbitrary: fc.array(command, { minLength: 2, maxLength: 8 }) },
            ),
            { minLength: 1, maxLength: 12 },
          ),
          (state, steps) =>
            fuzzSession(greeted, async (c) => {
              const tags = new Set<string>();
              let open = true;
              if (state !== 'not-authenticated')
                open = await run(c, { name: 'LOGIN', args: [USER, `"${PASSWORD}"`] }, tags);
              if (open && state === 'selected')
                open = await run(c, { name: 'SELECT', args: ['INBOX'] }, tags);
              for (const step of steps) {
                if (!open) break;
                open = Array.isArray(step) ? await runGroup(c, step, tags) : await run(c, step, tags);
              }
              if (open) {
                c.write('Z LOGOUT\r\n');
                tags.add('Z');
                for (let line = await response(c, tags); line !== null; line = await response(c, tags));
              }
            }),
        ),
        { ...fuzzOptions(1200), endOnFailure: true },
      );
    },
  );

  void it(
    'answers random bytes, long lines and broken literals with well-formed lines only',
    { timeout: 300_000 },
    async () => {
      const blob = fc.oneof(
        fc.uint8Array({ maxLength: 3000 }).map((a) => Buffer.from(a)),
        fc
          .array(
            fc.oneof(
              fc.constantFrom(
                'a1 ',
                'x LOGIN ',
                'b SELECT ',
                '\r\n',
                '{5}\r\n',
                '{99999999999}\r\n',
                '{3+}\r\n',
                '(',
                ')',
                '"',
                '\\',
                ' ',
              ),
              atom,
            ),
            { maxLength: 60 },
          )
          .map((a) => Buffer.from(a.join(''))),
        fc
          .integer({ min: MAX_LINE - 10, max: MAX_LINE * 3 })
          .map((n) => Buffer.from(`L1 NOOP ${'z'.repeat(n)}\r\nL2 NOOP\r\n`)),
        fc.integer({ min: 1, max: 50_000 }).map((n) => Buffer.from(`D1 FETCH 1 ${'('.repeat(n)}\r\n`)),
      );
      await fc.assert(
        fc.asyncProperty(fc.boolean(), blob, (login, bytes) =>
          fuzzSession(greeted, async (c) => {
            const tags = new Set<string>();
            if (login) assert.ok(await run(c, { name: 'LOGIN', args: [USER, `"${PASSWORD}"`] }, tags));
            for (const line of bytes.toString('latin1').split('\n'))
              tags.add(line.replace(/\r$/, '').split(' ')[0]!);
            c.write(bytes);
            c.socket.end();
            // everything the server says until it closes is a well-formed response
            for (let line = await response(c, tags); line !== null; line = await response(c, tags));
          }),
        ),
        { ...fuzzOptions(1000), endOnFailure: true },
      );
    },
  );

  void it('keeps its heap bounded', () => heap.assertBounded());
});
