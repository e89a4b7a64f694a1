// A bounded fuzz run of the POP3 front end: commands with mutated arguments, long lines
// and random bytes over real sessions to the real service on port 0. Whatever comes in,
// the service stays up, its heap stays bounded, and every reply is +OK/-ERR (multi-line
// where RFC 1939 says so, dot-stuffed and ended with "."). FUZZ_RUNS and FUZZ_SEED
// widen the search locally.
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { folderDir } from '@mailyard/mailstore';
import { fuzzOptions, fuzzSession, HeapWatch, LineClient } from '@mailyard/testkit';
import { addAccount, startPlatform, type Platform } from '../../../test/harness.js';
import { PASSWORD, sampleMessage, sendRaw, startRetrieval, type Retrieval } from './helpers.js';

const USER = 'pop-fuzz@example.test';

let p: Platform;
let r: Retrieval;

before(async () => {
  p = await startPlatform();
  await addAccount(p.directory, USER);
  r = await startRetrieval(p, {
    imap_max_bad_commands: 50,
    mail_max_user_connections: 1000,
    mail_max_ip_connections: 1000,
  });
});
after(async () => {
  await r?.stop();
  await p?.close();
});

/** Messages in the INBOX: QUIT after DELE removes some, and the next runs need a few. */
async function refill(): Promise<void> {
  const dir = folderDir(p.maildir, USER, 'INBOX');
  const count = ['new', 'cur'].reduce((n, d) => {
    try {
      return n + readdirSync(join(dir, d)).length;
    } catch {
      return n;
    }
  }, 0);
  for (let i = count; i < 3; i++) await sendRaw(p, USER, sampleMessage(i, '\r\n.leading dot\r\n..two dots'));
}

// --- generators ------------------------------------------------------------------------

const word = fc.stringMatching(/^[A-Za-z0-9.\-_:@+/=]{1,12}$/);
const number = fc.oneof(
  fc.integer({ min: 0, max: 5 }).map(String),
  fc.constantFrom('-1', '1.5', '99999999999999999999', '0x1', '', ' ', '1 2'),
);
const junk = fc.oneof(
  word,
  number,
  fc.string({ maxLength: 30, unit: 'binary' }).filter((s) => !/[\r\n]/.test(s)),
  fc.integer({ min: 900, max: 3000 }).map((n) => 'y'.repeat(n)),
);
const plain = (user: string, pass: string) => Buffer.from(`\0${user}\0${pass}`).toString('base64');

const validCommand = fc.oneof(
  fc.constantFrom('CAPA', 'NOOP', 'STAT', 'RSET', 'LIST', 'UIDL', 'STLS', 'QUIT', 'AUTH'),
  number.map((n) => `LIST ${n}`),
  number.map((n) => `UIDL ${n}`),
  number.map((n) => `RETR ${n}`),
  number.map((n) => `DELE ${n}`),
  fc.tuple(number, number).map(([n, k]) => `TOP ${n} ${k}`),
  fc.oneof(fc.constant(USER), junk).map((u) => `USER ${u}`),
  fc.oneof(fc.constant(PASSWORD), junk).map((pw) => `PASS ${pw}`),
  fc.constantFrom(
    'AUTH PLAIN',
    'AUTH LOGIN',
    `AUTH PLAIN ${plain(USER, 'wrong')}`,
    'AUTH PLAIN =',
    'AUTH PLAIN !!!',
  ),
);
const command = fc.oneof(
  { weight: 6, arbitrary: validCommand },
  { weight: 2, arbitrary: fc.tuple(validCommand, junk).map(([c, j]) => `${c} ${j}`) },
  {
    weight: 1,
    arbitrary: fc.tuple(validCommand, junk).map(([c, j]) => `${c.split(' ')[0]!.toLowerCase()}${j}`),
  },
  { weight: 1, arbitrary: junk },
);

// --- a session that checks every reply -------------------------------------------------

class Violation extends Error {}

const STATUS = /^(\+OK|-ERR)( |$)/;

/**
 * Sends one command line and reads its whole reply. Returns false when the session ended:
 * after QUIT, or after the line that says why.
 */
async function run(c: LineClient, line: string, last: { closing: boolean }): Promise<boolean> {
  c.write(`${line}\r\n`);
  let first = await c.line();
  if (first === null) {
    if (last.closing) return false;
    throw new Violation(`closed without a reply to ${JSON.stringify(line.slice(0, 60))}`);
  }
  if (first === '+' || first.startsWith('+ ')) {
    // an AUTH continuation: cancel it
    if (!/^AUTH( |$)/i.test(line)) throw new Violation(`continuation for ${line}`);
    c.write('*\r\n');
    first = await c.line();
    if (first === null) throw new Violation('closed after a cancelled AUTH');
  }
  if (!STATUS.test(first))
    throw new Violation(`malformed reply ${JSON.stringify(first.slice(0, 100))} to ${line}`);
  if (/Internal error/.test(first)) throw new Violation(`internal error for ${line}: ${first}`);
  const parts = line.split(' ');
  const verb = parts[0]!.toUpperCase();
  const multi =
    first.startsWith('+OK') &&
    (verb === 'CAPA' ||
      ((verb === 'LIST' || verb === 'UIDL') && parts.length === 1) ||
      verb === 'RETR' ||
      verb === 'TOP');
  if (multi) {
    for (;;) {
      const l = await c.line();
      if (l === null) throw new Violation(`closed inside the reply to ${line}`);
      if (l === '.') break;
      if (l.startsWith('.') && !l.startsWith('..')) throw new Violation(`line not dot-stuffed: ${l}`);
    }
  }
  // the session ends after QUIT and after the reply that says it is closing
  last.closing =
    (verb === 'QUIT' && first !== '-ERR Line too long') || /Too many invalid commands|Autologout/.test(first);
  if (!last.closing) return true;
  if (!(await c.waitClosed())) throw new Violation(`still open after ${first}`);
  return false;
}

async function greeted(): Promise<LineClient> {
  const c = await LineClient.connect(r.ports.pop3s, { tls: true });
  assert.match((await c.line()) ?? '', /^\+OK /, 'a fresh connection is greeted');
  return c;
}

void describe('POP3 fuzz', () => {
  const heap = new HeapWatch();
  before(() => heap.start());

  void it(
    'answers every command once, +OK or -ERR, multi-line where it must be',
    { timeout: 300_000 },
    async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.boolean(),
          fc.array(command, { minLength: 1, maxLength: 12 }),
          async (login, lines) => {
            await refill();
            await fuzzSession(greeted, async (c) => {
              const last = { closing: false };
              let open = true;
              if (login) {
                open = await run(c, `USER ${USER}`, last);
                // another run's session may still hold the mailbox for a moment: -ERR [IN-USE] is an answer too
                if (open) open = await run(c, `PASS ${PASSWORD}`, last);
              }
              for (const line of lines) {
                if (!open) break;
                open = await run(c, line, last);
              }
              if (open) await run(c, 'QUIT', last);
              assert.ok(await c.waitClosed(), 'QUIT ends the session');
            });
          },
        ),
        { ...fuzzOptions(800), endOnFailure: true },
      );
    },
  );

  void it('answers random bytes and long lines with status lines only', { timeout: 300_000 }, async () => {
    const blob = fc.oneof(
      fc.uint8Array({ maxLength: 3000 }).map((a) => Buffer.from(a)),
      fc
        .array(
          fc.oneof(
            fc.constantFrom('USER ', 'PASS ', 'AUTH PLAIN', 'CAPA', 'STAT', '\r\n', '\n', ' ', '*'),
            word,
          ),
          {
            maxLength: 60,
          },
        )
        .map((a) => Buffer.from(a.join(''))),
      fc.integer({ min: 1000, max: 100_000 }).map((n) => Buffer.from(`USER ${'z'.repeat(n)}\r\nNOOP\r\n`)),
    );
    // before login only CAPA answers on several lines: capability names
    const line = /^((\+OK|-ERR)( .*)?|\+( .*)?|\.|[A-Z][A-Z0-9-]*( [A-Za-z0-9 ._=-]*)?)$/;
    await fc.assert(
      fc.asyncProperty(blob, (bytes) =>
        fuzzSession(greeted, async (c) => {
          c.write(bytes);
          c.socket.end();
          for (let l = await c.line(); l !== null; l = await c.line())
            if (!line.test(l) || /Internal error/.test(l))
              throw new Violation(`malformed line ${JSON.stringify(l)}`);
        }),
      ),
      { ...fuzzOptions(600), endOnFailure: true },
    );
  });

  void it('keeps its heap bounded', () => heap.assertBounded());
});
