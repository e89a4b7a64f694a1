import assert from 'node:assert/strict';
import { isAscii } from 'node:buffer';
import { Resolver } from 'node:dns/promises';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import nodemailer from 'nodemailer';
import { DkimKeyStore, dnsRecord, generateDkimKey } from '@mailyard/dkim';
import { RawSmtp, waitFor } from '@mailyard/testkit';
import { addAccount } from '../../../test/harness.js';
import { PASSWORD, python, queueIdOf, startMsaTestbed, type MsaTestbed } from './msa-harness.js';

let t: MsaTestbed;

before(async () => {
  t = await startMsaTestbed({
    proxyBroker: true,
    platform: {
      zone: {
        'remote.test': { MX: [{ priority: 10, exchange: 'mx.remote.test' }] },
        'mx.remote.test': { A: ['127.0.0.1'] },
        'aonly.test': { A: ['192.0.2.1'] },
        'v6only.test': { AAAA: ['2001:db8::1'] },
        'nomail.test': { TXT: ['v=spf1 -all'] },
        'nullmx.test': { MX: [{ priority: 0, exchange: '.' }], A: ['192.0.2.2'] },
        'broken.test': { SERVFAIL: true },
      },
    },
  });
  await addAccount(t.p.directory, 'alice@example.test');
  await addAccount(t.p.directory, 'bob@example.test');
  await addAccount(t.p.directory, 'sig@signed.test');
  await t.p.directory.addAlias('team@example.test', ['alice@example.test', 'bob@example.test']);
  await t.p.directory.addAlias('all@example.test', ['team@example.test']);
  await t.p.directory.addAlias('@example.test', ['bob@example.test']);
});
after(() => t.close());

const plain = (user: string) => Buffer.from(`\0${user}\0${PASSWORD}`).toString('base64');

/** An authenticated session on 587 (STARTTLS, AUTH PLAIN) on a given MSA port. */
async function session(user = 'alice@example.test', port = t.msa.ports.submission): Promise<RawSmtp> {
  const c = await RawSmtp.connect(port);
  assert.equal((await c.read()).code, 220);
  await c.cmd('EHLO laptop.example.net');
  assert.equal((await c.cmd('STARTTLS')).code, 220);
  await c.startTls();
  await c.cmd('EHLO laptop.example.net');
  assert.match((await c.cmd(`AUTH PLAIN ${plain(user)}`)).text, /^235 /);
  return c;
}

/** Sends `raw` (CRLF lines, no final dot) in an open session; returns the reply to the end of data. */
async function data(c: RawSmtp, raw: string) {
  assert.equal((await c.cmd('DATA')).code, 354);
  c.write(raw + '.\r\n');
  return c.read();
}

describe('greeting', () => {
  test('says ESMTP once, on 587 and on 465', { timeout: 10_000 }, async () => {
    for (const c of [
      await RawSmtp.connect(t.msa.ports.submission),
      await RawSmtp.connectTls(t.msa.ports.submissions),
    ]) {
      assert.equal((await c.read()).text, '220 submit.mailyard.test ESMTP Mailyard submission');
      c.close();
    }
  });
});

describe('sender restrictions', () => {
  test("MAIL FROM another user's address: 553 5.7.1", async () => {
    const c = await session();
    const r = await c.cmd('MAIL FROM:<bob@example.test>');
    assert.equal(
      r.text,
      '553 5.7.1 <bob@example.test>: Sender address rejected: not owned by user alice@example.test',
    );
    assert.match((await c.cmd('MAIL FROM:<>')).text, /^553 5\.7\.1 /);
    assert.match((await c.cmd('MAIL FROM:<someone@elsewhere.test>')).text, /^553 5\.7\.1 /);
    // a catch-all target does not own the domain's addresses
    const b = await session('bob@example.test');
    assert.match((await b.cmd('MAIL FROM:<anything@example.test>')).text, /^553 5\.7\.1 /);
    c.close();
    b.close();
  });

  test('own address, plus-address, alias and nested alias are allowed', async () => {
    const c = await session();
    for (const from of [
      'alice@example.test',
      'Alice+lists@Example.TEST',
      'team@example.test',
      'all@example.test',
    ]) {
      assert.equal((await c.cmd(`MAIL FROM:<${from}>`)).code, 250, from);
      await c.cmd('RSET');
    }
    c.close();
  });

  test('From: header of another user: 550 5.7.1 after DATA; an alias in From: is accepted', async () => {
    const c = await session();
    await c.cmd('MAIL FROM:<alice@example.test>');
    await c.cmd('RCPT TO:<bob@example.test>');
    const r = await data(c, 'From: Bob <bob@example.test>\r\nSubject: spoof\r\n\r\nhi\r\n');
    assert.match(r.text, /^550 5\.7\.1 <bob@example\.test>: From: header address rejected/);
    await c.cmd('MAIL FROM:<alice@example.test>');
    await c.cmd('RCPT TO:<bob@example.test>');
    const two = await data(c, 'From: alice@example.test, bob@example.test\r\nSubject: two\r\n\r\nhi\r\n');
    assert.match(two.text, /^550 5\.7\.1 <bob@example\.test>/);
    await c.cmd('MAIL FROM:<alice@example.test>');
    await c.cmd('RCPT TO:<bob@example.test>');
    const sender = await data(c, 'From: alice@example.test\r\nSender: bob@example.test\r\n\r\nhi\r\n');
    assert.match(sender.text, /^550 5\.7\.1 /);
    await c.cmd('MAIL FROM:<alice@example.test>');
    await c.cmd('RCPT TO:<bob@example.test>');
    const ok = await data(c, 'From: "The Team" <team@example.test>\r\nSubject: alias\r\n\r\nhi\r\n');
    assert.match(ok.text, /^250 2\.0\.0 Ok: queued as /);
    c.close();
  });
});

describe('recipient checks', () => {
  const cases: [string, RegExp][] = [
    ['someone@remote.test', /^250 /],
    ['someone@aonly.test', /^250 /],
    ['someone@v6only.test', /^250 /],
    ['someone@nomail.test', /^550 5\.1\.2 /],
    ['someone@nullmx.test', /^550 5\.1\.2 /],
    ['someone@does-not-exist.test', /^550 5\.1\.2 /],
    ['someone@broken.test', /^450 4\.4\.3 /],
    ['someone@bad..domain', /^501 5\.1\.3 /],
    ['no-at-sign', /^501 5\.1\.3 /],
    ['user%other.test@remote.test', /^501 5\.1\.3 /],
    ['@relay.test,@other.test:someone@remote.test', /^501 5\.1\.3 /], // source route
    ['ghost@signed.test', /^550 5\.1\.1 /],
    ['anyone@example.test', /^250 /], // catch-all
  ];
  for (const [rcpt, want] of cases) {
    test(`RCPT TO:<${rcpt}>`, async () => {
      const c = await session();
      await c.cmd('MAIL FROM:<alice@example.test>');
      const r = await c.cmd(`RCPT TO:<${rcpt}>`);
      assert.match(r.text, want);
      c.close();
    });
  }

  test('RCPT TO:<postmaster> without a domain reaches postmaster of the local domain', async () => {
    // myhostname is submit.mailyard.test: its domain's postmaster, as on port 25
    await t.p.directory.addDomain('mailyard.test');
    await t.p.directory.addAlias('postmaster@mailyard.test', ['alice@example.test']);
    // RFC 5321 §4.5.1: smtplib sends the bare name as written
    const res = await python<{ rcpt: string; data: string }>(
      `
s = smtplib.SMTP('127.0.0.1', port, timeout=10)
s.starttls(context=ctx)
s.login(args['user'], args['password'])
s.mail(args['user'])
code, msg = s.rcpt('PostMaster')
rcpt = '%d %s' % (code, msg.decode())
data = ''
if code == 250:
    code, msg = s.data(b'From: bob@example.test\\r\\nSubject: to the bare postmaster\\r\\n\\r\\nhi\\r\\n')
    data = '%d %s' % (code, msg.decode())
s.quit()
out({'rcpt': rcpt, 'data': data})
`,
      t.msa.ports.submission,
      { user: 'bob@example.test', password: PASSWORD },
    );
    assert.match(res.rcpt, /^250 /);
    assert.match(res.data, /^250 /);
    const id = queueIdOf(res.data);
    const file = await waitFor(() =>
      t.p.inbox('alice@example.test').find((f) => readFileSync(f, 'utf8').includes(`id ${id}`)),
    );
    const text = readFileSync(file, 'utf8');
    // through the postmaster alias of myhostname's domain
    assert.match(text, /\tfor <postmaster@mailyard\.test>;/);
    assert.ok(text.includes('Subject: to the bare postmaster'));
  });
});

describe('messages', () => {
  test('RFC 6409 fix-ups: Date and Message-ID added, Bcc removed, the rest byte-identical', async () => {
    const headers =
      'Subject: fix-ups\r\n' +
      'From: Alice <alice@example.test>\r\n' +
      'To: bob@remote.test\r\n' +
      'X-Spacing:   odd   spacing \r\n' +
      'X-Folded: first\r\n\tsecond\r\n';
    const bcc = 'Bcc: hidden@remote.test,\r\n  other@remote.test\r\n';
    const body = 'line one\r\n..leading dot\r\n\r\nlast line\r\n';
    const c = await session();
    await c.cmd('MAIL FROM:<alice@example.test>');
    await c.cmd('RCPT TO:<bob@remote.test>');
    await c.cmd('RCPT TO:<hidden@remote.test>');
    const r = await data(c, headers.replace('To:', bcc + 'To:') + '\r\n' + body);
    c.close();
    const queueId = queueIdOf(r.text);
    const { body: stored } = await t.takeOutbound(queueId);
    const text = stored.toString('utf8');
    const start = text.indexOf('Subject: fix-ups');
    const sep = text.indexOf('\r\n\r\n');
    const ours = text.slice(start, sep + 2);
    assert.ok(!/^Bcc:/im.test(text), 'Bcc still there');
    assert.ok(ours.startsWith(headers), `headers changed:\n${ours}`);
    const added = ours.slice(headers.length);
    assert.match(
      added,
      /^Date: (Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d \+0000\r\nMessage-ID: <[^>\s]+@submit\.mailyard\.test>\r\n$/,
    );
    assert.equal(text.slice(sep + 4), body.replace('..leading', '.leading'));
  });

  test('existing Date and Message-ID are kept; a missing From is added from MAIL FROM', async () => {
    const c = await session();
    await c.cmd('MAIL FROM:<alice@example.test>');
    await c.cmd('RCPT TO:<bob@remote.test>');
    const r = await data(
      c,
      'Date: Thu, 26 Nov 2026 10:00:00 +0100\r\nMessage-ID: <keep@example.test>\r\n\r\nx\r\n',
    );
    c.close();
    const text = (await t.takeOutbound(queueIdOf(r.text))).body.toString();
    assert.equal(text.match(/^Date:/gm)?.length, 1);
    assert.ok(text.includes('Message-ID: <keep@example.test>\r\n'));
    assert.equal(text.match(/^Message-ID:/gim)?.length, 1);
    assert.ok(text.includes('From: <alice@example.test>\r\n'));
  });

  test('the Received header names neither client IP nor host name unless configured', async () => {
    const c = await session();
    await c.cmd('MAIL FROM:<alice@example.test>');
    await c.cmd('RCPT TO:<bob@remote.test>');
    const r = await data(c, 'From: alice@example.test\r\nSubject: privacy\r\n\r\nx\r\n');
    c.close();
    const id = queueIdOf(r.text);
    const text = (await t.takeOutbound(id)).body.toString();
    const received = /^Received: [^]*?;[^\r]*\r\n/m.exec(text)?.[0] ?? '';
    assert.match(
      received,
      new RegExp(
        `^Received: from unknown\\r\\n\\t\\(using TLSv1\\.[23] with cipher [^)]+\\)\\r\\n\\tby submit\\.mailyard\\.test \\(Mailyard\\) with ESMTPSA id ${id}\\r\\n\\tfor <bob@remote\\.test>; `,
      ),
    );
    assert.ok(!text.includes('127.0.0.1'), 'client IP leaked');
    assert.ok(!text.includes('laptop.example.net'), 'client EHLO name leaked');

    const open = await t.another({ submission_received_client: true });
    const d = await session('alice@example.test', open.ports.submission);
    await d.cmd('MAIL FROM:<alice@example.test>');
    await d.cmd('RCPT TO:<bob@remote.test>');
    const r2 = await data(d, 'From: alice@example.test\r\nSubject: open\r\n\r\nx\r\n');
    d.close();
    const text2 = (await t.takeOutbound(queueIdOf(r2.text))).body.toString();
    assert.match(text2, /^Received: from laptop\.example\.net \([^)]* \[127\.0\.0\.1\]\)\r\n/);
  });

  test('local recipients reach the Maildir through the delivery service', async () => {
    const transport = nodemailer.createTransport({
      host: '127.0.0.1',
      port: t.msa.ports.submission,
      requireTLS: true,
      tls: { rejectUnauthorized: false },
      auth: { user: 'bob@example.test', pass: PASSWORD },
    });
    const info = await transport.sendMail({
      from: 'Bob <bob@example.test>',
      to: 'alice@example.test',
      subject: 'to a local mailbox',
      text: 'see you',
    });
    transport.close();
    const id = queueIdOf(info.response);
    const file = await waitFor(() =>
      t.p.inbox('alice@example.test').find((f) => readFileSync(f, 'utf8').includes(`id ${id}`)),
    );
    const text = readFileSync(file, 'utf8');
    assert.ok(text.startsWith('Return-Path: <bob@example.test>\r\nDelivered-To: alice@example.test\r\n'));
    assert.ok(text.includes('Subject: to a local mailbox'));
  });

  test('remote recipients land in `outbound` with the envelope; local ones do not', async () => {
    const c = await session();
    await c.cmd('MAIL FROM:<alice+news@example.test>');
    await c.cmd('RCPT TO:<bob@remote.test>');
    await c.cmd('RCPT TO:<bob@example.test>');
    await c.cmd('RCPT TO:<carol@aonly.test>');
    const r = await data(c, 'From: alice@example.test\r\nSubject: split\r\n\r\nx\r\n');
    c.close();
    const id = queueIdOf(r.text);
    const { envelope } = await t.takeOutbound(id);
    assert.equal(envelope.queueId, id);
    assert.equal(envelope.mailFrom, 'alice+news@example.test');
    assert.deepEqual(envelope.recipients, ['bob@remote.test', 'carol@aonly.test']);
    assert.equal(envelope.client.user, 'alice@example.test');
    assert.equal(envelope.attempts, 0);
    assert.ok(envelope.client.tls);
    await waitFor(() =>
      t.p.inbox('bob@example.test').some((f) => readFileSync(f, 'utf8').includes(`id ${id}`)),
    );
  });
});

describe('limits and line endings', () => {
  test('a message over message_size_limit: 552 5.3.4', async () => {
    const small = await t.another({ message_size_limit: 4096 });
    const c = await session('alice@example.test', small.ports.submission);
    assert.match((await c.cmd('MAIL FROM:<alice@example.test> SIZE=99999')).text, /^552 5\.3\.4 /);
    await c.cmd('MAIL FROM:<alice@example.test>');
    await c.cmd('RCPT TO:<bob@remote.test>');
    const r = await data(c, 'From: alice@example.test\r\n\r\n' + 'x'.repeat(990).concat('\r\n').repeat(6));
    assert.match(r.text, /^552 5\.3\.4 /);
    c.close();
  });

  test(
    'more recipients than the queue can carry: 452 4.5.3 for the rest, the others queued',
    { timeout: 120_000 },
    async () => {
      const c = await session();
      await c.cmd('MAIL FROM:<alice@example.test>');
      // a local recipient too: the envelope then lists every address twice
      assert.equal((await c.cmd('RCPT TO:<bob@example.test>')).code, 250);
      const taken: string[] = [];
      for (let i = 0; i < 999; i++) {
        const rcpt = `member-${i}-of-the-project-list@remote.test`;
        const r = await c.cmd(`RCPT TO:<${rcpt}>`);
        if (r.code !== 250) {
          // RFC 5321 §4.5.3.1.10: the client sends the rest in another transaction
          assert.match(r.text, /^452 4\.5\.3 /, `RCPT ${i}`);
          break;
        }
        taken.push(rcpt);
      }
      // what was taken is queued: never a 451 the client would repeat for ever
      const r = await data(c, 'From: alice@example.test\r\nSubject: a long list\r\n\r\nx\r\n');
      c.close();
      assert.match(r.text, /^250 /);
      assert.ok(taken.length > 500 && taken.length < 999, `${taken.length} taken`);
      const { envelope } = await t.takeOutbound(queueIdOf(r.text));
      assert.deepEqual(envelope.recipients, taken);
    },
  );

  test('bare LF before a dot line: 554 5.6.0; other bare LFs become CRLF', async () => {
    const c = await session();
    await c.cmd('MAIL FROM:<alice@example.test>');
    await c.cmd('RCPT TO:<bob@remote.test>');
    const r = await data(c, 'From: alice@example.test\r\n\r\nhello\n.\nRCPT TO:<x@remote.test>\r\n');
    assert.match(r.text, /^554 5\.6\.0 /);
    await c.cmd('MAIL FROM:<alice@example.test>');
    await c.cmd('RCPT TO:<bob@remote.test>');
    const ok = await data(c, 'From: alice@example.test\r\n\r\none\ntwo\r\n');
    c.close();
    const text = (await t.takeOutbound(queueIdOf(ok.text))).body.toString('latin1');
    assert.ok(text.endsWith('\r\n\r\none\r\ntwo\r\n'), JSON.stringify(text.slice(-40)));
  });
});

describe('DKIM', () => {
  test('rsa-sha256 and ed25519-sha256 signatures verify with mailauth', async () => {
    const store = new DkimKeyStore(t.p.redis.redis);
    for (const [selector, algo] of [
      ['rsa1', 'rsa'],
      ['ed1', 'ed25519'],
    ] as const) {
      const key = await store.add('signed.test', selector, generateDkimKey(algo));
      const rec = dnsRecord('signed.test', selector, key);
      t.p.dns.set(rec.name, { TXT: [rec.value] });
    }
    const c = await session('sig@signed.test');
    await c.cmd('MAIL FROM:<sig@signed.test>');
    await c.cmd('RCPT TO:<bob@remote.test>');
    await c.cmd('RCPT TO:<alice@example.test>');
    const r = await data(
      c,
      'From: Sig <sig@signed.test>\r\nTo: bob@remote.test\r\nSubject: signed\r\nBcc: x@remote.test\r\n\r\nbody\r\n',
    );
    c.close();
    const id = queueIdOf(r.text);
    const { body } = await t.takeOutbound(id);
    const text = body.toString();
    assert.match(text, /^DKIM-Signature: [^]*a=rsa-sha256/);
    assert.match(text, /a=ed25519-sha256/);
    const res = new Resolver();
    res.setServers([t.p.env.DNS_SERVERS!]);
    const verify = async (message: Buffer) => {
      const verified = await dkimVerify(message, {
        resolver: (name: string, type: string) => res.resolve(name, type) as Promise<string[][]>,
      });
      assert.equal(verified.results.length, 2, JSON.stringify(verified.results));
      for (const x of verified.results) {
        assert.equal(x.status.result, 'pass', JSON.stringify(x.status));
        assert.equal(x.signingDomain, 'signed.test');
      }
      assert.deepEqual(verified.results.map((x) => x.selector).sort(), ['ed1', 'rsa1']);
    };
    // as queued for the outbound relay, and as filed in a local mailbox (after delivery's own headers)
    await verify(body);
    const file = await waitFor(() =>
      t.p.inbox('alice@example.test').find((f) => readFileSync(f, 'utf8').includes(`id ${id}`)),
    );
    await verify(readFileSync(file));
  });

  test('a domain without keys is sent unsigned', async () => {
    const c = await session();
    await c.cmd('MAIL FROM:<alice@example.test>');
    await c.cmd('RCPT TO:<bob@remote.test>');
    const r = await data(c, 'From: alice@example.test\r\n\r\nx\r\n');
    c.close();
    assert.ok(!(await t.takeOutbound(queueIdOf(r.text))).body.toString().includes('DKIM-Signature'));
  });
});

describe('8-bit mail made 7 bit before signing', () => {
  const user = 'fwd@forward.test';
  before(async () => {
    await addAccount(t.p.directory, user);
    const key = await new DkimKeyStore(t.p.redis.redis).add(
      'forward.test',
      'ed1',
      generateDkimKey('ed25519'),
    );
    const rec = dnsRecord('forward.test', 'ed1', key);
    t.p.dns.set(rec.name, { TXT: [rec.value] });
  });

  /** Submits `raw` under BODY=8BITMIME and takes what was queued for the relay. */
  async function submitted(raw: string): Promise<string> {
    const c = await session(user);
    assert.equal((await c.cmd(`MAIL FROM:<${user}> BODY=8BITMIME`)).code, 250);
    assert.equal((await c.cmd('RCPT TO:<bob@remote.test>')).code, 250);
    const r = await data(c, raw);
    c.close();
    assert.equal(r.code, 250, r.text);
    return (await t.takeOutbound(queueIdOf(r.text))).body.toString('latin1');
  }

  // a clear-signed message as a MUA forwards it: an attachment, itself 7 bit as RFC 3156 §3 asks
  const signedMessage =
    'From: someone@remote.test\r\nSubject: signed elsewhere\r\nMIME-Version: 1.0\r\n' +
    'Content-Type: multipart/signed; micalg=pgp-sha256;\r\n protocol="application/pgp-signature"; boundary="s1"\r\n\r\n' +
    '--s1\r\nContent-Type: text/plain\r\n\r\nsigned text\r\n' +
    '--s1\r\nContent-Type: application/pgp-signature\r\n\r\n' +
    '-----BEGIN PGP SIGNATURE-----\r\n\r\niQEzBAEBCAAdFiEE\r\n-----END PGP SIGNATURE-----\r\n--s1--\r\n';

  test('a message forwarding a signed one is still converted, the signed one left as it is', async () => {
    const got = await submitted(
      `From: ${user}\r\nTo: bob@remote.test\r\nSubject: forwarded\r\nMIME-Version: 1.0\r\n` +
        'Content-Type: multipart/mixed; boundary="m1"\r\n\r\n' +
        '--m1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n' +
        'Grüße, see the message below\r\n' +
        `--m1\r\nContent-Type: message/rfc822\r\n\r\n${signedMessage}--m1--\r\n`,
    );
    assert.ok(isAscii(Buffer.from(got, 'latin1')), 'converted to 7 bit');
    assert.match(got, /^Content-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC=C3=9Fe/m);
    assert.ok(got.includes(signedMessage), 'the forwarded signed message is unchanged');
  });

  test('a message the user signed is not changed, whatever the case and folding of its Content-Type', async () => {
    const signedPart =
      'Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße, signiert\r\n';
    const raw =
      `From: ${user}\r\nTo: bob@remote.test\r\nSubject: signed\r\nMIME-Version: 1.0\r\n` +
      'Content-Type:\r\n Multipart/Signed (PGP/MIME);\r\n\tmicalg=pgp-sha256; protocol="application/pgp-signature";\r\n boundary="b1"\r\n\r\n' +
      `--b1\r\n${signedPart}--b1\r\nContent-Type: application/pgp-signature\r\n\r\n` +
      '-----BEGIN PGP SIGNATURE-----\r\n\r\niQEzBAEBCAAdFiEE\r\n-----END PGP SIGNATURE-----\r\n--b1--\r\n';
    const got = await submitted(raw);
    const latin1 = (text: string) => Buffer.from(text).toString('latin1');
    const body = raw.slice(raw.indexOf('\r\n\r\n'));
    assert.ok(got.endsWith(latin1(body)), 'the body is as it was written, 8 bit');
    assert.ok(got.includes('Content-Type:\r\n Multipart/Signed (PGP/MIME);\r\n'));
  });
});

describe('broker', () => {
  test('broker unavailable: 451 4.3.0, never 250', async () => {
    const c = await session();
    await c.cmd('MAIL FROM:<alice@example.test>');
    await c.cmd('RCPT TO:<bob@example.test>');
    t.brokerProxy!.cut();
    await waitFor(() => !t.rt.bus.connected, { what: 'the bus to notice the broker is gone' });
    const r = await data(c, 'From: alice@example.test\r\nSubject: no broker\r\n\r\nx\r\n');
    assert.match(r.text, /^451 4\.3\.0 /);
    c.close();
    t.brokerProxy!.restore();
    await t.rt.bus.waitConnected(15_000);
  });

  test('/metrics counts submissions, rejections by reason and signatures', async () => {
    const body = await (await fetch(`http://127.0.0.1:${t.rt.httpPort}/metrics`)).text();
    for (const re of [
      /mailyard_msa_submissions_total [1-9]/,
      /mailyard_msa_recipients_total\{route="outbound"\} [1-9]/,
      /mailyard_msa_recipients_total\{route="delivery"\} [1-9]/,
      /mailyard_msa_rejections_total\{reason="sender_login_mismatch"\} [1-9]/,
      /mailyard_msa_rejections_total\{reason="header_from_mismatch"\} [1-9]/,
      /mailyard_msa_rejections_total\{reason="no_mx_domain"\} [1-9]/,
      /mailyard_msa_rejections_total\{reason="queue_unavailable"\} [1-9]/,
      /mailyard_msa_dkim_signatures_total\{algorithm="ed25519-sha256"\} [1-9]/,
      /mailyard_msa_dkim_signatures_total\{algorithm="rsa-sha256"\} [1-9]/,
    ]) {
      assert.ok(re.test(body), `missing ${String(re)}`);
    }
  });
});
