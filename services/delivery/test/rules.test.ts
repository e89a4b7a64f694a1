// The account's own rules applied by delivery: the out-of-office reply (RFC 3834).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { connect, type Channel, type ChannelModel } from 'amqplib';
import nodemailer from 'nodemailer';
import { ENVELOPE_HEADER, Queues, RoutingKeys, type Envelope } from '@mailyard/contracts';
import { MailRules } from '@mailyard/mail-rules';
import { waitFor } from '@mailyard/testkit';
import { addAccount, startPlatform, type Platform } from '../../../test/harness.js';
import { envelope } from './envelope.js';

const VIC = 'vic@example.test';
let p: Platform;
let conn: ChannelModel;
let ch: Channel;
before(async () => {
  p = await startPlatform();
  await addAccount(p.directory, VIC);
  await new MailRules(p.redis.redis).setVacation(VIC, {
    enabled: true,
    subject: '',
    body: 'Away until Monday.\nÀ lundi !',
    start: null,
    end: null,
    days: 7,
  });
  conn = await connect(p.vhost.url);
  ch = await conn.createChannel();
});
after(async () => {
  await conn?.close();
  await p?.close();
});

/** The delivery's count of out-of-office replies with this result. */
async function replies(result: string): Promise<number> {
  const metric = await p.deliveryRt!.registry.getSingleMetric('mailyard_delivery_auto_replies_total')?.get();
  return metric?.values.find((v) => v.labels.result === result)?.value ?? 0;
}

let n = 0;
async function deliver(from: string, headers: string, to = VIC): Promise<void> {
  const id = `<m${++n}@remote.test>`;
  const body = Buffer.from(
    `From: ${from || 'someone@remote.test'}\r\nTo: ${to}\r\nSubject: question ${n}\r\nMessage-ID: ${id}\r\n${headers}\r\nHello\r\n`,
  );
  await p.inboundRt.bus.publishMail(RoutingKeys.delivery, body, { ...envelope([VIC]), mailFrom: from });
}

async function outboundCount(): Promise<number> {
  return (await ch.checkQueue(Queues.outbound)).messageCount;
}

test(
  'one out-of-office reply per sender within the days, with RFC 3834 headers',
  { timeout: 60_000 },
  async () => {
    await deliver('ann@remote.test', '');
    await waitFor(async () => (await replies('sent')) === 1, { what: 'the first reply' });
    await deliver('ann@remote.test', '');
    await waitFor(async () => (await replies('already-replied')) === 1, { what: 'the second message seen' });
    await deliver('bea@remote.test', '');
    await waitFor(async () => (await replies('sent')) === 2, { what: 'the reply to another sender' });
    assert.equal(await outboundCount(), 2);

    const first = await ch.get(Queues.outbound, { noAck: true });
    assert.ok(first);
    const env = JSON.parse(String(first.properties.headers?.[ENVELOPE_HEADER])) as Envelope;
    // RFC 3834 §3.3: the null envelope sender
    assert.equal(env.mailFrom, '');
    assert.deepEqual(env.recipients, ['ann@remote.test']);
    const text = first.content.toString();
    assert.match(text, /^From: <vic@example\.test>$/m);
    assert.match(text, /^To: <ann@remote\.test>$/m);
    assert.match(text, /^Subject: Auto: question 1$/m);
    assert.match(text, /^Auto-Submitted: auto-replied$/m);
    assert.match(text, /^In-Reply-To: <m1@remote\.test>$/m);
    assert.match(text, /^References: <m1@remote\.test>$/m);
    const body = text.slice(text.indexOf('\r\n\r\n') + 4);
    assert.equal(Buffer.from(body, 'base64').toString(), 'Away until Monday.\r\nÀ lundi !\r\n');
    await ch.get(Queues.outbound, { noAck: true });
  },
);

test(
  'no reply to lists, bulk, automatic mail, machines or mail not addressed to the user',
  { timeout: 60_000 },
  async () => {
    const skipped = await replies('skipped');
    const sent = await replies('sent');
    await deliver('list-member@remote.test', 'List-Id: <talk.lists.remote.test>\r\n');
    await deliver('news@remote.test', 'Precedence: bulk\r\n');
    await deliver('robot@remote.test', 'Auto-Submitted: auto-generated\r\n');
    await deliver('MAILER-DAEMON@remote.test', '');
    await deliver('noreply@remote.test', '');
    await deliver('', '');
    await deliver('cc@remote.test', '', 'everyone@remote.test');
    await waitFor(async () => (await replies('skipped')) === skipped + 7, { what: 'all seven looked at' });
    assert.equal(await replies('sent'), sent);
    assert.equal(await outboundCount(), 0);
    // the plus-address and the Auto-Submitted "no" of a person's own client are answered
    await deliver('dan@remote.test', 'Auto-Submitted: no\r\n', 'Vic <vic+work@example.test>');
    await waitFor(async () => (await replies('sent')) === sent + 1, { what: 'the reply to dan' });
    await ch.get(Queues.outbound, { noAck: true });
  },
);

test(
  'forwarding: the user’s address as envelope sender, Delivered-To on top, loops kept',
  { timeout: 60_000 },
  async () => {
    const fay = 'fay@example.test';
    const gil = 'gil@example.test';
    await addAccount(p.directory, fay);
    await addAccount(p.directory, gil);
    const rules = new MailRules(p.redis.redis);
    await rules.setForwarding(fay, { targets: ['fay@far.test', gil], keepCopy: false });
    const env = envelope([fay]);
    const body = Buffer.from('From: ann@remote.test\r\nTo: fay@example.test\r\nSubject: fwd\r\n\r\nHi\r\n');
    await p.inboundRt.bus.publishMail(RoutingKeys.delivery, body, env);

    const out = await waitFor(async () => ch.get(Queues.outbound, { noAck: true }), { what: 'the forward' });
    const fenv = JSON.parse(String(out.properties.headers?.[ENVELOPE_HEADER])) as Envelope;
    assert.deepEqual(fenv.recipients, ['fay@far.test']);
    assert.equal(fenv.mailFrom, fay);
    assert.notEqual(fenv.queueId, env.queueId);
    assert.ok(out.content.toString().startsWith('Delivered-To: fay@example.test\r\nFrom: ann@remote.test'));
    // the local target gets its copy through delivery; no copy kept for fay
    await waitFor(() => p.inbox(gil).length === 1, { what: 'gil’s copy' });
    assert.equal(p.inbox(fay).length, 0);

    // back again (gil forwards to fay): the loop stops, and fay keeps that copy
    await rules.setForwarding(gil, { targets: [fay], keepCopy: true });
    const again = Buffer.concat([Buffer.from('Delivered-To: fay@example.test\r\n'), body]);
    await p.inboundRt.bus.publishMail(RoutingKeys.delivery, again, { ...envelope([gil]), mailFrom: fay });
    await waitFor(() => p.inbox(fay).length === 1, { what: 'the looped copy filed for fay' });
    assert.equal(p.inbox(gil).length, 2);
    assert.equal(await outboundCount(), 0);
  },
);

test(
  'spam to an alias or plus-address of a forwarding account is filed in Junk, not forwarded',
  { timeout: 60_000 },
  async () => {
    const hal = 'hal@example.test';
    await addAccount(p.directory, hal);
    await p.directory.addAlias('crew@example.test', [hal]);
    await new MailRules(p.redis.redis).setForwarding(hal, { targets: ['hal@far.test'], keepCopy: false });
    const body = Buffer.from('From: spammer@remote.test\r\nSubject: buy now\r\n\r\ncheap\r\n');
    for (const rcpt of ['crew@example.test', 'hal+news@example.test', 'HAL@example.test']) {
      const env = { ...envelope([rcpt]), filing: { junk: [rcpt], bulk: false } };
      await p.inboundRt.bus.publishMail(RoutingKeys.delivery, body, env);
    }
    await waitFor(() => p.inbox(hal, 'Junk').length === 3, { what: 'the three copies in Junk' });
    assert.equal(await outboundCount(), 0, 'nothing forwarded');
    assert.equal(p.inbox(hal).length, 0);
  },
);

test(
  'mail to a group alias gets no out-of-office reply; to an alias of the user alone it does',
  { timeout: 60_000 },
  async () => {
    await addAccount(p.directory, 'ken@example.test');
    await p.directory.addAlias('staff@example.test', [VIC, 'ken@example.test']);
    await p.directory.addAlias('victor@example.test', [VIC]);
    const skipped = await replies('skipped');
    const sent = await replies('sent');
    await deliver('customer@remote.test', '', 'staff@example.test');
    await waitFor(async () => (await replies('skipped')) === skipped + 1, {
      what: 'the group’s message seen',
    });
    assert.equal(await replies('sent'), sent);
    await deliver('friend@remote.test', '', 'Victor <victor@example.test>');
    await waitFor(async () => (await replies('sent')) === sent + 1, {
      what: 'the reply to the personal alias',
    });
    const out = await ch.get(Queues.outbound, { noAck: true });
    assert.ok(out);
    const env = JSON.parse(String(out.properties.headers?.[ENVELOPE_HEADER])) as Envelope;
    assert.deepEqual(env.recipients, ['friend@remote.test']);
    assert.equal(await outboundCount(), 0);
  },
);

/** Sends a raw message through mta-inbound's SMTP port, as another server does. */
async function sendSmtp(from: string, to: string[], raw: string): Promise<void> {
  const transport = nodemailer.createTransport({
    host: '127.0.0.1',
    port: p.inbound.port,
    secure: false,
    // STARTTLS as another server sends it (a self-signed certificate here)
    tls: { rejectUnauthorized: false },
  });
  try {
    await transport.sendMail({ envelope: { from, to }, raw });
  } finally {
    transport.close();
  }
}

test(
  'a copy another account forwarded gets no out-of-office reply: the forwarder did not write it',
  { timeout: 60_000 },
  async () => {
    const ida = 'ida@example.test';
    const jon = 'jon@example.test';
    await addAccount(p.directory, ida);
    await addAccount(p.directory, jon);
    const rules = new MailRules(p.redis.redis);
    await rules.setForwarding(ida, { targets: [jon], keepCopy: true });
    await rules.setVacation(jon, {
      enabled: true,
      subject: 'Away',
      body: 'Back next week.',
      start: null,
      end: null,
      days: 7,
    });
    const seen = async () =>
      (await replies('sent')) + (await replies('skipped')) + (await replies('already-replied'));
    const before = { seen: await seen(), sent: await replies('sent') };
    // one message to both: jon gets it directly and through ida's forwarding
    await sendSmtp(
      'lea@remote.test',
      [ida, jon],
      `From: lea@remote.test\r\nTo: ${ida}, ${jon}\r\nSubject: lunch\r\nMessage-ID: <lunch@remote.test>\r\n\r\nNoon?\r\n`,
    );
    await waitFor(() => p.inbox(jon).length === 2, { what: 'jon’s two copies' });
    await waitFor(async () => (await seen()) === before.seen + 2, { what: 'both copies looked at' });
    assert.equal(await replies('sent'), before.sent + 1, 'one reply, to the author');
    const out = await ch.get(Queues.outbound, { noAck: true });
    assert.ok(out);
    const env = JSON.parse(String(out.properties.headers?.[ENVELOPE_HEADER])) as Envelope;
    assert.deepEqual(env.recipients, ['lea@remote.test']);
    assert.equal(await outboundCount(), 0);
    // ida, whose forwarding sent jon the copy, gets no out-of-office reply for it
    assert.equal(p.inbox(ida).length, 1);
  },
);

test(
  'a bounce to an account that forwards without a copy is kept: its forward may fail unseen',
  { timeout: 60_000 },
  async () => {
    const kim = 'kim@example.test';
    await addAccount(p.directory, kim);
    await new MailRules(p.redis.redis).setForwarding(kim, { targets: ['kim@far.test'], keepCopy: false });
    // far.test refused what kim's forwarding sent it, and says so to kim, the envelope sender
    await sendSmtp(
      '',
      [kim],
      [
        'From: Mail Delivery System <MAILER-DAEMON@mx.far.test>',
        `To: ${kim}`,
        'Subject: Undelivered Mail Returned to Sender',
        'Auto-Submitted: auto-replied',
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"',
        '',
        '--b',
        'Content-Type: text/plain',
        '',
        '<kim@far.test>: 550 5.1.1 mailbox unavailable',
        '--b--',
        '',
      ].join('\r\n'),
    );
    // forwarded to the address that failed, it would fail again and, with the null sender,
    // go nowhere: kim keeps it
    await waitFor(() => p.inbox(kim).length === 1, { what: 'the bounce in kim’s INBOX' });
    const out = await waitFor(async () => ch.get(Queues.outbound, { noAck: true }), {
      what: 'the forward',
    });
    const env = JSON.parse(String(out.properties.headers?.[ENVELOPE_HEADER])) as Envelope;
    assert.deepEqual(env.recipients, ['kim@far.test']);
    assert.equal(env.mailFrom, '');
    assert.equal(await outboundCount(), 0);
  },
);

/** The next message on `outbound`: its envelope and its text. */
async function nextOutbound(what: string): Promise<{ env: Envelope; text: string }> {
  const out = await waitFor(async () => ch.get(Queues.outbound, { noAck: true }), { what });
  const env = JSON.parse(String(out.properties.headers?.[ENVELOPE_HEADER])) as Envelope;
  return { env, text: out.content.toString() };
}

test(
  'the out-of-office reply is from the alias the mail came to, never the account behind it',
  { timeout: 60_000 },
  async () => {
    const alias = 'v.private@example.test';
    const fromAlias = new RegExp(`^From: <${alias.replace(/\./g, '\\.')}>\r$`, 'm');
    await addAccount(p.directory, 'pat@example.test');
    await p.directory.addAlias(alias, [VIC]);
    await p.directory.addAlias('desk@example.test', [VIC, 'pat@example.test']);
    // the sender knows only the personal alias
    await sendSmtp(
      'max@remote.test',
      [alias],
      `From: max@remote.test\r\nTo: Vic <${alias}>\r\nSubject: offer\r\nMessage-ID: <offer@remote.test>\r\n\r\nInterested?\r\n`,
    );
    const first = await nextOutbound('the reply to the personal alias');
    assert.deepEqual(first.env.recipients, ['max@remote.test']);
    assert.match(first.text, fromAlias);
    assert.ok(!first.text.toLowerCase().includes(VIC), 'the account behind the alias is not disclosed');
    // through a group alias, the reply is from the user's own address that To/Cc named,
    // not the group's (which would speak for pat too)
    await sendSmtp(
      'sue@remote.test',
      ['desk@example.test'],
      `From: sue@remote.test\r\nTo: desk@example.test\r\nCc: ${alias}\r\nSubject: desk\r\nMessage-ID: <desk@remote.test>\r\n\r\nAnyone?\r\n`,
    );
    const second = await nextOutbound('the reply to mail through the group');
    assert.deepEqual(second.env.recipients, ['sue@remote.test']);
    assert.match(second.text, fromAlias);
    assert.ok(!second.text.toLowerCase().includes(VIC));
    assert.equal(await outboundCount(), 0);
  },
);
