// IMAP extensions and the RFC 5256 / RFC 5258 details a client sees, driven by a raw
// client on loopback. The expected answers are Dovecot 2.3's for the same commands,
// except where a comment says the RFC is followed instead.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { addAccount, startPlatform, type Platform } from '../../../test/harness.js';
import { PASSWORD, startRetrieval, type Retrieval } from './helpers.js';
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

/** A client logged in to an account of its own (nothing else in it but the defaults). */
async function freshAccount(): Promise<RawImap> {
  const user = `ext${++accounts}@example.test`;
  await addAccount(p.directory, user);
  const c = await RawImap.connect(r.ports.imap);
  await c.until(/^\* OK/m);
  assert.match(await c.cmd('l', `LOGIN ${user} "${PASSWORD}"`), /^l OK/m);
  return c;
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
