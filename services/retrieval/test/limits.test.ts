// Bad input and limits: nothing a client sends crashes the service or reads past a limit.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { addAccount, startPlatform, type Platform } from '../../../test/harness.js';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { folderDir } from '@mailyard/mailstore';
import {
  capturingLogger,
  PASSWORD,
  sampleMessage,
  sendRaw,
  startRetrieval,
  type Retrieval,
} from './helpers.js';
import { waitFor } from '@mailyard/testkit';
import { RawImap } from './raw-imap.js';

let p: Platform;
let r: Retrieval;
const USER = 'limits@example.test';
const LOCKED = 'victim@example.test';

before(async () => {
  p = await startPlatform();
  await addAccount(p.directory, USER);
  await addAccount(p.directory, LOCKED);
  // no plaintext networks: LOGINDISABLED until STARTTLS, as in production
  r = await startRetrieval(p, {
    plaintext_auth_networks: '',
    message_size_limit: 1000,
    // room for 10,000 nested parentheses on one line
    imap_max_line_length: 30_000,
    imap_max_bad_commands: 5,
    mail_max_ip_connections: 8,
    // loopback is spared by default (a webmail on the same host): not here
    mail_ip_limit_exceptions: '',
    mail_max_user_connections: 2,
    imap_autologout: '1s',
  });
  await sendRaw(p, USER, sampleMessage(1));
});
after(async () => {
  await r?.stop();
  await p?.close();
});

/** Sends a command announcing a literal past the limit: NO [TOOBIG], with no "+" for it. */
async function tooBigAtOnce(c: RawImap, tag: string, command: string): Promise<void> {
  c.send(`${tag} ${command}\r\n`);
  const res = await c.until(new RegExp(`^${tag} (NO|BAD|OK)`, 'm'));
  assert.match(res, new RegExp(`^${tag} NO \\[TOOBIG\\]`, 'm'), res);
  assert.doesNotMatch(res, /^\+/m, 'no continuation was offered');
}

/** LOGIN with the user name and password as synchronising literals. */
async function loginWithLiterals(c: RawImap, tag: string, user: string): Promise<void> {
  c.send(`${tag} LOGIN {${user.length}}\r\n`);
  await c.until(/^\+/m);
  c.send(`${user} {${PASSWORD.length}}\r\n`);
  await c.until(/^\+/m);
  c.send(`${PASSWORD}\r\n`);
  assert.match(await c.until(new RegExp(`^${tag} (NO|BAD|OK)`, 'm')), new RegExp(`^${tag} OK`, 'm'));
}

async function loggedIn(): Promise<RawImap> {
  const c = await RawImap.connect(r.ports.imaps, { tls: true });
  await c.until(/^\* OK/m);
  const res = await c.cmd('l', `LOGIN ${USER} "${PASSWORD}"`);
  assert.match(res, /^l OK/m);
  return c;
}

void describe('TLS policy', () => {
  void it('advertises LOGINDISABLED before STARTTLS and refuses LOGIN; logs in after STARTTLS', async () => {
    const c = await RawImap.connect(r.ports.imap);
    const greet = await c.until(/^\* OK/m);
    assert.match(greet, /STARTTLS/);
    assert.match(greet, /LOGINDISABLED/);
    assert.doesNotMatch(greet, /AUTH=PLAIN/);
    assert.match(await c.cmd('a', `LOGIN ${USER} "${PASSWORD}"`), /^a NO \[PRIVACYREQUIRED\]/m);
    assert.match(await c.cmd('b', 'AUTHENTICATE PLAIN AGZvbwBiYXI='), /^b NO \[PRIVACYREQUIRED\]/m);
    // pipelined after STARTTLS: must be discarded
    c.send('c STARTTLS\r\nd NOOP\r\n');
    await c.until(/^c OK/m);
    await c.startTls();
    const caps = await c.cmd('e', 'CAPABILITY');
    assert.match(caps, /AUTH=PLAIN/);
    assert.doesNotMatch(caps, /STARTTLS|LOGINDISABLED/);
    assert.doesNotMatch(caps, /^d /m, 'the pipelined command was not executed');
    const b64 = Buffer.from(`\0${USER}\0${PASSWORD}`).toString('base64');
    assert.match(await c.cmd('f', `AUTHENTICATE PLAIN ${b64}`), /^f OK/m);
    c.close();
  });
});

void describe('bad input', () => {
  void it('answers syntax errors with a tagged BAD and continues', async () => {
    const c = await loggedIn();
    assert.match(await c.cmd('a1', 'FROBNICATE'), /^a1 BAD/m);
    assert.match(await c.cmd('a2', 'SELECT'), /^a2 BAD/m);
    assert.match(await c.cmd('a3', 'FETCH 1 FLAGS'), /^a3 BAD/m);
    assert.match(await c.cmd('a4', 'SELECT "unterminated'), /^a4 BAD/m);
    assert.match(await c.cmd('a5', 'SELECT INBOX'), /^a5 OK/m);
    assert.match(await c.cmd('a6', 'FETCH 0:x (FLAGS)'), /^a6 BAD/m);
    assert.match(await c.cmd('a7', 'FETCH 1 (BODY[1.HEADER.FIELDS] FLAGS)'), /^a7 BAD/m);
    assert.match(await c.cmd('a8', 'SEARCH CHARSET X-NO-SUCH TEXT x'), /^a8 NO \[BADCHARSET/m);
    assert.match(await c.cmd('a9', 'FETCH 1 (FLAGS)'), /^a9 OK/m);
    c.close();
  });

  void it('echoes no input a client could misread in an error: no control or 8-bit bytes, no literal at the end', async () => {
    const c = await loggedIn();
    assert.match(await c.cmd('j1', 'SELECT INBOX'), /^j1 OK/m);
    for (const [tag, arg] of [
      ['j2', '"1-Jan-2020{5}"'],
      ['j3', '"x\u0001y\u001bz"'],
      ['j4', '"\u00e9t\u00e9"'],
    ]) {
      const res = await c.cmd(tag!, `SEARCH SINCE ${arg}`);
      const line = res.split('\r\n').find((l) => l.startsWith(`${tag} `))!;
      assert.match(line, new RegExp(`^${tag} BAD `));
      assert.match(line, /^[\x20-\x7e]*$/, JSON.stringify(line));
      assert.doesNotMatch(line, /\{\d+\}$/);
    }
    c.close();
  });

  void it('answers a CHARSET among the search keys of SORT and THREAD with BAD', async () => {
    const c = await loggedIn();
    assert.match(await c.cmd('k1', 'SELECT INBOX'), /^k1 OK/m);
    // RFC 5256 names the charset before the keys; this was an internal error
    assert.match(await c.cmd('k2', 'THREAD REFERENCES UTF-8 CHARSET KOI8-R ALL'), /^k2 BAD /m);
    assert.match(await c.cmd('k3', 'SORT (DATE) UTF-8 CHARSET UTF-8 ALL'), /^k3 BAD /m);
    assert.match(await c.cmd('k4', 'SEARCH CHARSET UTF-8 ALL'), /^k4 OK/m);
    c.close();
  });

  void it('refuses a literal above the limit before reading it, and keeps the session', async () => {
    const c = await loggedIn();
    c.send('b1 APPEND INBOX {5000}\r\n');
    const res = await c.until(/^b1 (NO|BAD|OK)/m);
    assert.match(res, /^b1 NO \[TOOBIG\]/m);
    assert.doesNotMatch(res, /^\+/m, 'no continuation was offered');
    assert.match(await c.cmd('b2', 'NOOP'), /^b2 OK/m);
    // a non-synchronising literal above the limit cannot be skipped: BYE
    c.send('b3 APPEND INBOX {5000+}\r\n');
    await c.until(/^\* BYE/m);
    await c.waitClosed();
  });

  void it('holds no literal larger than a login needs before login, and the full size right after', async () => {
    // the message size limit of its own (25 MiB), and plaintext logins on loopback
    const big = await startRetrieval(p, { plaintext_auth_networks: '127.0.0.1/32' });
    const user = 'prelogin@example.test';
    await addAccount(p.directory, user);
    try {
      const c = await RawImap.connect(big.ports.imap);
      await c.until(/^\* OK/m);
      await tooBigAtOnce(c, 'p1', 'LOGIN {20000000}');
      // a login's strings as literals are still taken
      await loginWithLiterals(c, 'p2', user);
      c.close();

      // a non-synchronising one cannot be skipped: BYE, before a byte of it is kept
      const d = await RawImap.connect(big.ports.imap);
      await d.until(/^\* OK/m);
      d.send('q1 ID ("name" {20000000+}\r\n');
      await d.until(/^\* BYE \[TOOBIG\]/m);
      await d.waitClosed();

      // what is pipelined after LOGIN is read as the logged-in session it runs in
      const msg = sampleMessage(2, 'x'.repeat(100_000));
      const e = await RawImap.connect(big.ports.imap);
      await e.until(/^\* OK/m);
      e.send(
        `r1 LOGIN ${user} "${PASSWORD}"\r\nr2 APPEND INBOX {${Buffer.byteLength(msg)}+}\r\n${msg}\r\nr3 NOOP\r\n`,
      );
      const out = await e.until(/^r3 (NO|BAD|OK)/m);
      assert.match(out, /^r1 OK/m);
      assert.match(out, /^r2 OK \[APPENDUID /m, out);
      assert.match(out, /^r3 OK/m);
      e.close();
    } finally {
      await big.stop();
    }
  });

  void it('bounds a header field name sent as a literal by the line length, as a quoted one', async () => {
    // literals as large as a message, lines of 1,000 bytes
    const short = await startRetrieval(p, {
      plaintext_auth_networks: '127.0.0.1/32',
      imap_max_line_length: 1000,
    });
    try {
      const c = await RawImap.loggedIn(short.ports.imap, USER, PASSWORD);
      assert.match(await c.cmd('h1', 'EXAMINE INBOX'), /^h1 OK/m);
      c.send('h2 FETCH 1 (BODY.PEEK[HEADER.FIELDS ({7}\r\n');
      await c.until(/^\+/m);
      c.send('Subject)])\r\n');
      const named = await c.until(/^h2 (OK|NO|BAD)/m);
      assert.match(named, /^\* 1 FETCH \(BODY\[HEADER\.FIELDS \("SUBJECT"\)\] \{\d+\}\r\nSubject: /m, named);
      assert.match(named, /^h2 OK/m);
      const name = 'X-'.padEnd(600, 'n');
      const fits = await c.cmd('h3', `FETCH 1 (BODY.PEEK[HEADER.FIELDS ({${name.length}+}\r\n${name})])`);
      assert.match(fits, /^h3 OK/m, fits);
      // two such names are more text than one line may hold, quoted or not
      const quoted = await c.cmd('h4', `FETCH 1 (BODY.PEEK[HEADER.FIELDS ("${name}" "${name}")])`);
      assert.match(quoted, /^h4 BAD/m, quoted);
      const literals = await c.cmd(
        'h5',
        `FETCH 1 (BODY.PEEK[HEADER.FIELDS ({${name.length}+}\r\n${name} {${name.length}+}\r\n${name})])`,
      );
      assert.match(literals, /^h5 BAD/m, literals);
      assert.match(await c.cmd('h6', 'NOOP'), /^h6 OK/m);
      c.close();
    } finally {
      await short.stop();
    }
  });

  void it('takes the limit on literals before login from imap_max_literal_before_login', async () => {
    const small = await startRetrieval(p, {
      plaintext_auth_networks: '127.0.0.1/32',
      imap_max_literal_before_login: 100,
    });
    const user = 'smallprelogin@example.test';
    await addAccount(p.directory, user);
    try {
      const c = await RawImap.connect(small.ports.imap);
      await c.until(/^\* OK/m);
      await tooBigAtOnce(c, 's1', 'LOGIN {101}');
      // the bytes of one command together: two literals of 60
      await tooBigAtOnce(c, 's2', `ID ("name" {60+}\r\n${'x'.repeat(60)} "version" {60}`);
      // within it, a login as literals
      await loginWithLiterals(c, 's3', user);
      c.close();
    } finally {
      await small.stop();
    }
  });

  void it('answers an over-long line with BAD and continues', async () => {
    const c = await loggedIn();
    c.send(`c1 NOOP ${'x'.repeat(40_000)}\r\n`);
    await c.until(/^c1 BAD/m);
    assert.match(await c.cmd('c2', 'NOOP'), /^c2 OK/m);
    c.close();
  });

  void it('closes the session on a command whose lines add up past the limit, empty literals and all', async () => {
    const c = await RawImap.connect(r.ports.imaps, { tls: true });
    await c.until(/^\* OK/m);
    // each line short enough, each literal empty: only the command as a whole is too long
    c.send(`d1 SEARCH TEXT ${'x'.repeat(10_000)} {0+}\r\n`.repeat(4));
    await c.until(/^\* BYE Command too long/m);
    await c.waitClosed();
  });

  void it('closes the session after too many bad commands', async () => {
    const c = await loggedIn();
    for (let i = 0; i < 4; i++) assert.match(await c.cmd(`d${i}`, 'BOGUS'), /BAD/);
    c.send('d9 BOGUS\r\n');
    await c.until(/^\* BYE Too many invalid IMAP commands/m);
    await c.waitClosed();
  });

  void it('closes at the third invalid command before login, however many good ones come between, with BYE alone', async () => {
    const c = await RawImap.connect(r.ports.imaps, { tls: true });
    await c.until(/^\* OK/m);
    for (let i = 0; i < 2; i++) {
      assert.match(await c.cmd(`g${i}`, 'BOGUS'), new RegExp(`^g${i} BAD`, 'm'));
      assert.match(await c.cmd(`n${i}`, 'NOOP'), new RegExp(`^n${i} OK`, 'm'));
    }
    // as Dovecot's imap-login: the BYE answers it, no tagged BAD before
    c.send('g9 BOGUS\r\n');
    assert.equal(await c.until(/^\* BYE/m), '* BYE Too many invalid IMAP commands\r\n');
    await c.waitClosed();
  });

  void it('closes as soon before login on the lines of another protocol, an HTTP request', async () => {
    const c = await RawImap.connect(r.ports.imaps, { tls: true });
    await c.until(/^\* OK/m);
    // what a browser sends to a server it takes for a web server (ALPACA)
    c.send(
      'POST / HTTP/1.1\r\nHost: imap.mailyard.test\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nabc',
    );
    assert.match(
      await c.until(/^\* BYE/m),
      /^(\S+ BAD [^\r]*\r\n){2}\* BYE Too many invalid IMAP commands\r\n$/,
    );
    await c.waitClosed();
  });

  void it('does not count failed logins toward it', async () => {
    // an address of its own: the failures lock no other test out
    const c = await RawImap.connect(r.ports.imaps, { tls: true, localAddress: '127.0.0.71' });
    await c.until(/^\* OK/m);
    for (let i = 0; i < 3; i++)
      assert.match(await c.cmd(`f${i}`, `LOGIN ${USER} wrong`), new RegExp(`^f${i} NO `, 'm'));
    assert.match(await c.cmd('n', 'NOOP'), /^n OK/m);
    c.close();
  });

  void it('takes a SASL PLAIN response that holds no credentials for a failed login, as Dovecot does', async () => {
    const c = await RawImap.connect(r.ports.imaps, { tls: true, localAddress: '127.0.0.72' });
    await c.until(/^\* OK/m);
    // base64, but not authzid NUL authcid NUL password (RFC 4616 §2): a client's bug, no attack
    const noCredentials = Buffer.from(USER).toString('base64');
    for (let i = 0; i < 3; i++)
      assert.match(
        await c.cmd(`p${i}`, `AUTHENTICATE PLAIN ${noCredentials}`),
        new RegExp(`^p${i} NO \\[AUTHENTICATIONFAILED\\]`, 'm'),
      );
    assert.match(await c.cmd('n', 'NOOP'), /^n OK/m);
    c.close();
  });

  void it('answers 10,000 nested parentheses with a tagged BAD, in any state, and carries on', async () => {
    const deep = '('.repeat(10_000) + ')'.repeat(10_000);
    const c = await RawImap.connect(r.ports.imaps, { tls: true });
    await c.until(/^\* OK/m);
    assert.match(await c.cmd('h1', `LOGIN ${deep}`), /^h1 BAD /m);
    assert.match(await c.cmd('h2', `LOGIN ${USER} "${PASSWORD}"`), /^h2 OK/m);
    assert.match(await c.cmd('h3', 'SELECT INBOX'), /^h3 OK/m);
    for (const [tag, cmd] of [
      ['h4', `FETCH 1 ${deep}`],
      ['h5', `SEARCH ${deep}`],
      ['h6', `SEARCH ${'('.repeat(10_000)}ALL${')'.repeat(10_000)}`],
      ['h7', `STATUS INBOX ${deep}`],
    ]) {
      const res = await c.cmd(tag!, cmd!);
      assert.match(res, new RegExp(`^${tag} BAD `, 'm'));
      assert.doesNotMatch(res, /^\* (NO|BAD)/m, 'no untagged error');
    }
    assert.match(await c.cmd('h8', 'NOOP'), /^h8 OK/m);
    c.close();
  });

  void it('answers every error with the tag when there is one, and * BAD only without', async () => {
    const c = await loggedIn();
    const cases: [string, string][] = [
      ['t1', 't1'],
      ['t2 ', 't2'],
      ['t3 NOOP (', 't3'],
      ['t4 FETCH', 't4'],
      ['t5 UID', 't5'],
      ['t6 "x"', 't6'],
      [`t7 NOOP ${'x'.repeat(40_000)}`, 't7'],
      ['t+8 NOOP', '\\*'],
      ['(t9) NOOP', '\\*'],
      ['\u00e9 NOOP', '\\*'],
    ];
    for (const [line, tag] of cases) {
      c.send(`${line}\r\n`);
      const res = await c.until(/^\S+ (OK|NO|BAD) /m);
      assert.match(res, new RegExp(`^${tag} BAD `, 'm'), `${line.slice(0, 20)}: ${res}`);
      // after login a good command ends a run of errors
      assert.match(await c.cmd('ok', 'NOOP'), /^ok OK/m);
    }
    c.send('t10 APPEND INBOX {5000}\r\n');
    assert.match(await c.until(/^t10 /m), /^t10 NO \[TOOBIG\]/m);
    c.close();
  });

  void it('survives random garbage', async () => {
    for (let i = 0; i < 20; i++) {
      // each from an address of its own: the server may still be closing the ones before,
      // and mail_max_ip_connections is not what this tests
      const c = await RawImap.connect(r.ports.imaps, { tls: true, localAddress: `127.0.0.${100 + i}` });
      const junk = Buffer.from(Array.from({ length: 300 }, () => Math.floor(Math.random() * 256)));
      c.socket.write(junk);
      c.socket.write('\r\nz NOOP\r\n');
      c.close();
    }
    const c = await loggedIn();
    assert.match(await c.cmd('e1', 'NOOP'), /^e1 OK/m);
    c.close();
  });
});

void describe('mailbox names', () => {
  void it('refuses a name longer than the store can hold with NO [LIMIT], and takes the longest it can', async () => {
    const c = await loggedIn();
    // Maildir++: the whole hierarchy is one directory ".a.b", at most 255 bytes on disk
    assert.match(await c.cmd('m1', `CREATE ${'a'.repeat(300)}`), /^m1 NO \[LIMIT\]/m);
    assert.match(await c.cmd('m2', `CREATE ${'b'.repeat(255)}`), /^m2 NO \[LIMIT\]/m);
    assert.match(await c.cmd('m3', `CREATE ${'b'.repeat(254)}`), /^m3 OK/m);
    // a dot is stored as %2e: three bytes
    assert.match(await c.cmd('m4', `CREATE ${'c.'.repeat(64)}c`), /^m4 NO \[LIMIT\]/m);
    // 127 times U+00E9 (two bytes each in UTF-8, the store's encoding) fit; 128 do not
    const e = (n: number) =>
      `"&${Buffer.from('\u00e9'.repeat(n), 'utf16le').swap16().toString('base64').replace(/=+$/, '').replace(/\//g, ',')}-"`;
    assert.match(await c.cmd('m5', `CREATE ${e(128)}`), /^m5 NO \[LIMIT\]/m);
    assert.match(await c.cmd('m6', `CREATE ${e(127)}`), /^m6 OK/m);
    assert.match(await c.cmd('m7', `CREATE ${Array(21).fill('d').join('/')}`), /^m7 NO \[LIMIT\]/m);
    assert.match(await c.cmd('m8', `CREATE ${Array(20).fill('d').join('/')}`), /^m8 OK/m);
    const list = await c.cmd('m9', 'LIST "" *');
    assert.ok(list.includes('b'.repeat(254)), list);
    assert.doesNotMatch(list, /a{300}/);
    c.close();
  });

  void it('refuses a rename that would make a child too long, and moves nothing', async () => {
    const c = await loggedIn();
    assert.match(await c.cmd('r0', 'CREATE p'), /^r0 OK/m);
    assert.match(await c.cmd('r1', `CREATE p/${'k'.repeat(200)}`), /^r1 OK/m);
    assert.match(await c.cmd('r2', `RENAME p ${'q'.repeat(60)}`), /^r2 NO \[LIMIT\]/m);
    const list = await c.cmd('r3', 'LIST "" p*');
    assert.match(list, /^\* LIST .* "p"\r$/m);
    assert.ok(list.includes(`p/${'k'.repeat(200)}`), list);
    assert.match(await c.cmd('r4', `RENAME p ${'q'.repeat(40)}`), /^r4 OK/m);
    c.close();
  });

  void it('finds no folder by the empty name, and DELETE "" leaves the account alone', async () => {
    const c = await loggedIn();
    // "" was the account's own directory: DELETE "" tried to move INBOX and every folder away
    assert.match(await c.cmd('e1', 'DELETE ""'), /^e1 NO \[NONEXISTENT\]/m);
    assert.match(await c.cmd('e2', 'DELETE "/"'), /^e2 NO \[NONEXISTENT\]/m);
    assert.match(await c.cmd('e3', 'RENAME "" elsewhere'), /^e3 NO \[NONEXISTENT\]/m);
    assert.match(await c.cmd('e4', 'SELECT ""'), /^e4 NO \[NONEXISTENT\]/m);
    assert.match(await c.cmd('e5', 'STATUS "" (MESSAGES)'), /^e5 NO \[NONEXISTENT\]/m);
    assert.match(await c.cmd('e6', 'STATUS INBOX (MESSAGES)'), /^\* STATUS "INBOX" \(MESSAGES [1-9]/m);
    c.close();
  });

  void it('refuses the LIST wildcards % and * in a new name', async () => {
    const c = await loggedIn();
    assert.match(await c.cmd('w1', 'CREATE "50% off"'), /^w1 NO \[CANNOT\]/m);
    assert.match(await c.cmd('w2', 'CREATE a*b'), /^w2 NO \[CANNOT\]/m);
    assert.match(await c.cmd('w3', 'CREATE wild'), /^w3 OK/m);
    assert.match(await c.cmd('w4', 'RENAME wild wild%'), /^w4 NO \[CANNOT\]/m);
    assert.match(await c.cmd('w5', 'LIST "" wild*'), /^\* LIST \(\\HasNoChildren\) "\/" "?wild"?\r$/m);
    c.close();
  });
});

/**
 * Sends `line` over and over on a plain connection and never reads; the bytes the server
 * took before it stopped reading, or `cap` when it never did. A write that has not
 * drained in 5 s means the server no longer reads.
 */
async function flood(port: number, line: string, cap: number, prelude = ''): Promise<number> {
  const s = connect(port, '127.0.0.1');
  s.on('error', () => undefined);
  await once(s, 'connect');
  s.pause(); // answers stay unread
  if (prelude) s.write(prelude);
  const chunk = Buffer.from(line.repeat(Math.ceil(65_536 / line.length)));
  let sent = 0;
  try {
    while (sent < cap) {
      sent += chunk.length;
      if (s.write(chunk)) continue;
      let timer: NodeJS.Timeout | undefined;
      const stalled = new Promise<boolean>((r) => (timer = setTimeout(() => r(true), 5000)));
      const drained = once(s, 'drain').then(() => false);
      const stuck = await Promise.race([drained, stalled]);
      clearTimeout(timer);
      if (stuck) return sent - s.writableLength;
    }
    return sent;
  } finally {
    s.destroy();
  }
}

void describe('limits', () => {
  // the answers of 24 MB of CAPABILITY would be 400 MB; the server takes in what its 1 MB
  // of queued answers, 64 waiting commands and the kernel's buffers hold
  void it('stops reading a client that does not read its answers (IMAP, POP3)', async () => {
    const imapTaken = await flood(r.ports.imap, 'a CAPABILITY\r\n', 24 << 20);
    assert.ok(imapTaken < 16 << 20, `the IMAP server took ${imapTaken} bytes`);
    const popTaken = await flood(r.ports.pop3, 'CAPA\r\n', 24 << 20);
    assert.ok(popTaken < 16 << 20, `the POP3 server took ${popTaken} bytes`);
    // and goes on serving others
    const c = await RawImap.connect(r.ports.imaps, { tls: true });
    await c.until(/^\* OK/m);
    assert.match(await c.cmd('c', 'CAPABILITY'), /^c OK/m);
    c.close();
  });

  // 64 commands waiting is little until each carries a literal of message_size_limit
  void it(
    'stops reading pipelined APPENDs behind a command that waits for the client to read',
    { timeout: 120_000 },
    async (t) => {
      const user = 'pipelined@example.test';
      await addAccount(p.directory, user);
      await sendRaw(p, user, sampleMessage(1, ' padding'.repeat(25_000)));
      // logins in plain text from here
      const r2 = await startRetrieval(p);
      t.after(() => r2.stop());
      // 40 MB of answers the client does not read: the APPENDs after it wait
      const fetch = `f FETCH 1 (${Array.from({ length: 200 }, () => 'BODY.PEEK[]').join(' ')})`;
      const message = `Subject: pipelined\r\n\r\n${'x'.repeat(1 << 20)}`;
      const taken = await flood(
        r2.ports.imap,
        `a APPEND INBOX {${message.length}+}\r\n${message}\r\n`,
        96 << 20,
        `l LOGIN ${user} "${PASSWORD}"\r\ns SELECT INBOX\r\n${fetch}\r\n`,
      );
      assert.ok(taken < 24 << 20, `the IMAP server took ${taken} bytes`);
    },
  );

  void it('limits sessions per account', async () => {
    const a = await loggedIn();
    const b = await loggedIn();
    const c = await RawImap.connect(r.ports.imaps, { tls: true });
    await c.until(/^\* OK/m);
    assert.match(await c.cmd('x', `LOGIN ${USER} "${PASSWORD}"`), /^x NO \[LIMIT\]/m);
    a.close();
    b.close();
    c.close();
  });

  void it('limits sessions per IP', async () => {
    await new Promise((res) => setTimeout(res, 200));
    const conns: RawImap[] = [];
    let refused = false;
    for (let i = 0; i < 12 && !refused; i++) {
      const c = await RawImap.connect(r.ports.imap);
      const first = await c.until(/^\* (OK|BYE)/m);
      if (first.startsWith('* BYE')) refused = true;
      conns.push(c);
    }
    assert.ok(refused, 'a connection beyond the per-IP limit was refused');
    for (const c of conns) c.close();
  });

  void it('bounds CATENATE: parts per APPEND, and the size of what the URLs pull in', async () => {
    const c = await loggedIn();
    const count = async () => /MESSAGES (\d+)/.exec(await c.cmd('s', 'STATUS Cat (MESSAGES)'))![1];
    await c.cmd('c', 'CREATE Cat');
    const before = await count();
    // a literal and one byte of a message in another mailbox: the message is put together
    const ok = await c.cmd(
      'a1',
      'APPEND Cat CATENATE (TEXT {9+}\r\nSubject:  URL "/INBOX/;UID=1/;PARTIAL=0.1")',
    );
    assert.match(ok, /^a1 OK \[APPENDUID \d+ \d+\]/m);
    // each URL alone is small; together they pass the 1000-byte message size limit
    const urls = Array.from({ length: 20 }, () => 'URL "/INBOX/;UID=1"').join(' ');
    assert.match(await c.cmd('a2', `APPEND Cat CATENATE (${urls})`), /^a2 NO \[TOOBIG\]/m);
    const many = Array.from({ length: 257 }, () => 'URL "/INBOX/;UID=1/;PARTIAL=0.1"').join(' ');
    assert.match(await c.cmd('a3', `APPEND Cat CATENATE (${many})`), /^a3 NO \[LIMIT\]/m);
    // a URL is echoed in BADURL only as text that cannot end the response code
    assert.match(
      await c.cmd('a4', 'APPEND Cat CATENATE (URL "/IN]BOX/;UID=1")'),
      /^a4 NO \[BADURL \/IN\?BOX\/;UID=1\] /m,
    );
    assert.equal(await count(), String(Number(before) + 1));
    c.close();
  });

  // Dovecot streams each section as the client reads it; rendering a whole message's
  // answer first would hold every section it names at once, decoded, then encrypted
  void it(
    'holds little of a FETCH naming a large part thousands of times, however slowly it is read',
    { timeout: 120_000 },
    async (t) => {
      const data = randomBytes(80 * 1024)
        .toString('base64')
        .replace(/.{76}/g, '$&\r\n');
      const big = 'large-part@example.test';
      await addAccount(p.directory, big);
      await sendRaw(
        p,
        big,
        [
          'From: sender@remote.example',
          'Subject: one large part',
          'MIME-Version: 1.0',
          'Content-Type: application/octet-stream',
          'Content-Transfer-Encoding: base64',
          '',
          data,
        ].join('\r\n'),
      );
      // this file's autologout (1 s) would end a session reading for longer
      const r2 = await startRetrieval(p, { mail_max_user_connections: 1, mail_ip_limit_exceptions: '' });
      t.after(() => r2.stop());
      const c = await RawImap.connect(r2.ports.imaps, { tls: true });
      await c.until(/^\* OK/m);
      assert.match(await c.cmd('l', `LOGIN ${big} "${PASSWORD}"`), /^l OK/m);
      assert.match(await c.cmd('s', 'SELECT INBOX'), /^s OK/m);
      // 1,500 times the part is 120 MB decoded: only what the client reads may be held
      const items = Array.from({ length: 1500 }, () => 'BINARY.PEEK[1]').join(' ');
      const before = process.memoryUsage().arrayBuffers;
      let peak = 0;
      let tail = '';
      let received = 0;
      const done = new Promise<void>((resolve, reject) => {
        c.socket.removeAllListeners('data');
        c.socket.on('data', (d: Buffer) => {
          received += d.length;
          peak = Math.max(peak, process.memoryUsage().arrayBuffers - before);
          tail = (tail + d.toString('latin1')).slice(-200);
          if (/\r\nf (OK|NO|BAD)[^\r\n]*\r\n/.test(tail)) resolve();
        });
        c.socket.once('close', () =>
          reject(new Error(`closed after ${received} bytes, ${peak >> 20} MB held`)),
        );
      });
      c.send(`f FETCH * (${items})\r\n`);
      await done;
      assert.match(tail, /\r\nf OK/);
      assert.ok(received > 1500 * 80 * 1024, `${received} bytes received`);
      // all of it at once was 240 MB; what is read and not yet collected may still count
      // here (the server and this client share one process and its garbage collector)
      assert.ok(peak < 150 << 20, `${peak >> 20} MB held while the answer was read`);
      c.close();
    },
  );

  void it('logs out an idle session (autologout)', async () => {
    const c = await loggedIn();
    await c.until(/^\* BYE Autologout/m, 3000);
    await c.waitClosed();
  });

  void it('counts failed logins in the shared lockout', async () => {
    let locked = false;
    for (let i = 0; i < 15 && !locked; i++) {
      const c = await RawImap.connect(r.ports.imaps, { tls: true });
      await c.until(/^\* OK/m);
      const res = await c.cmd('f', `LOGIN ${LOCKED} wrong-password`);
      if (/\[UNAVAILABLE\]/.test(res)) locked = true;
      else assert.match(res, /^f NO \[AUTHENTICATIONFAILED\]/m);
      c.close();
    }
    assert.ok(locked, 'the account was locked after repeated failures');
    // even the right password is refused while locked
    const c = await RawImap.connect(r.ports.imaps, { tls: true });
    await c.until(/^\* OK/m);
    assert.match(await c.cmd('g', `LOGIN ${LOCKED} "${PASSWORD}"`), /^g NO \[UNAVAILABLE\]/m);
    c.close();
  });
});

void describe('protocol details (raw)', () => {
  void it('answers FETCH sections, BINARY, partials, ESEARCH, STATUS=SIZE, LIST-STATUS, NAMESPACE, ID', async () => {
    const c = await loggedIn();
    assert.match(await c.cmd('p1', 'ID ("name" "raw")'), /^\* ID \("name" "Mailyard"/m);
    assert.match(await c.cmd('p2', 'NAMESPACE'), /^\* NAMESPACE \(\("" "\/"\)\) NIL NIL/m);
    assert.match(await c.cmd('p3', 'ENABLE CONDSTORE'), /^\* ENABLED CONDSTORE/m);
    assert.match(
      await c.cmd('p4', 'STATUS INBOX (MESSAGES SIZE UIDNEXT HIGHESTMODSEQ)'),
      /^\* STATUS "INBOX" \(MESSAGES 1 SIZE \d+ UIDNEXT 2 HIGHESTMODSEQ \d+\)/m,
    );
    const ls = await c.cmd('p5', 'LIST "" "%" RETURN (SPECIAL-USE STATUS (MESSAGES))');
    assert.match(ls, /^\* LIST \(\\HasNoChildren \\Junk\) "\/" "Junk"\r\n\* STATUS "Junk" \(MESSAGES 0\)/m);
    await c.cmd('p6', 'SELECT INBOX');
    const f = await c.cmd(
      'p7',
      'FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY.PEEK[1]<0.4> BINARY.PEEK[1] BINARY.SIZE[1] BODY.PEEK[TEXT])',
    );
    assert.match(f, /BODY\[HEADER\.FIELDS \(SUBJECT\)\] \{27\}\r\nSubject: Test message 1\r\n\r\n/);
    assert.match(f, /BODY\[1\]<0> \{4\}\r\nBody/);
    assert.match(f, /BINARY\[1\] \{\d+\}\r\nBody of message 1\./);
    assert.match(f, /BINARY\.SIZE\[1\] \d+/);
    // CONDSTORE is on, but this FETCH neither asks for MODSEQ nor sets \Seen (RFC 7162 §3.1)
    assert.doesNotMatch(f, /MODSEQ/);
    assert.doesNotMatch(f, /\\Seen/, 'PEEK does not set \\Seen');
    const s = await c.cmd('p8', 'UID SEARCH RETURN (MIN MAX COUNT) SUBJECT "message 1"');
    assert.match(s, /^\* ESEARCH \(TAG "p8"\) UID MIN 1 MAX 1 COUNT 1/m);
    const f2 = await c.cmd('p9', 'FETCH 1 (BODY[TEXT])');
    assert.match(f2, /FLAGS \(\\Seen\)/, 'BODY[] sets \\Seen and reports it');
    assert.match(await c.cmd('p10', 'GETQUOTAROOT INBOX'), /^\* QUOTAROOT "INBOX" ""\r\n\* QUOTA "" \(\)/m);
    c.close();
  });
});

void describe('SORT (RFC 5256)', () => {
  void it('sorts by base subject, sender and size', async () => {
    const c = await loggedIn();
    const add = async (t: string, subject: string, from: string, pad: number) => {
      const msg = `From: ${from}\r\nSubject: ${subject}\r\n\r\n${'x'.repeat(pad)}\r\n`;
      c.send(`${t} APPEND INBOX {${Buffer.byteLength(msg)}+}\r\n${msg}\r\n`);
      assert.match(await c.until(new RegExp(`^${t} (OK|NO|BAD)`, 'm')), new RegExp(`^${t} OK`, 'm'));
    };
    // INBOX already holds "Test message 1" from sender@remote.example
    await add('s1', 'Re: [list] Apples', 'zed@example.test', 10);
    await add('s2', 'Fwd: Bananas', 'adam@example.test', 300);
    await c.cmd('s3', 'SELECT INBOX');
    assert.match(await c.cmd('s4', 'SORT (SUBJECT) UTF-8 ALL'), /^\* SORT 2 3 1\r\n/m);
    assert.match(await c.cmd('s5', 'SORT (FROM) UTF-8 ALL'), /^\* SORT 3 1 2\r\n/m);
    assert.match(await c.cmd('s6', 'UID SORT (REVERSE SIZE) UTF-8 ALL'), /^\* SORT 1 3 2\r\n/m);
    assert.match(await c.cmd('s7', 'SORT (SUBJECT) X-NO-SUCH ALL'), /^s7 NO \[BADCHARSET/m);
    c.close();
  });
});

void describe('POP3 bad input', () => {
  const pop3 = async () => {
    const c = await RawImap.connect(r.ports.pop3s, { tls: true });
    await c.until(/^\+OK/m);
    return c;
  };

  void it('closes at the third invalid command before login, however many good ones come between', async () => {
    const c = await pop3();
    for (let i = 0; i < 2; i++) {
      c.send('BOGUS\r\n');
      assert.match(await c.until(/^[-+]/m), /^-ERR/);
      c.send('CAPA\r\n');
      assert.match(await c.until(/^\.\r$/m), /^\+OK/);
    }
    c.send('BOGUS\r\n');
    assert.match(await c.until(/^-ERR Too many invalid commands/m), /^-ERR Unknown command\r\n-ERR Too/);
    await c.waitClosed();
  });

  void it('answers a line over the limit once, in its turn, however many reads it takes', async () => {
    const c = await pop3();
    c.send(`USER ${USER}\r\nPASS wrong\r\n${'x'.repeat(2000)}`);
    const first = await c.until(/Line too long/m);
    assert.match(first, /^\+OK\r\n-ERR \[AUTH\] [^\r]*\r\n-ERR Line too long\r\n$/);
    c.send('x'.repeat(2000));
    c.send(`${'x'.repeat(2000)}\r\nCAPA\r\n`);
    assert.match(await c.until(/^\.\r$/m), /^\+OK/, 'the next reply is the one to CAPA');
    c.close();
  });
});

void describe('error logging', () => {
  void it('logs a few errors of a connection that fails command after command, then one count', async () => {
    const { logger, lines } = capturingLogger();
    const r2 = await startRetrieval(p, { plaintext_auth_networks: '127.0.0.1/32' }, { logger });
    try {
      const c = await RawImap.connect(r2.ports.imap);
      await c.until(/^\* OK/m);
      assert.match(await c.cmd('l', `LOGIN ${USER} "${PASSWORD}"`), /^l OK/m);
      assert.match(await c.cmd('c', 'CREATE damaged'), /^c OK/m);
      // a folder damaged on disk: every STATUS of it is an internal error
      const dir = folderDir(p.maildir, USER, 'damaged');
      rmSync(join(dir, 'new'), { recursive: true });
      mkdirSync(join(dir, 'dovecot-uidlist'));
      for (let i = 0; i < 30; i++) {
        assert.match(
          await c.cmd(`s${i}`, 'STATUS damaged (MESSAGES)'),
          new RegExp(`^s${i} NO \\[SERVERBUG\\]`, 'm'),
        );
        assert.match(await c.cmd(`n${i}`, 'NOOP'), new RegExp(`^n${i} OK`, 'm'));
      }
      c.send('z LOGOUT\r\n');
      await c.waitClosed();
      const failed = () => lines.filter((l) => l.msg === 'command failed');
      await waitFor(() => lines.some((l) => l.fields.unlogged !== undefined), {
        what: 'the count at the end',
      });
      assert.equal(failed().length, 5);
      assert.equal(lines.find((l) => l.fields.unlogged !== undefined)?.fields.unlogged, 25);
      assert.ok(lines.length < 15, `${lines.length} lines logged`);
    } finally {
      await r2.stop();
    }
  });
});
