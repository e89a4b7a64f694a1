// IMAP extensions and the RFC 5256 / RFC 5258 details a client sees, driven by a raw
// client on loopback. The expected answers are Dovecot 2.3's for the same commands,
// except where a comment says the RFC is followed instead.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { accountDir, Quotas } from '@mailyard/mailstore';
import { addAccount, startPlatform, type Platform } from '../../../test/harness.js';
import { PASSWORD, sendRaw, startRetrieval, type Retrieval } from './helpers.js';
import { RawImap } from './raw-imap.js';

let p: Platform;
let r: Retrieval;
let accounts = 0;

before(async () => {
  p = await startPlatform();
  r = await startRetrieval(p);
});
after(async () => {
  await r?.stop();
  await p?.close();
});

/** A new account's name, the account added. */
async function newAccount(): Promise<string> {
  const user = `ext${++accounts}@example.test`;
  await addAccount(p.directory, user);
  return user;
}

/** A raw client logged in as `user`. */
function login(user: string): Promise<RawImap> {
  return RawImap.loggedIn(r.ports.imap, user, PASSWORD);
}

/** A client logged in to an account of its own (nothing else in it but the defaults). */
async function freshAccount(): Promise<RawImap> {
  return login(await newAccount());
}

/** APPENDs one message with a non-synchronising literal; returns the tagged reply. */
async function append(c: RawImap, tag: string, mailbox: string, msg: string): Promise<string> {
  c.send(`${tag} APPEND ${mailbox} {${Buffer.byteLength(msg)}+}\r\n${msg}\r\n`);
  const out = await c.until(new RegExp(`^${tag} (OK|NO|BAD)`, 'm'));
  assert.match(out, new RegExp(`^${tag} OK`, 'm'));
  return out;
}

const msg = (headers: string[]) => headers.join('\r\n') + '\r\n\r\nbody\r\n';

void describe('SORT (RFC 5256, RFC 5957)', { timeout: 60_000 }, () => {
  void it('sorts SUBJECT by base subject in i;unicode-casemap and CC by the first mailbox', async () => {
    const c = await freshAccount();
    const specs = [
      ['From: a@x', 'Cc: "Zed" <bob@zz.example>', 'Subject: apple', 'Date: Mon, 6 Jan 2025 10:00:00 +0000'],
      ['From: b@x', 'Cc: Adam <carl@aa.example>', 'Subject: _under', 'Date: Mon, 6 Jan 2025 09:00:00 +0000'],
      [
        'From: c@x',
        'Cc: bob@aa.example',
        'Subject: Re: [x] Banana (fwd)',
        'Date: Mon, 6 Jan 2025 11:00:00 +0000',
      ],
      ['From: d@x', 'Subject: [fwd: Re: Apple]', 'Date: Mon, 6 Jan 2025 08:00:00 +0000'],
      [
        'From: e@x',
        'Cc: undisclosed:;',
        'Subject: =?utf-8?q?=C3=A9clair?=',
        'Date: Mon, 6 Jan 2025 07:00:00 +0000',
      ],
      [
        'From: f@x',
        'Cc: Bob <Bob@aa.example>, x@y',
        'Subject: [tag]',
        'Date: Mon, 6 Jan 2025 06:00:00 +0000',
      ],
      ['From: g@x', 'Cc: group: z@b.example;', 'Subject: Zebra'],
    ];
    for (const [i, h] of specs.entries()) await append(c, `a${i}`, 'INBOX', msg(h));
    await c.cmd('s', 'SELECT INBOX');
    // "_" and "[" sort after the letters once titlecased; é decomposes to E and an accent
    assert.match(await c.cmd('s1', 'SORT (SUBJECT) UTF-8 ALL'), /^\* SORT 1 4 3 5 7 6 2\r\n/m);
    // the local part only, case-folded; a group counts by its name; no Cc sorts first
    assert.match(await c.cmd('s2', 'SORT (CC) UTF-8 ALL'), /^\* SORT 4 1 3 6 2 7 5\r\n/m);
    // REVERSE turns the criterion, not the tie-break by sequence number
    assert.match(await c.cmd('s3', 'SORT (REVERSE CC) UTF-8 ALL'), /^\* SORT 5 7 2 1 3 6 4\r\n/m);
    // 7 has no Date: its arrival, today, is the latest
    assert.match(await c.cmd('s4', 'SORT (REVERSE DATE) UTF-8 ALL'), /^\* SORT 7 3 1 2 4 5 6\r\n/m);
    c.close();
  });

  void it('sorts DISPLAYFROM and DISPLAYTO by display name, else the address (SORT=DISPLAY)', async () => {
    const c = await freshAccount();
    const specs = [
      ['From: "Zoe" <amy@b.example>', 'To: g: a@b;'],
      ['From: bob@a.example', 'To: =?utf-8?q?=C3=89mile?= <z@z>'],
      ['From: "" <carl@a.example>'],
      ['From: Bob <zed@a.example>', 'To: Ann <x@x>'],
    ];
    for (const [i, h] of specs.entries()) await append(c, `a${i}`, 'INBOX', msg([...h, 'Subject: x']));
    await c.cmd('s', 'SELECT INBOX');
    assert.match(await c.cmd('s1', 'CAPABILITY'), /\bSORT=DISPLAY\b/);
    assert.match(await c.cmd('s2', 'SORT (DISPLAYFROM) UTF-8 ALL'), /^\* SORT 4 2 3 1\r\n/m);
    assert.match(await c.cmd('s3', 'SORT (DISPLAYTO) UTF-8 ALL'), /^\* SORT 3 4 2 1\r\n/m);
    assert.match(await c.cmd('s4', 'SORT (REVERSE DISPLAYFROM) UTF-8 ALL'), /^\* SORT 1 3 2 4\r\n/m);
    c.close();
  });

  void it('sorts ARRIVAL by INTERNALDATE to the second, as the client sees it', async () => {
    // three messages delivered within one second, the first file written last: the
    // INTERNALDATE (RFC 9051 date-time) of each is the same second, so they tie and go
    // by sequence number (RFC 5256 §3), as on Dovecot, whichever way REVERSE turns
    const user = await newAccount();
    const dir = accountDir(p.maildir, user);
    for (const d of ['cur', 'new', 'tmp']) await fs.mkdir(join(dir, d), { recursive: true });
    for (const [i, ms] of [900, 500, 100].entries()) {
      const path = join(dir, 'new', `1736157600.M${i + 1}P1.test`);
      await fs.writeFile(path, msg(['From: a@x', `Subject: ${i + 1}`]));
      const when = new Date(Date.UTC(2025, 0, 6, 10, 0, 0, ms));
      await fs.utimes(path, when, when);
    }
    const c = await login(user);
    await c.cmd('s', 'SELECT INBOX');
    const dates = (await c.cmd('f', 'FETCH 1:* (INTERNALDATE)')).match(/INTERNALDATE "[^"]+"/g);
    assert.deepEqual(dates, Array(3).fill('INTERNALDATE "06-Jan-2025 10:00:00 +0000"'));
    assert.match(await c.cmd('s1', 'SORT (ARRIVAL) UTF-8 ALL'), /^\* SORT 1 2 3\r\n/m);
    assert.match(await c.cmd('s2', 'SORT (REVERSE ARRIVAL) UTF-8 ALL'), /^\* SORT 1 2 3\r\n/m);
    // no Date header: the sent date is the INTERNALDATE (RFC 5256 §2.2)
    assert.match(await c.cmd('s3', 'SORT (REVERSE DATE) UTF-8 ALL'), /^\* SORT 1 2 3\r\n/m);
    assert.match(await c.cmd('t', 'THREAD ORDEREDSUBJECT UTF-8 ALL'), /^\* THREAD \(1\)\(2\)\(3\)\r\n/m);
    c.close();
  });
});

void describe('THREAD (RFC 5256, THREAD=REFS)', { timeout: 60_000 }, () => {
  void it('threads by REFERENCES and by REFS', async () => {
    const c = await freshAccount();
    const at = (h: number) => `Date: Mon, 6 Jan 2025 ${String(h).padStart(2, '0')}:00:00 +0000`;
    const specs = [
      ['Message-ID: <a@x>', 'Subject: s', at(5)],
      ['Message-ID: <b@x>', 'References: <a@x>', 'Subject: Re: s', at(1)],
      // References wins over In-Reply-To; its only id is missing from the mailbox
      ['Message-ID: <c@x>', 'References: <zz@x>', 'In-Reply-To: <a@x>', 'Subject: Re: s', at(3)],
    ];
    for (const [i, h] of specs.entries()) await append(c, `a${i}`, 'INBOX', msg(['From: x@y', ...h]));
    await c.cmd('s', 'SELECT INBOX');
    assert.match(await c.cmd('t0', 'CAPABILITY'), /\bTHREAD=REFS\b/);
    // REFERENCES gathers 3 under 1 by subject; REFS does not, and orders threads by
    // their latest message (3 at 03:00 before the thread of 1 and 2, last active at 05:00)
    assert.match(await c.cmd('t1', 'THREAD REFERENCES UTF-8 ALL'), /^\* THREAD \(1 \(2\)\(3\)\)\r\n/m);
    assert.match(await c.cmd('t2', 'THREAD REFS UTF-8 ALL'), /^\* THREAD \(3\)\(1 2\)\r\n/m);
    assert.match(await c.cmd('t3', 'UID THREAD REFS UTF-8 NOT SUBJECT "Re:"'), /^\* THREAD \(1\)\r\n/m);
    c.close();
  });
});

void describe('LIST-EXTENDED (RFC 5258) and LSUB', { timeout: 60_000 }, () => {
  void it('lists levels that are no folder, subscriptions that no longer exist, and CHILDINFO', async () => {
    const c = await freshAccount();
    for (const n of ['Fruit/Apple', 'Fruit/Banana', 'Veg', 'Veg/Leek', 'Nut', 'Tmp/Sub'])
      assert.match(await c.cmd('c', `CREATE ${n}`), /^c OK/m);
    for (const n of ['Fruit/Banana', 'Veg', 'Veg/Leek', 'Tmp/Sub'])
      assert.match(await c.cmd('s', `SUBSCRIBE ${n}`), /^s OK/m);
    // the subscription outlives the folder (RFC 3501 §6.3.9)
    assert.match(await c.cmd('d', 'DELETE Tmp/Sub'), /^d OK/m);

    assert.match(await c.cmd('b1', 'LIST (BOGUS) "" "*"'), /^b1 BAD /m);
    assert.match(await c.cmd('b2', 'LIST "" "*" RETURN (BOGUS)'), /^b2 BAD /m);
    assert.match(await c.cmd('b3', 'LIST (RECURSIVEMATCH) "" "%"'), /^b3 BAD /m);
    assert.match(await c.cmd('b4', 'LIST (RECURSIVEMATCH REMOTE) "" "%"'), /^b4 BAD /m);
    assert.match(await c.cmd('b5', 'LIST (REMOTE) "" "Nut"'), /^\* LIST \(\\HasNoChildren\) "\/" "Nut"\r\n/m);

    const subscribed = await c.cmd('l1', 'LIST (SUBSCRIBED) "" "*"');
    assert.match(subscribed, /^\* LIST \(\\Subscribed \\NonExistent \\HasNoChildren\) "\/" "Tmp\/Sub"\r\n/m);
    assert.match(subscribed, /^\* LIST \(\\Subscribed \\HasChildren\) "\/" "Veg"\r\n/m);
    assert.doesNotMatch(subscribed, /"Nut"|"Fruit"/);

    const rec = await c.cmd('l2', 'LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"');
    assert.match(
      rec,
      /^\* LIST \(\\NonExistent \\HasChildren\) "\/" "Fruit" \(CHILDINFO \("SUBSCRIBED"\)\)\r\n/m,
    );
    assert.match(
      rec,
      /^\* LIST \(\\Subscribed \\HasChildren\) "\/" "Veg" \(CHILDINFO \("SUBSCRIBED"\)\)\r\n/m,
    );
    assert.match(
      rec,
      /^\* LIST \(\\NonExistent \\HasChildren\) "\/" "Tmp" \(CHILDINFO \("SUBSCRIBED"\)\)\r\n/m,
    );
    assert.doesNotMatch(rec, /"Nut"/);
    // with "*" the subscribed children match themselves: no entry for the level above
    const recAll = await c.cmd('l3', 'LIST (SUBSCRIBED RECURSIVEMATCH) "" "*"');
    assert.doesNotMatch(recAll, /"Fruit" /);
    assert.match(recAll, /"Veg" \(CHILDINFO \("SUBSCRIBED"\)\)\r\n/);

    // a level above folders that is no folder itself: \Noselect, \NonExistent when extended
    assert.match(
      await c.cmd('l4', 'LIST "" "F%"'),
      /^\* LIST \(\\Noselect \\HasChildren\) "\/" "Fruit"\r\n/m,
    );
    const ext = await c.cmd('l5', 'LIST "" "%" RETURN (SUBSCRIBED STATUS (MESSAGES))');
    assert.match(ext, /^\* LIST \(\\NonExistent \\HasChildren\) "\/" "Fruit"\r\n\* LIST/m);
    assert.doesNotMatch(ext, /STATUS "Fruit"/);
    assert.match(
      ext,
      /^\* LIST \(\\Subscribed \\HasChildren\) "\/" "Veg"\r\n\* STATUS "Veg" \(MESSAGES 0\)/m,
    );

    // LSUB "%" shows the unsubscribed level above a subscribed name as \Noselect
    const lsub = await c.cmd('l6', 'LSUB "" "%"');
    assert.match(lsub, /^\* LSUB \(\\Noselect\) "\/" "Fruit"\r\n/m);
    assert.match(lsub, /^\* LSUB \(\\Noselect\) "\/" "Tmp"\r\n/m);
    assert.match(lsub, /^\* LSUB \(\) "\/" "Veg"\r\n/m);
    assert.doesNotMatch(lsub, /"Nut"/);
    const lsubAll = await c.cmd('l7', 'LSUB "" "*"');
    assert.match(lsubAll, /^\* LSUB \(\) "\/" "Tmp\/Sub"\r\n/m);
    assert.doesNotMatch(lsubAll, /"Fruit" /);
    assert.doesNotMatch(await c.cmd('l8', 'LSUB "" "Tmp"'), /\* LSUB/);
    c.close();
  });
});

void describe('MULTIAPPEND (RFC 3502)', { timeout: 60_000 }, () => {
  void it('appends several messages in one command, all or none', async () => {
    const c = await freshAccount();
    assert.match(await c.cmd('c', 'CAPABILITY'), /\bMULTIAPPEND\b/);
    const m = (i: number) => `Subject: part ${i}\r\n\r\nbody ${i}\r\n`;
    const lit = (i: number) => `{${Buffer.byteLength(m(i))}}`;
    // synchronising literals: each waits for the server's continuation
    c.send(`a1 APPEND INBOX (\\Seen) ${lit(1)}\r\n`);
    await c.until(/^\+ /m);
    c.send(`${m(1)} "06-Jan-2025 10:00:00 +0000" ${lit(2)}\r\n`);
    await c.until(/^\+ /m);
    c.send(`${m(2)} (\\Flagged $Work) ${lit(3)}\r\n`);
    await c.until(/^\+ /m);
    c.send(`${m(3)}\r\n`);
    assert.match(await c.until(/^a1 (OK|NO|BAD)/m), /^a1 OK \[APPENDUID \d+ 1:3\] /m);
    await c.cmd('s', 'SELECT INBOX');
    const f = await c.cmd('f', 'FETCH 1:* (FLAGS INTERNALDATE BODY.PEEK[HEADER.FIELDS (SUBJECT)])');
    assert.match(f, /^\* 1 FETCH \(FLAGS \(\\Seen \\Recent\) .*part 1/ms);
    assert.match(f, /^\* 2 FETCH \(FLAGS \(\\Recent\) INTERNALDATE "06-Jan-2025 10:00:00 \+0000"/m);
    assert.match(f, /^\* 3 FETCH \(FLAGS \(\\Flagged \$Work \\Recent\)/m);

    // a bad second message: nothing of the command is appended
    const good = m(4);
    c.send(`a2 APPEND INBOX {${good.length}+}\r\n${good} "not a date" {${good.length}+}\r\n${good}\r\n`);
    assert.match(await c.until(/^a2 (OK|NO|BAD)/m), /^a2 BAD /m);
    // a missing folder: NO [TRYCREATE], nothing appended anywhere
    c.send(`a3 APPEND Nowhere {${good.length}+}\r\n${good} {${good.length}+}\r\n${good}\r\n`);
    assert.match(await c.until(/^a3 (OK|NO|BAD)/m), /^a3 NO \[TRYCREATE\]/m);
    assert.match(await c.cmd('n', 'NOOP'), /^n OK/m);
    assert.match(await c.cmd('st', 'STATUS INBOX (MESSAGES)'), /MESSAGES 3\)/);
    c.close();
  });
});

void describe('ESORT and PARTIAL (RFC 5267)', { timeout: 60_000 }, () => {
  void it('answers SORT RETURN with ESEARCH in sort order, and pages with PARTIAL', async () => {
    const c = await freshAccount();
    assert.match(await c.cmd('c', 'CAPABILITY'), /\bESORT\b/);
    for (const [i, subject] of ['c', 'a', 'b', 'd', 'e'].entries())
      await append(c, `a${i}`, 'INBOX', msg([`Subject: ${subject}`]));
    await c.cmd('s', 'SELECT INBOX');
    // MIN and MAX are the first and last in sort order; ALL keeps the order
    assert.match(
      await c.cmd('e1', 'SORT RETURN (MIN MAX COUNT ALL) (SUBJECT) UTF-8 ALL'),
      /^\* ESEARCH \(TAG "e1"\) MIN 2 MAX 5 ALL 2:3,1,4:5 COUNT 5\r\n/m,
    );
    assert.match(
      await c.cmd('e2', 'UID SORT RETURN () (SUBJECT) UTF-8 ALL'),
      /^\* ESEARCH \(TAG "e2"\) UID ALL 2:3,1,4:5\r\n/m,
    );
    assert.match(
      await c.cmd('e3', 'SORT RETURN (MIN MAX) (REVERSE SUBJECT) UTF-8 ALL'),
      /^\* ESEARCH \(TAG "e3"\) MIN 5 MAX 2\r\n/m,
    );
    assert.match(
      await c.cmd('e4', 'SORT RETURN (MIN COUNT) (SUBJECT) UTF-8 SUBJECT zzz'),
      /^\* ESEARCH \(TAG "e4"\) COUNT 0\r\n/m,
    );
    assert.match(
      await c.cmd('p1', 'SORT RETURN (PARTIAL 2:3) (SUBJECT) UTF-8 ALL'),
      /^\* ESEARCH \(TAG "p1"\) PARTIAL \(2:3 3,1\)\r\n/m,
    );
    assert.match(
      await c.cmd('p2', 'SORT RETURN (PARTIAL 9:4) (SUBJECT) UTF-8 ALL'),
      /^\* ESEARCH \(TAG "p2"\) PARTIAL \(4:9 4:5\)\r\n/m,
    );
    assert.match(
      await c.cmd('p3', 'SEARCH RETURN (PARTIAL 7:9) ALL'),
      /^\* ESEARCH \(TAG "p3"\) PARTIAL \(7:9 NIL\)\r\n/m,
    );
    assert.match(
      await c.cmd('p4', 'UID SEARCH RETURN (COUNT PARTIAL 2:3) ALL'),
      /^\* ESEARCH \(TAG "p4"\) UID PARTIAL \(2:3 2:3\) COUNT 5\r\n/m,
    );
    for (const bad of [
      'SEARCH RETURN (PARTIAL 0:2) ALL',
      'SEARCH RETURN (PARTIAL -1:-2) ALL',
      'SORT RETURN (PARTIAL 1:2 ALL) (SUBJECT) UTF-8 ALL',
      'SORT RETURN (BOGUS) (SUBJECT) UTF-8 ALL',
    ])
      assert.match(await c.cmd('b', bad), /^b BAD /m, bad);
    c.close();
  });
});

void describe('CONTEXT=SEARCH (RFC 5267)', { timeout: 60_000 }, () => {
  void it('tells an idling client how an open search changes as mail is delivered and flagged elsewhere', async () => {
    const user = await newAccount();
    const selected = async () => {
      const c = await login(user);
      assert.match(await c.cmd('s', 'SELECT INBOX'), /^s OK/m);
      return c;
    };
    const c = await selected();
    assert.match(await c.cmd('cap', 'CAPABILITY'), /CONTEXT=SEARCH/);
    assert.match(
      await c.cmd('u1', 'UID SEARCH RETURN (UPDATE) SUBJECT urgent'),
      /^\* ESEARCH \(TAG "u1"\) UID\r\n/m,
    );
    assert.match(
      await c.cmd('u2', 'SEARCH RETURN (UPDATE COUNT) FLAGGED'),
      /^\* ESEARCH \(TAG "u2"\) COUNT 0\r\n/m,
    );
    c.send('i IDLE\r\n');
    await c.until(/^\+ /m);
    await sendRaw(p, user, 'From: x@remote.example\r\nSubject: urgent: read me\r\n\r\nnow\r\n');
    // the new message enters the open search before its EXISTS
    const arrived = await c.until(/^\* 1 EXISTS/m, 15_000);
    assert.match(arrived, /^\* ESEARCH \(TAG "u1"\) UID ADDTO \(0 1\)\r\n\* 1 EXISTS/m);
    // another session flags it: the second context hears of it, by sequence number
    const other = await selected();
    assert.match(await other.cmd('f', 'STORE 1 +FLAGS.SILENT (\\Flagged)'), /^f OK/m);
    assert.match(await c.until(/^\* ESEARCH \(TAG "u2"\)/m, 15_000), /ADDTO \(0 1\)/);
    c.send('DONE\r\n');
    await c.until(/^i OK/m);
    other.close();
    // a cancelled context says nothing more; past the limit, no context is opened
    assert.match(await c.cmd('x', 'CANCELUPDATE "u1" "u2"'), /^x OK/m);
    for (let i = 0; i < 10; i++) assert.match(await c.cmd(`k${i}`, 'SEARCH RETURN (UPDATE) ALL'), /OK/);
    assert.match(await c.cmd('k10', 'SEARCH RETURN (UPDATE) ALL'), /^k10 OK \[NOUPDATE "k10"\]/m);
    assert.match(await c.cmd('y', 'CANCELUPDATE "u1"'), /^y NO/m);
    c.close();
  });
});

void describe('what the differential scripts cannot see', { timeout: 60_000 }, () => {
  /** Two sessions of one new account, each with INBOX selected and one message in it. */
  async function twoSessions(): Promise<[RawImap, RawImap]> {
    const user = await newAccount();
    const a = await login(user);
    await append(a, 'ap', 'INBOX', msg(['From: a@x', 'Subject: one']));
    assert.match(await a.cmd('s', 'SELECT INBOX'), /^s OK/m);
    const b = await login(user);
    assert.match(await b.cmd('s', 'SELECT INBOX'), /^s OK/m);
    return [a, b];
  }

  /** Where `re` first matches in `out`, -1 when not at all. */
  const at = (out: string, re: RegExp) => out.search(re);

  void it('announces a new keyword in FLAGS and PERMANENTFLAGS before a FETCH shows it (RFC 3501 §7.2.6)', async () => {
    const [a, b] = await twoSessions();
    // set by this session: the FLAGS of the mailbox change first
    const own = await a.cmd('k1', 'STORE 1 +FLAGS ($Project)');
    const flags = at(own, /^\* FLAGS \([^)]*\$Project/m);
    const perm = at(own, /^\* OK \[PERMANENTFLAGS \([^)]*\$Project/m);
    const fetch = at(own, /^\* 1 FETCH \(FLAGS \([^)]*\$Project/m);
    assert.ok(flags >= 0 && perm >= 0 && fetch >= 0, own);
    assert.ok(flags < fetch && perm < fetch, own);
    // set by another session: told at the next NOOP, in the same order
    assert.match(await b.cmd('k2', 'STORE 1 +FLAGS ($Later)'), /^k2 OK/m);
    const other = await a.cmd('n', 'NOOP');
    const flags2 = at(other, /^\* FLAGS \([^)]*\$Later/m);
    const fetch2 = at(other, /^\* 1 FETCH \(FLAGS \([^)]*\$Later/m);
    assert.ok(flags2 >= 0 && fetch2 >= 0 && flags2 < fetch2, other);
    a.close();
    b.close();
  });

  void it('sends an empty part of BINARY as a zero-length literal, not a quoted string (RFC 3516 §4.2)', async () => {
    const c = await freshAccount();
    const mime = [
      'From: a@x',
      'Subject: empty part',
      'MIME-Version: 1.0',
      'Content-Type: multipart/mixed; boundary="b"',
      '',
      '--b',
      'Content-Type: text/plain',
      '',
      'first',
      '--b',
      'Content-Type: application/octet-stream',
      'Content-Transfer-Encoding: base64',
      '',
      '',
      '--b--',
      '',
    ].join('\r\n');
    await append(c, 'ap', 'INBOX', mime);
    assert.match(await c.cmd('s', 'SELECT INBOX'), /^s OK/m);
    const out = await c.cmd('f', 'FETCH 1 (BINARY.PEEK[2] BINARY.SIZE[2])');
    assert.match(out, /BINARY\[2\] ~?\{0\}\r\n/, out);
    assert.match(out, /BINARY\.SIZE\[2\] 0\b/, out);
    c.close();
  });

  void it('refuses BINARY of a part in an unknown Content-Transfer-Encoding with a text a person can read (RFC 3516 §4.3)', async () => {
    const c = await freshAccount();
    const mime = [
      'From: a@x',
      'Subject: uuencoded',
      'MIME-Version: 1.0',
      'Content-Type: multipart/mixed; boundary="b"',
      '',
      '--b',
      'Content-Type: text/plain',
      'Content-Transfer-Encoding: x-uuencode',
      '',
      'begin 644 x',
      'end',
      '--b--',
      '',
    ].join('\r\n');
    await append(c, 'ap', 'INBOX', mime);
    assert.match(await c.cmd('s', 'SELECT INBOX'), /^s OK/m);
    // the scripts compare response codes, not the text: Dovecot's words, not the code again
    for (const item of ['BINARY.PEEK[1]', 'BINARY.SIZE[1]'])
      assert.match(
        await c.cmd('f', `FETCH 1 (${item})`),
        /^f NO \[UNKNOWN-CTE\] Unknown Content-Transfer-Encoding\r\n/m,
      );
    c.close();
  });

  void it('sends no NUL in a literal: each is 0x80 but in BINARY, as Dovecot sends it (RFC 9051 §9 CHAR8)', async () => {
    // a fixture script is text: a NUL in it would make it a binary file
    const c = await freshAccount();
    const mime = ['From: a@x', 'Subject: sub\0ject', '', 'before\0after', ''].join('\r\n');
    c.send(`ap APPEND INBOX ~{${mime.length}+}\r\n${mime}\r\n`);
    assert.match(await c.until(/^ap (OK|NO|BAD)/m), /^ap OK/m);
    assert.match(await c.cmd('s', 'SELECT INBOX'), /^s OK/m);
    for (const item of [
      'BODY.PEEK[TEXT]',
      'BODY.PEEK[1]',
      'RFC822',
      'RFC822.HEADER',
      'BODY.PEEK[HEADER]',
      'ENVELOPE',
    ]) {
      const out = await c.cmd('f', `FETCH 1 (${item})`);
      assert.match(out, /^f OK/m, out);
      assert.ok(!out.includes('\0'), `${item}: ${JSON.stringify(out)}`);
      assert.match(out, /(sub\x80ject|before\x80after)/, `${item}: ${JSON.stringify(out)}`);
    }
    // the sizes are the message's own
    assert.match(
      await c.cmd('f1', 'FETCH 1 (BODY.PEEK[TEXT])'),
      /BODY\[TEXT\] \{14\}\r\nbefore\x80after\r\n\)/,
    );
    // BINARY sends the content as it is, in a literal8 (RFC 3516 §4.2)
    assert.match(await c.cmd('f2', 'FETCH 1 (BINARY.PEEK[1])'), /BINARY\[1\] ~\{14\}\r\nbefore\0after\r\n\)/);
    c.close();
  });

  void it('reads a search string sent as a literal in the charset SEARCH or SORT names', async () => {
    const c = await freshAccount();
    await append(c, 'a1', 'INBOX', msg(['From: a@x', 'Subject: =?utf-8?q?K=C3=B6ln?=']));
    await append(c, 'a2', 'INBOX', msg(['From: b@x', 'Subject: =?koi8-r?b?7M/OxM/O?=']));
    await append(c, 'a3', 'INBOX', msg(['From: c@x', 'Subject: Kln']));
    assert.match(await c.cmd('s', 'SELECT INBOX'), /^s OK/m);
    /** `command {n}` with `bytes` as its literal, then `rest`; the whole answer. */
    const literal = async (tag: string, command: string, bytes: Buffer, rest = '') => {
      c.send(`${tag} ${command} {${bytes.length}+}\r\n`);
      c.send(Buffer.concat([bytes, Buffer.from(`${rest}\r\n`)]));
      return c.until(new RegExp(`^${tag} (OK|NO|BAD)`, 'm'));
    };
    // "Köln" in ISO-8859-1: ö is the one octet F6
    const latin1 = Buffer.from('Köln', 'latin1');
    assert.match(await literal('f1', 'SEARCH CHARSET ISO-8859-1 SUBJECT', latin1), /^\* SEARCH 1\r\n/m);
    assert.match(await literal('f2', 'UID SORT (SUBJECT) WINDOWS-1252 SUBJECT', latin1), /^\* SORT 1\r\n/m);
    // "Лондон" in KOI8-R
    const koi8 = Buffer.from([0xec, 0xcf, 0xce, 0xc4, 0xcf, 0xce]);
    assert.match(await literal('f3', 'SEARCH CHARSET KOI8-R SUBJECT', koi8), /^\* SEARCH 2\r\n/m);
    // a quoted string is UTF-8 whatever the charset (RFC 9051 §9 quoted)
    assert.match(await c.cmd('f4', 'SEARCH CHARSET ISO-8859-1 SUBJECT "Köln"'), /^\* SEARCH 1\r\n/m);
    // once UTF8=ACCEPT is on, strings are UTF-8 and no other charset is taken (RFC 6855 §3)
    assert.match(await c.cmd('u', 'ENABLE UTF8=ACCEPT'), /^\* ENABLED UTF8=ACCEPT/m);
    assert.match(await c.cmd('u1', 'SEARCH CHARSET ISO-8859-1 ALL'), /^u1 NO \[BADCHARSET /m);
    assert.match(await c.cmd('u2', 'SORT (SUBJECT) KOI8-R ALL'), /^u2 NO \[BADCHARSET /m);
    assert.match(await c.cmd('u3', 'SEARCH CHARSET UTF-8 SUBJECT "Köln"'), /^\* SEARCH 1\r\n/m);
    c.close();
  });

  void it('shows no \\Recent and no RECENT to an IMAP4rev2 session, which Dovecot 2.3 does not offer (RFC 9051 §2.3.2)', async () => {
    const [a, b] = await twoSessions();
    assert.match(await b.cmd('e', 'ENABLE IMAP4rev2'), /^\* ENABLED IMAP4rev2/m);
    const sel = await b.cmd('s2', 'SELECT INBOX');
    assert.doesNotMatch(sel, /RECENT/, sel);
    await append(a, 'ap2', 'INBOX', msg(['From: a@x', 'Subject: two']));
    const noop = await b.cmd('n', 'NOOP');
    assert.match(noop, /^\* 2 EXISTS/m);
    assert.doesNotMatch(noop, /RECENT/, noop);
    const flags = await b.cmd('f', 'FETCH 1:* FLAGS');
    assert.doesNotMatch(flags, /\\Recent/, flags);
    a.close();
    b.close();
  });
});

void describe('APPEND answered before its literal is sent (RFC 9051 §7.5)', { timeout: 60_000 }, () => {
  /** What comes back for a synchronising literal: "+" asking for it, or the tagged reply. */
  const answer = (c: RawImap, tag: string) => c.until(new RegExp(`^(\\+ |${tag} (OK|NO|BAD))`, 'm'));

  void it('refuses a folder that does not exist at once, with no continuation, as Dovecot does', async () => {
    const c = await freshAccount();
    c.send('a1 APPEND nosuch (\\Seen) {5}\r\n');
    const out = await answer(c, 'a1');
    assert.match(out, /^a1 NO \[TRYCREATE\]/m, out);
    // the client sends none of the literal: its next line is a command
    assert.match(await c.cmd('a2', 'NOOP'), /^a2 OK/m);

    // the folder's name as a literal: refused at the message's literal
    c.send('a3 APPEND {6}\r\n');
    assert.match(await answer(c, 'a3'), /^\+ /m);
    c.send('nosuch {5}\r\n');
    const named = await answer(c, 'a3');
    assert.match(named, /^a3 NO \[TRYCREATE\]/m, named);

    // a non-synchronising literal is on its way: read and dropped, never run as commands
    c.send('a4 APPEND nosuch {11+}\r\na5 LOGOUT\r\n\r\n');
    assert.match(await c.until(/^a4 (OK|NO|BAD)/m), /^a4 NO \[TRYCREATE\]/m);
    assert.match(await c.cmd('a6', 'NOOP'), /^a6 OK/m);

    // the folder made by the command before, pipelined: checked once that command ran
    const m = msg(['From: a@x', 'Subject: later']);
    c.send(`a7 CREATE Later\r\na8 APPEND Later {${m.length}}\r\n`);
    const asked = await answer(c, 'a8');
    assert.match(asked, /^a7 OK[^]*^\+ /m, asked);
    c.send(`${m}\r\n`);
    assert.match(await c.until(/^a8 (OK|NO|BAD)/m), /^a8 OK \[APPENDUID /m);
    c.close();
  });

  void it('refuses a message the quota has no room for at once, MULTIAPPEND counting the messages before', async () => {
    const user = await newAccount();
    await new Quotas(p.redis.redis, 0).set(user, 1000);
    const c = await login(user);
    c.send('q1 APPEND INBOX {2000}\r\n');
    const out = await answer(c, 'q1');
    assert.match(out, /^q1 NO \[OVERQUOTA\]/m, out);
    assert.match(await c.cmd('q2', 'NOOP'), /^q2 OK/m);

    // each message fits, both together do not: refused at the second's literal
    const m = msg(['From: a@x', 'Subject: half', '', 'x'.repeat(560)]);
    c.send(`q3 APPEND INBOX {${m.length}}\r\n`);
    assert.match(await answer(c, 'q3'), /^\+ /m);
    c.send(`${m} {${m.length}}\r\n`);
    const second = await answer(c, 'q3');
    assert.match(second, /^q3 NO \[OVERQUOTA\]/m, second);
    assert.match(await c.cmd('q4', 'STATUS INBOX (MESSAGES)'), /MESSAGES 0\)/);
    c.close();
  });
});
