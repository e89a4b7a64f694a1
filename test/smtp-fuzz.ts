// A bounded fuzz run of an SMTP front end (mta-inbound on 25, msa on 465), shared by both
// services' tests: commands with mutated arguments, pipelined groups, message contents
// with dots and bare line ends, and random bytes over real sessions. Whatever comes in,
// the service stays up, its heap stays bounded, and every reply is `ddd[ -]` lines of one
// valid code, error replies with their RFC 3463 enhanced status.
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import fc from 'fast-check';
import { fuzzOptions, fuzzSession, HeapWatch, LineClient } from '@mailyard/testkit';

export interface SmtpFuzzTarget {
  name: string;
  port: () => number;
  tls?: boolean;
  /** A login (AUTH PLAIN) some runs start with. */
  login?: { user: string; password: string };
  /** Addresses that exist: recipients and (for submission) the login's own sender. */
  local: string[];
  /** The service's message_size_limit: generated messages reach a little over it. */
  messageSizeLimit: number;
  /** Runs of each property in CI (FUZZ_RUNS overrides). */
  runs: { commands: number; bytes: number };
}

class Violation extends Error {}

// --- generators ------------------------------------------------------------------------

const word = fc.stringMatching(/^[A-Za-z0-9.\-_]{1,16}$/);
const junk = fc.oneof(
  word,
  fc.string({ maxLength: 40, unit: 'binary' }).filter((s) => !/[\r\n]/.test(s)),
  fc.constantFrom('', ' ', ':', '<>', '<', '>', '<<x>>', '\t', '\0'),
  fc.integer({ min: 100, max: 3000 }).map((n) => 'q'.repeat(n)),
);

function generators(t: SmtpFuzzTarget) {
  const address = fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom(...t.local, 'someone@remote.test', 'postmaster', '') },
    {
      weight: 2,
      arbitrary: fc.constantFrom(
        'user%other.test@example.test',
        '"user@other.test"@example.test',
        '@a.test,@b.test:user@example.test',
        '@a.test:',
        'other.test!user@example.test',
        'user@other.test@example.test',
        'a@[127.0.0.1]',
        'a@[IPv6:::1]',
        'a@[999.1.1.1]',
        '.a@example.test',
        'a..b@example.test',
        '"quoted local"@example.test',
        'ü@exämple.test',
        'a@xn--bcher-kva.test',
        'a@-bad-.test',
      ),
    },
    { weight: 1, arbitrary: fc.tuple(word, word).map(([l, d]) => `${l}@${d}`) },
    { weight: 1, arbitrary: junk },
  );
  const mailParams = fc.constantFrom(
    '',
    ' SIZE=100',
    ' SIZE=999999999999',
    ' SIZE=x',
    ' SIZE',
    ' BODY=8BITMIME',
    ' BODY=BINARYMIME',
    ' BODY=JUNK',
    ' SMTPUTF8',
    ' RET=FULL ENVID=a+2Bb',
    ' ENVID=a+0D+0Ab',
    ' AUTH=<>',
    ' SIZE=1 SIZE=2',
    ' X=Y',
    ' =',
  );
  const rcptParams = fc.constantFrom(
    '',
    ' NOTIFY=NEVER',
    ' NOTIFY=SUCCESS,NEVER',
    ' ORCPT=rfc822;a@b.test',
    ' ORCPT=x',
    ' FOO',
  );
  const content = fc
    .array(
      fc.oneof(
        fc.constantFrom(
          'Subject: fuzz',
          'From: <x@remote.test>',
          '',
          '.',
          '..',
          '.x',
          'a\nb',
          'a\rb',
          '\n.\n',
          'From x',
          ' folded',
        ),
        fc.string({ maxLength: 60, unit: 'binary-ascii' }),
        fc.integer({ min: 990, max: 5000 }).map((n) => 'L'.repeat(n)),
      ),
      { maxLength: 20 },
    )
    .map((lines) => lines.map((l) => (l.startsWith('.') ? '.' + l : l)).join('\r\n'));
  // messages up to a little over the size limit, in lines of the longest length allowed
  const line = 'B'.repeat(998) + '\r\n';
  const big = fc
    .integer({ min: 1, max: Math.ceil(t.messageSizeLimit / 1000) + 10 })
    .map((n) => line.repeat(n));
  const command = fc.oneof(
    fc.oneof(word, junk).map((d) => `EHLO ${d}`),
    fc.oneof(word, junk).map((d) => `HELO ${d}`),
    fc.tuple(address, mailParams).map(([a, x]) => `MAIL FROM:<${a}>${x}`),
    fc.tuple(address, rcptParams).map(([a, x]) => `RCPT TO:<${a}>${x}`),
    fc.constantFrom(
      'DATA',
      'RSET',
      'NOOP',
      'QUIT',
      'HELP',
      'VRFY postmaster',
      'EXPN list',
      'ETRN x',
      'BDAT 10 LAST',
      'TURN',
    ),
    fc.constantFrom(
      'AUTH PLAIN',
      'AUTH LOGIN',
      'AUTH PLAIN AGFiYwBkZWY=',
      'AUTH CRAM-MD5',
      'AUTH PLAIN =',
      'AUTH X',
    ),
    fc.constantFrom(
      'MAIL FROM:',
      'MAIL FROM: <a@b.test>',
      'MAIL TO:<a@b.test>',
      'RCPT TO:',
      'RCPT FROM:<a@b.test>',
      'mail from:<A@B.TEST>',
    ),
    fc.constantFrom(
      'XCLIENT ADDR=1.2.3.4',
      'PROXY TCP4 1.2.3.4 5.6.7.8 1 2',
      'GET / HTTP/1.0',
      'WIZ x',
      'DEBUG',
      'KILL',
    ),
    fc.tuple(word, junk).map(([a, b]) => `${a} ${b}`),
    junk,
  );
  /** One step: a command (DATA with the content to send after 354), or a pipelined group. */
  const step = fc.oneof(
    { weight: 6, arbitrary: command.map((c) => ({ lines: [c], content: null as string | null })) },
    {
      weight: 2,
      arbitrary: fc.tuple(address, address, fc.oneof(content, big)).map(([from, to, body]) => ({
        lines: [`MAIL FROM:<${from}>`, `RCPT TO:<${to}>`, 'DATA'],
        content: body,
      })),
    },
    {
      weight: 2,
      arbitrary: fc.array(command, { minLength: 2, maxLength: 6 }).map((lines) => ({ lines, content: null })),
    },
  );
  return { step, command };
}

// --- a session that checks every reply -------------------------------------------------

/**
 * One complete reply: lines of one code, `-` on all but the last. Null when the connection
 * closed first. `to` is the command it answers, when known.
 */
async function reply(c: LineClient, to?: string): Promise<{ code: number; text: string } | null> {
  const lines: string[] = [];
  for (;;) {
    const line = await c.line();
    if (line === null) {
      if (lines.length) throw new Violation(`closed inside a reply: ${lines.join(' | ')}`);
      return null;
    }
    const m = /^([2-5][0-5]\d)([ -])(.*)$/.exec(line);
    if (!m) throw new Violation(`malformed reply line ${JSON.stringify(line.slice(0, 200))}`);
    if (lines.length && !lines[0]!.startsWith(m[1]!))
      throw new Violation(`codes differ in one reply: ${line}`);
    lines.push(line);
    if (m[2] === ' ') break;
  }
  const code = Number(lines[0]!.slice(0, 3));
  const text = lines.join('\n');
  // RFC 3463 with ENHANCEDSTATUSCODES: an error reply carries its class, but for the greeting
  // and replies to HELO and EHLO (RFC 2034 section 3)
  const exempt = to === undefined || /^(EHLO|HELO)( |$)/i.test(to);
  if (
    code >= 400 &&
    !exempt &&
    !new RegExp(`^${Math.floor(code / 100)}\\.\\d{1,3}\\.\\d{1,3} `).test(lines[0]!.slice(4))
  )
    throw new Violation(`error reply to ${to} without an enhanced status: ${lines[0]}`);
  if (/local error in processing/.test(text)) throw new Violation(`local error: ${text}`);
  return { code, text };
}

export function smtpFuzz(t: SmtpFuzzTarget): void {
  const { step, command } = generators(t);

  const greeted = async (): Promise<LineClient> => {
    const c = await LineClient.connect(t.port(), { tls: t.tls });
    const g = await reply(c);
    assert.equal(g?.code, 220, 'a fresh connection is greeted');
    return c;
  };

  /** Reads the replies to these commands; open: false when the session ended (421, 554 5.5.0, QUIT's 221). */
  const replies = async (c: LineClient, sent: string[]): Promise<{ open: boolean; last: number }> => {
    let last = 0;
    for (const line of sent) {
      const r = await reply(c, line);
      if (r === null) throw new Violation(`closed without a reply to ${JSON.stringify(line.slice(0, 100))}`);
      last = r.code;
      if (r.code === 421 || r.code === 221 || /^554 5\.5\.0/.test(r.text)) {
        if (!(await c.waitClosed())) throw new Violation(`still open after ${r.text}`);
        return { open: false, last };
      }
    }
    return { open: true, last };
  };

  void describe(`SMTP fuzz (${t.name})`, () => {
    const heap = new HeapWatch();
    before(() => heap.start());

    void it(
      'answers every command with one well-formed reply, whatever its arguments',
      { timeout: 300_000 },
      async () => {
        await fc.assert(
          fc.asyncProperty(fc.boolean(), fc.array(step, { minLength: 1, maxLength: 10 }), (hello, steps) =>
            fuzzSession(greeted, async (c) => {
              let open = true;
              if (hello) {
                c.write('EHLO fuzz.test\r\n');
                open = (await replies(c, ['EHLO'])).open;
                if (open && t.login) {
                  c.write(
                    `AUTH PLAIN ${Buffer.from(`\0${t.login.user}\0${t.login.password}`).toString('base64')}\r\n`,
                  );
                  open = (await replies(c, ['AUTH'])).open;
                }
              }
              for (const s of steps) {
                if (!open) break;
                c.write(s.lines.map((l) => l + '\r\n').join(''));
                const got = await replies(c, s.lines);
                open = got.open;
                // AUTH waits for a response of its own: cancel it
                if (open && got.last === 334) {
                  c.write('*\r\n');
                  open = (await replies(c, ['AUTH *'])).open;
                }
                if (open && got.last === 354) {
                  c.write(`${s.content ?? ''}\r\n.\r\n`);
                  open = (await replies(c, ['end of DATA'])).open;
                }
              }
              if (open) {
                c.write('QUIT\r\n');
                assert.equal((await replies(c, ['QUIT'])).open, false);
              }
            }),
          ),
          { ...fuzzOptions(t.runs.commands), endOnFailure: true },
        );
      },
    );

    void it('answers random bytes with well-formed replies only', { timeout: 300_000 }, async () => {
      const blob = fc.oneof(
        fc.uint8Array({ maxLength: 3000 }).map((a) => Buffer.from(a)),
        fc
          .array(fc.oneof(command, fc.constantFrom('\r\n', '\n', '\r', '.', ' ')), { maxLength: 30 })
          .map((a) => Buffer.from(a.join('\r\n'))),
        fc.integer({ min: 2000, max: 100_000 }).map((n) => Buffer.from(`EHLO ${'z'.repeat(n)}\r\nNOOP\r\n`)),
      );
      await fc.assert(
        fc.asyncProperty(blob, (bytes) =>
          fuzzSession(greeted, async (c) => {
            c.write(bytes);
            c.socket.end();
            while ((await reply(c)) !== null);
          }),
        ),
        { ...fuzzOptions(t.runs.bytes), endOnFailure: true },
      );
    });

    void it('keeps its heap bounded', () => heap.assertBounded());
  });
}
