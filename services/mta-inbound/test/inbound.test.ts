import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import nodemailer from 'nodemailer';
import { addAccount, startPlatform, type Platform } from '../../../test/harness.js';
import { RawSmtp, waitFor } from '@mailyard/testkit';

let p: Platform;
const port = () => p.inbound.port;

before(async () => {
  p = await startPlatform({
    inbound: {
      mynetworks: '127.0.0.1/32',
      relay_domains: 'relayed.test',
      smtpd_recipient_limit: 3,
      message_size_limit: 64 * 1024,
      // room for one message of nearly the size limit, not two (see "limits")
      smtpd_data_memory_limit: 100 * 1024,
      smtpd_hard_error_limit: 5,
    },
    zone: {
      '5.0.0.127.in-addr.arpa': { PTR: ['client.example.net'] },
      'client.example.net': { A: ['127.0.0.5'] },
    },
  });
  await addAccount(p.directory, 'alice@example.test');
  await addAccount(p.directory, 'bob@example.test');
  await p.directory.addAlias('team@example.test', ['alice@example.test', 'bob@example.test']);
});
after(() => p.close());

/** A session from 127.0.0.1 (in mynetworks) or, with `outside`, from 127.0.0.2 (not). */
async function session(outside = false): Promise<RawSmtp> {
  const c = await RawSmtp.connect(port(), '127.0.0.1', outside ? { localAddress: '127.0.0.2' } : {});
  assert.equal((await c.read()).code, 220);
  assert.equal((await c.cmd('EHLO client.example.net')).code, 250);
  return c;
}

describe('EHLO', () => {
  test(
    'greets as "<myhostname> ESMTP Mailyard", ESMTP said once (RFC 5321 §4.2)',
    { timeout: 10_000 },
    async () => {
      const c = await RawSmtp.connect(port());
      assert.equal((await c.read()).text, '220 mx.mailyard.test ESMTP Mailyard');
      c.close();
    },
  );

  test('advertises the extensions of a modern MTA', async () => {
    const c = await RawSmtp.connect(port());
    await c.read();
    const r = await c.cmd('EHLO client.example.net');
    for (const ext of [
      'PIPELINING',
      '8BITMIME',
      'SMTPUTF8',
      'SIZE 65536',
      'ENHANCEDSTATUSCODES',
      'STARTTLS',
    ]) {
      assert.ok(
        r.lines.some((l) => l.slice(4) === ext),
        `missing ${ext} in ${r.text}`,
      );
    }
    assert.ok(!r.lines.some((l) => l.includes('AUTH')), 'port 25 must not offer AUTH');
    c.close();
  });
});

describe('delivery to a Maildir', () => {
  test('a message sent with nodemailer arrives byte-exact with trace headers', async () => {
    const transport = nodemailer.createTransport({
      host: '127.0.0.1',
      port: port(),
      secure: false,
      name: 'client.example.net',
      localAddress: '127.0.0.5',
      tls: { rejectUnauthorized: false },
    });
    const raw =
      'From: Sender <sender@remote.test>\r\nTo: alice@example.test\r\nSubject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\n' +
      'MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n' +
      'Grüße aus Köln\r\n.leading dot line\r\nend\r\n';
    const info = await transport.sendMail({
      envelope: { from: 'sender@remote.test', to: ['alice@example.test'] },
      raw,
    });
    const queueId = /queued as ([A-Za-z0-9]+)/.exec(info.response)?.[1];
    assert.ok(queueId, info.response);
    assert.match(info.response, /^250 2\.0\.0 Ok: queued as /);
    const [file] = await waitFor(() =>
      p.inbox('alice@example.test').length ? p.inbox('alice@example.test') : null,
    );
    const stored = readFileSync(file!);
    const text = stored.toString('utf8');
    assert.ok(
      text.startsWith(
        'Return-Path: <sender@remote.test>\r\nDelivered-To: alice@example.test\r\nReceived: from client',
      ),
      text.slice(0, 200),
    );
    assert.match(
      text,
      /Received: from [^\r]+ \(client\.example\.net \[127\.0\.0\.5\]\)\r\n\t\(using TLSv1\.[23] with cipher [^)]+\)\r\n\tby mx\.mailyard\.test \(Mailyard\) with ESMTPS id [A-Za-z0-9]+\r\n\tfor <alice@example\.test>; /,
    );
    assert.ok(text.includes(`id ${queueId}`));
    assert.ok(
      stored.subarray(stored.indexOf('From: Sender')).equals(Buffer.from(raw)),
      'body differs from what was sent',
    );
    transport.close();
  });

  test('an alias fans out to every member; a plus address reaches the base account', async () => {
    const before = { a: p.inbox('alice@example.test').length, b: p.inbox('bob@example.test').length };
    const c = await session();
    assert.equal((await c.cmd('MAIL FROM:<x@remote.test>')).code, 250);
    assert.equal((await c.cmd('RCPT TO:<team@example.test>')).code, 250);
    assert.equal((await c.cmd('RCPT TO:<bob+lists@example.test>')).code, 250);
    assert.equal((await c.cmd('DATA')).code, 354);
    const r = await c.cmd('Subject: fanout\r\n\r\nhi\r\n.');
    assert.equal(r.code, 250);
    c.close();
    await waitFor(
      () =>
        p.inbox('alice@example.test').length === before.a + 1 &&
        p.inbox('bob@example.test').length === before.b + 1,
    );
    // bob is reached twice (alias and plus address) but gets a single copy
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(p.inbox('bob@example.test').length, before.b + 1);
  });

  test('SMTPUTF8: a UTF-8 sender and header arrive intact, marked UTF8SMTP', async () => {
    const before = p.inbox('bob@example.test').length;
    const c = await session();
    assert.equal((await c.cmd('MAIL FROM:<jörg@bücher.example> SMTPUTF8 BODY=8BITMIME')).code, 250);
    assert.equal((await c.cmd('RCPT TO:<bob@example.test>')).code, 250);
    await c.cmd('DATA');
    c.write(Buffer.from('From: Jörg <jörg@bücher.example>\r\nSubject: Grüße\r\n\r\nÄÖÜ\r\n.\r\n', 'utf8'));
    assert.equal((await c.read()).code, 250);
    c.close();
    const files = await waitFor(() =>
      p.inbox('bob@example.test').length > before ? p.inbox('bob@example.test') : null,
    );
    const text = files.map((f) => readFileSync(f, 'utf8')).find((t) => t.includes('Subject: Grüße'));
    assert.ok(text, 'message stored');
    assert.ok(text.includes('Return-Path: <jörg@bücher.example>'));
    assert.match(text, /with UTF8SMTP id /);
    assert.ok(text.includes('From: Jörg <jörg@bücher.example>\r\nSubject: Grüße\r\n\r\nÄÖÜ\r\n'));
  });

  test('pipelined transaction gets every reply in order', async () => {
    const c = await RawSmtp.connect(port());
    await c.read();
    // RFC 2920 §3.1: EHLO ends a group, the transaction is the next one
    assert.equal((await c.cmd('EHLO pipe.example.net')).code, 250);
    c.write(
      'MAIL FROM:<p@remote.test>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<nobody@example.test>\r\nDATA\r\n',
    );
    assert.equal((await c.read()).code, 250);
    assert.equal((await c.read()).code, 250);
    const unknown = await c.read();
    assert.match(unknown.text, /^550 5\.1\.1 /);
    assert.equal((await c.read()).code, 354);
    c.write('Subject: pipelined\r\n\r\nbody\r\n.\r\nQUIT\r\n');
    assert.match((await c.read()).text, /^250 2\.0\.0 Ok: queued as/);
    assert.equal((await c.read()).code, 221);
  });
});

describe('recipient checks', () => {
  test('a message in a loop (51 Received fields) and a huge header are refused after DATA', async () => {
    const c = await session();
    const hops = Array.from({ length: 51 }, (_, i) => `Received: from hop${i}.example by mx.example\r\n`);
    for (const [header, want] of [
      [hops.join(''), /^554 5\.4\.6 Error: too many hops/],
      [`X-Folded: a\r\n${' b\r\n'.repeat(6000)}`, /^552 5\.3\.4 Error: message header too large/],
    ] as const) {
      assert.equal((await c.cmd('MAIL FROM:<x@remote.test>')).code, 250);
      assert.equal((await c.cmd('RCPT TO:<alice@example.test>')).code, 250);
      assert.equal((await c.cmd('DATA')).code, 354);
      assert.match((await c.cmd(`${header}Subject: loop\r\n\r\nbody\r\n.`)).text, want);
    }
    c.close();
  });

  test('unknown local user: 550 5.1.1', async () => {
    const c = await session();
    await c.cmd('MAIL FROM:<x@remote.test>');
    assert.match((await c.cmd('RCPT TO:<ghost@example.test>')).text, /^550 5\.1\.1 /);
    c.close();
  });

  test('RCPT TO:<postmaster> without a domain, any case, reaches postmaster of the local domain', async () => {
    await p.directory.addAlias('postmaster@example.test', ['bob@example.test']);
    const before = p.inbox('bob@example.test').length;
    const c = await session(true);
    await c.cmd('MAIL FROM:<x@remote.test>');
    // RFC 5321 §4.5.1: accepted from anyone, whatever the relay rules
    assert.equal((await c.cmd('RCPT TO:<PostMaster>')).code, 250);
    assert.equal((await c.cmd('DATA')).code, 354);
    assert.equal((await c.cmd('Subject: to the postmaster\r\n\r\nhi\r\n.')).code, 250);
    c.close();
    const files = await waitFor(() =>
      p.inbox('bob@example.test').length > before ? p.inbox('bob@example.test') : null,
    );
    assert.ok(files.some((f) => readFileSync(f, 'utf8').includes('Subject: to the postmaster')));
  });

  test(
    'RCPT TO:<postmaster> repeated, or after its full address, is in the envelope once',
    { timeout: 60_000 },
    async () => {
      const { connect } = await import('amqplib');
      const { ENVELOPE_HEADER, Queues, parseEnvelope } = await import('@mailyard/contracts');
      await p.directory.addAlias('postmaster@example.test', ['bob@example.test']);
      // the message waits in the queue, where its envelope is read
      await p.stopDelivery();
      try {
        const c = await session(true);
        await c.cmd('MAIL FROM:<x@remote.test>');
        assert.equal((await c.cmd('RCPT TO:<postmaster@example.test>')).code, 250);
        assert.equal((await c.cmd('RCPT TO:<postmaster>')).code, 250);
        assert.equal((await c.cmd('RCPT TO:<Postmaster>')).code, 250);
        assert.equal((await c.cmd('DATA')).code, 354);
        const r = await c.cmd('Subject: postmaster once\r\n\r\nhi\r\n.');
        assert.equal(r.code, 250);
        c.close();
        const conn = await connect(p.vhost.url);
        try {
          const ch = await conn.createChannel();
          const m = await waitFor(async () => ch.get(Queues.delivery, { noAck: true }), {
            what: 'the message in the delivery queue',
          });
          const env = parseEnvelope(m.properties.headers?.[ENVELOPE_HEADER]);
          assert.ok(r.text.includes(env.queueId));
          assert.deepEqual(env.recipients, ['postmaster@example.test']);
        } finally {
          await conn.close();
        }
      } finally {
        await p.startDelivery();
      }
    },
  );

  test('catch-all accepts any address of its domain', async () => {
    await p.directory.addDomain('catch.test');
    await p.directory.addAlias('@catch.test', ['alice@example.test']);
    const c = await session();
    await c.cmd('MAIL FROM:<x@remote.test>');
    assert.equal((await c.cmd('RCPT TO:<anything-at-all@catch.test>')).code, 250);
    c.close();
  });

  test('too many recipients: 452 4.5.3', async () => {
    const c = await session();
    await c.cmd('MAIL FROM:<x@remote.test>');
    for (let i = 0; i < 3; i++)
      assert.equal((await c.cmd('RCPT TO:<alice@example.test>')).code, 250, 'duplicates count too');
    assert.match((await c.cmd('RCPT TO:<alice@example.test>')).text, /^452 4\.5\.3 /);
    c.close();
  });

  test('malformed recipient: 501 5.1.3', async () => {
    const c = await session();
    await c.cmd('MAIL FROM:<x@remote.test>');
    assert.match((await c.cmd('RCPT TO:<alice@bad..domain>')).text, /^501 5\.1\.3 /);
    c.close();
  });
});

describe('relay', () => {
  test('another domain from outside mynetworks: 554 5.7.1', async () => {
    const c = await session(true);
    await c.cmd('MAIL FROM:<x@remote.test>');
    assert.match((await c.cmd('RCPT TO:<victim@elsewhere.test>')).text, /^554 5\.7\.1 /);
    // and the same client may still send to our own users
    assert.equal((await c.cmd('RCPT TO:<alice@example.test>')).code, 250);
    c.close();
  });

  test('a client in mynetworks may relay; relay_domains are accepted from anyone', async () => {
    const c = await session();
    await c.cmd('MAIL FROM:<x@example.test>');
    assert.equal((await c.cmd('RCPT TO:<someone@elsewhere.test>')).code, 250);
    assert.equal((await c.cmd('RCPT TO:<someone@relayed.test>')).code, 250);
    c.close();
  });

  test('a source route is refused from mynetworks too', async () => {
    const c = await session();
    await c.cmd('MAIL FROM:<x@example.test>');
    // smtp-server strips the route; the address behind it is one this client may relay to
    assert.match(
      (await c.cmd('RCPT TO:<@a.example.test,@b.example.test:someone@elsewhere.test>')).text,
      /^554 5\.7\.1 /,
    );
    assert.match((await c.cmd('RCPT TO:<@example.test:alice@example.test>')).text, /^554 5\.7\.1 /);
    assert.equal((await c.cmd('RCPT TO:<someone@elsewhere.test>')).code, 250);
    c.close();
  });

  for (const trick of [
    'user%other.test@example.test',
    '"user@other.test"@example.test',
    '@example.test:user@other.test',
    'other.test!user@example.test',
    'user@other.test@example.test',
  ]) {
    test(`relay trick refused: ${trick}`, async () => {
      const c = await session(true);
      await c.cmd('MAIL FROM:<x@remote.test>');
      assert.match((await c.cmd(`RCPT TO:<${trick}>`)).text, /^(554 5\.7\.1|501 5\.1\.3) /);
      c.close();
    });
  }
});

describe('routing', () => {
  test('local and remote recipients travel as one message: each queue sees only its own', async () => {
    const { connect } = await import('amqplib');
    const { ENVELOPE_HEADER, envelopeFor, parseEnvelope } = await import('@mailyard/contracts');
    const before = p.inbox('alice@example.test').length;
    const c = await session();
    await c.cmd('MAIL FROM:<x@example.test>');
    assert.equal((await c.cmd('RCPT TO:<alice@example.test>')).code, 250);
    assert.equal((await c.cmd('RCPT TO:<far@elsewhere.test>')).code, 250);
    await c.cmd('DATA');
    const r = await c.cmd('Subject: both routes\r\n\r\nhi\r\n.');
    assert.equal(r.code, 250);
    c.close();
    await waitFor(() => p.inbox('alice@example.test').length === before + 1);
    const conn = await connect(p.vhost.url);
    const ch = await conn.createChannel();
    const m = await waitFor(async () => ch.get('outbound', { noAck: true }), { what: 'copy in outbound' });
    const env = envelopeFor(parseEnvelope(m.properties.headers?.[ENVELOPE_HEADER]), 'outbound');
    assert.deepEqual(env.recipients, ['far@elsewhere.test']);
    assert.equal(env.routes, undefined);
    assert.ok(r.text.includes(env.queueId));
    // the delivery service filed alice's copy and did not forward far@ a second time
    assert.equal(await ch.get('outbound', { noAck: true }), false);
    await conn.close();
  });
});

describe('limits', () => {
  test('message over message_size_limit: 552 5.3.4, nothing stored', async () => {
    const before = p.inbox('alice@example.test').length;
    const c = await session();
    await c.cmd('MAIL FROM:<x@remote.test>');
    await c.cmd('RCPT TO:<alice@example.test>');
    await c.cmd('DATA');
    const line = 'x'.repeat(998) + '\r\n';
    c.write('Subject: big\r\n\r\n' + line.repeat(70) + '.\r\n');
    assert.match((await c.read()).text, /^552 5\.3\.4 /);
    c.close();
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(p.inbox('alice@example.test').length, before);
  });

  test('past smtpd_data_memory_limit: 452 4.3.1, and the message is taken once memory frees', async () => {
    const before = p.inbox('alice@example.test').length;
    const held = async () => {
      const m = p.inboundRt.registry.getSingleMetric('mailyard_mta_inbound_data_held_bytes');
      return (await m!.get()).values[0]?.value ?? -1;
    };
    // 60 KB each, under the 64 KB size limit; the two do not fit in 100 KB at once
    const message = (subject: string) =>
      `Subject: ${subject}\r\n\r\n` + ('y'.repeat(998) + '\r\n').repeat(60);
    const start = async () => {
      const c = await session();
      assert.equal((await c.cmd('MAIL FROM:<x@remote.test>')).code, 250);
      assert.equal((await c.cmd('RCPT TO:<alice@example.test>')).code, 250);
      assert.equal((await c.cmd('DATA')).code, 354);
      return c;
    };
    const a = await start();
    a.write(message('first'));
    await waitFor(async () => (await held()) >= 60 * 1000, { what: 'the first message held' });
    const b = await start();
    b.write(message('second') + '.\r\n');
    assert.match((await b.read()).text, /^452 4\.3\.1 /);
    // one that could never be taken is told so, memory or not: 552, not "try again"
    assert.equal((await b.cmd('MAIL FROM:<x@remote.test>')).code, 250);
    assert.equal((await b.cmd('RCPT TO:<alice@example.test>')).code, 250);
    assert.equal((await b.cmd('DATA')).code, 354);
    b.write(message('second') + message('too big') + '.\r\n');
    assert.match((await b.read()).text, /^552 5\.3\.4 /);
    // the first one, in memory all along, is queued
    a.write('.\r\n');
    assert.equal((await a.read()).code, 250);
    await waitFor(async () => (await held()) === 0, { what: 'the memory given back' });
    // the sender's retry, as its queue makes it, now fits
    assert.equal((await b.cmd('MAIL FROM:<x@remote.test>')).code, 250);
    assert.equal((await b.cmd('RCPT TO:<alice@example.test>')).code, 250);
    assert.equal((await b.cmd('DATA')).code, 354);
    b.write(message('second') + '.\r\n');
    assert.equal((await b.read()).code, 250);
    await waitFor(() => p.inbox('alice@example.test').length === before + 2, { what: 'both delivered' });
    a.close();
    b.close();
  });

  test('SIZE declared above the limit is refused at MAIL FROM', async () => {
    const c = await session();
    assert.match((await c.cmd('MAIL FROM:<x@remote.test> SIZE=999999999')).text, /^552 5\.3\.4 /);
    c.close();
  });

  test('too many errors: 421 and the connection is closed', async () => {
    const c = await session();
    for (let i = 0; i < 4; i++) {
      await c.cmd('RSET');
      await c.cmd('MAIL FROM:<x@remote.test>');
      assert.equal((await c.cmd(`RCPT TO:<ghost${i}@example.test>`)).code, 550);
    }
    const last = await c.cmd('RCPT TO:<ghost9@example.test>');
    assert.equal(last.code, 550);
    assert.match((await c.read()).text, /^421 4\.7\.0 /);
    await c.waitClosed();
  });

  test('an over-long command line is refused', async () => {
    const c = await session();
    const r = await c.cmd('MAIL FROM:<' + 'a'.repeat(5000) + '@remote.test>');
    assert.match(r.text, /^421 4\.\d\.\d .*too long/);
    await c.waitClosed();
  });
});

describe('smuggling', () => {
  test('bare LF before a dot line: refused with 554 5.6.0, nothing stored, session goes on', async () => {
    const before = p.inbox('alice@example.test').length;
    const c = await session();
    await c.cmd('MAIL FROM:<x@remote.test>');
    await c.cmd('RCPT TO:<alice@example.test>');
    await c.cmd('DATA');
    c.write(
      'Subject: smuggle\r\n\r\nhello\n.\nMAIL FROM:<evil@remote.test>\r\nRCPT TO:<bob@example.test>\r\n.\r\n',
    );
    assert.match((await c.read()).text, /^554 5\.6\.0 /);
    assert.equal((await c.cmd('NOOP')).code, 250);
    c.close();
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(p.inbox('alice@example.test').length, before);
  });

  test('other bare LFs are stored as CRLF', async () => {
    const before = p.inbox('bob@example.test').length;
    const c = await session();
    await c.cmd('MAIL FROM:<x@remote.test>');
    await c.cmd('RCPT TO:<bob@example.test>');
    await c.cmd('DATA');
    c.write('Subject: lf\r\n\r\nline one\nline two\r\n.\r\n');
    assert.equal((await c.read()).code, 250);
    c.close();
    const files = await waitFor(() =>
      p.inbox('bob@example.test').length > before ? p.inbox('bob@example.test') : null,
    );
    const text = files.map((f) => readFileSync(f, 'latin1')).find((t) => t.includes('Subject: lf'))!;
    assert.ok(text.includes('line one\r\nline two\r\n'));
  });

  /**
   * Sends alice a message the proper way and waits until it is filed: it must be the one
   * message more than `before`, and nothing holding `refused` (a message refused before)
   * may be in her mailbox.
   */
  async function onlyProperMessageFiled(before: number, refused: string): Promise<void> {
    const d = await session();
    await d.cmd('MAIL FROM:<x@remote.test>');
    await d.cmd('RCPT TO:<alice@example.test>');
    assert.equal((await d.cmd('DATA')).code, 354);
    assert.equal((await d.cmd('Subject: proper\r\n\r\nhello\r\n.')).code, 250);
    d.close();
    const files = await waitFor(() =>
      p.inbox('alice@example.test').length > before ? p.inbox('alice@example.test') : null,
    );
    assert.equal(files.length, before + 1);
    assert.ok(!files.some((f) => readFileSync(f, 'latin1').includes(refused)));
  }

  test('message content sent with DATA, before the 354: 554 5.5.0, disconnected, nothing queued', async () => {
    const before = p.inbox('alice@example.test').length;
    const c = await session();
    c.write(
      'MAIL FROM:<x@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nSubject: early\r\n\r\nx\r\n.\r\n',
    );
    assert.equal((await c.read()).code, 250);
    assert.equal((await c.read()).code, 250);
    assert.match((await c.read()).text, /^554 5\.5\.0 /);
    await c.waitClosed();
    await onlyProperMessageFiled(before, 'Subject: early');
  });

  test(
    'a whole transaction sent with EHLO, before its reply: 554 5.5.0, disconnected, nothing queued',
    { timeout: 20_000 },
    async () => {
      const before = p.inbox('alice@example.test').length;
      const c = await RawSmtp.connect(port());
      assert.equal((await c.read()).code, 220);
      // a client that does not read replies (RFC 2920 §3.1: EHLO ends a group)
      c.write(
        'EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nSubject: blast\r\n\r\nx\r\n.\r\nQUIT\r\n',
      );
      assert.equal((await c.read()).text, '554 5.5.0 Error: SMTP protocol synchronization');
      await c.waitClosed();
      await onlyProperMessageFiled(before, 'Subject: blast');
      const metrics = await (await fetch(`http://127.0.0.1:${p.inboundRt.httpPort}/metrics`)).text();
      assert.match(
        metrics,
        /mailyard_mta_inbound_messages_total\{result="rejected",reason="improper_pipelining"\} [1-9]/,
      );
    },
  );

  test('content pipelined after the end of a message, with the next transaction, is allowed', async () => {
    const before = p.inbox('bob@example.test').length;
    const c = await session();
    await c.cmd('MAIL FROM:<x@remote.test>');
    await c.cmd('RCPT TO:<bob@example.test>');
    assert.equal((await c.cmd('DATA')).code, 354);
    // RFC 2920 §3.1: the message may be followed by the next MAIL/RCPT/DATA group
    c.write(
      'Subject: first\r\n\r\nx\r\n.\r\nMAIL FROM:<x@remote.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n',
    );
    for (const code of [250, 250, 250, 354]) assert.equal((await c.read()).code, code);
    assert.equal((await c.cmd('Subject: second\r\n\r\ny\r\n.')).code, 250);
    c.close();
    await waitFor(() => p.inbox('bob@example.test').length === before + 2);
  });

  test('commands pipelined after STARTTLS are discarded', async () => {
    const c = await session();
    c.write('STARTTLS\r\nMAIL FROM:<injected@remote.test>\r\n');
    assert.equal((await c.read()).code, 220);
    await c.startTls();
    // the injected MAIL FROM must not have started a transaction
    assert.equal((await c.cmd('EHLO client.example.net')).code, 250);
    assert.match((await c.cmd('RCPT TO:<alice@example.test>')).text, /^503 /);
    c.close();
  });
});

describe('metrics', () => {
  test('/metrics counts sessions and accepted messages', async () => {
    const res = await fetch(`http://127.0.0.1:${p.inboundRt.httpPort}/metrics`);
    const body = await res.text();
    assert.ok(
      /mailyard_mta_inbound_sessions_total \d+/.test(body),
      `missing ${String(/mailyard_mta_inbound_sessions_total \d+/)}`,
    );
    assert.ok(
      /mailyard_mta_inbound_messages_total\{result="accepted",reason="ok"\} [1-9]/.test(body),
      `missing ${String(/mailyard_mta_inbound_messages_total\{result="accepted",reason="ok"\} [1-9]/)}`,
    );
    assert.ok(
      /mailyard_mta_inbound_messages_total\{result="rejected",reason="unknown_user"\} [1-9]/.test(body),
      `missing ${String(/mailyard_mta_inbound_messages_total\{result="rejected",reason="unknown_user"\} [1-9]/)}`,
    );
    assert.ok(
      /mailyard_mta_inbound_accept_latency_seconds_count [1-9]/.test(body),
      `missing ${String(/mailyard_mta_inbound_accept_latency_seconds_count [1-9]/)}`,
    );
    const ready = await fetch(`http://127.0.0.1:${p.inboundRt.httpPort}/readyz`);
    assert.equal(ready.status, 200);
  });
});
