import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { connect } from 'amqplib';
import { ENVELOPE_HEADER, Headers, Queues, RoutingKeys, type Envelope } from '@mailyard/contracts';
import { waitFor } from '@mailyard/testkit';
import { addAccount, startPlatform, type Platform } from '../../../test/harness.js';
import { envelope } from './envelope.js';

let p: Platform;
before(async () => {
  p = await startPlatform();
  await addAccount(p.directory, 'dora@example.test');
  await addAccount(p.directory, 'erin@example.test');
});
after(() => p.close());

const msg = (subject: string) =>
  Buffer.from(`Subject: ${subject}\r\nFrom: sender@remote.test\r\n\r\nbody of ${subject}\r\n`);

test('the same message delivered twice (redelivery) is filed once', async () => {
  const bus = p.inboundRt.bus;
  const env = envelope(['dora@example.test']);
  await bus.publishMail(RoutingKeys.delivery, msg('twice'), env);
  await bus.publishMail(RoutingKeys.delivery, msg('twice'), env);
  await waitFor(() => p.inbox('dora@example.test').length === 1);
  // give the second copy every chance to (wrongly) appear
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(p.inbox('dora@example.test').length, 1);
  const text = readFileSync(p.inbox('dora@example.test')[0]!, 'utf8');
  assert.ok(
    text.startsWith('Return-Path: <sender@remote.test>\r\nDelivered-To: dora@example.test\r\nSubject: twice'),
  );
});

test('nested aliases expand; a loop stops without duplicates; external targets go to outbound', async () => {
  await p.directory.addAlias('ops@example.test', ['oncall@example.test', 'friend@elsewhere.test']);
  await p.directory.addAlias('oncall@example.test', ['erin@example.test', 'ops@example.test']);
  const before = p.inbox('erin@example.test').length;
  const env = envelope(['ops@example.test']);
  await p.inboundRt.bus.publishMail(RoutingKeys.delivery, msg('nested'), env);
  await waitFor(() => p.inbox('erin@example.test').length === before + 1);
  const conn = await connect(p.vhost.url);
  const ch = await conn.createChannel();
  const fwd = await waitFor(async () => ch.get(Queues.outbound, { noAck: true }), {
    what: 'forwarded copy in outbound',
  });
  const fenv = JSON.parse(String(fwd.properties.headers?.[ENVELOPE_HEADER])) as Envelope;
  assert.deepEqual(fenv.recipients, ['friend@elsewhere.test']);
  assert.equal(fenv.queueId, env.queueId);
  assert.equal(fenv.mailFrom, 'sender@remote.test');
  await conn.close();
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(p.inbox('erin@example.test').length, before + 1);
});

test('a message with an invalid envelope goes to the dead-letter queue with the reason', async () => {
  const conn = await connect(p.vhost.url);
  const ch = await conn.createChannel();
  await p.inboundRt.bus.publish({
    routingKey: RoutingKeys.delivery,
    body: msg('broken'),
    headers: { [ENVELOPE_HEADER]: JSON.stringify({ v: 1, queueId: 'x' }) },
  });
  const dead = await waitFor(async () => ch.get(Queues.deadLetter, { noAck: true }), { what: 'dead letter' });
  assert.match(String(dead.properties.headers?.[Headers.deadLetterReason]), /invalid envelope/);
  await conn.close();
});

test(
  'a recipient removed after acceptance is returned to the sender with 5.1.1, the others still get theirs',
  { timeout: 30_000 },
  async () => {
    await addAccount(p.directory, 'gone@example.test');
    await addAccount(p.directory, 'writer@example.test');
    await p.directory.delUser('gone@example.test');
    const env = { ...envelope(['gone@example.test', 'dora@example.test']), mailFrom: 'writer@example.test' };
    const before = p.inbox('dora@example.test').length;
    await p.inboundRt.bus.publishMail(RoutingKeys.delivery, msg('to-the-departed'), env);
    const dsn = await waitFor(
      () =>
        p
          .inbox('writer@example.test')
          .map((f) => readFileSync(f, 'utf8'))
          .find((t) => t.includes(env.queueId)),
      { what: "the DSN in the sender's INBOX" },
    );
    assert.match(dsn, /Status: 5\.1\.1/);
    assert.match(dsn, /Final-Recipient: rfc822; ?gone@example\.test/);
    assert.match(
      dsn,
      /^Diagnostic-Code: x-mailyard; 550 5\.1\.1 <gone@example\.test>: unknown user \(removed after the message was accepted\)\r$/m,
    );
    assert.doesNotMatch(dsn, /Final-Recipient: rfc822; ?dora@/);
    assert.equal(p.inbox('dora@example.test').length, before + 1);
    const res = await fetch(`http://127.0.0.1:${p.deliveryRt!.httpPort}/metrics`);
    assert.match(await res.text(), /mailyard_delivery_deliveries_total\{result="unknown-user"\} 1/);
  },
);

test(
  'a bounce (null sender) to a removed recipient returns nothing and is not retried',
  { timeout: 30_000 },
  async () => {
    await addAccount(p.directory, 'gone2@example.test');
    await p.directory.delUser('gone2@example.test');
    const env = { ...envelope(['gone2@example.test']), mailFrom: '' };
    await p.inboundRt.bus.publishMail(RoutingKeys.delivery, msg('bounce-to-the-departed'), env);
    const conn = await connect(p.vhost.url);
    const ch = await conn.createChannel();
    await waitFor(async () => (await ch.checkQueue(Queues.delivery)).messageCount === 0, {
      what: 'consumed',
    });
    await waitFor(
      async () => {
        const res = await fetch(`http://127.0.0.1:${p.deliveryRt!.httpPort}/metrics`);
        return /mailyard_delivery_deliveries_total\{result="unknown-user"\} 2/.test(await res.text());
      },
      { what: 'the removed recipient noticed' },
    );
    assert.equal((await ch.checkQueue(Queues.outbound)).messageCount, 0, 'no DSN to anyone');
    assert.equal((await ch.checkQueue(Queues.deadLetter)).messageCount, 0, 'not dead-lettered');
    await conn.close();
  },
);

test('each filed copy is announced as a mailbox.changed event', async () => {
  const { Bus } = await import('@mailyard/bus');
  const { createLogger } = await import('@mailyard/observability');
  const listener = new Bus({
    url: p.vhost.url,
    logger: createLogger('listener', 'silent'),
    name: 'listener',
  });
  const events: { account: string; folder: string; queueId: string | null }[] = [];
  await listener.subscribe('mailbox.changed', (e) => {
    events.push(e);
  });
  listener.start();
  // resolves once connected with every subscription attached
  await listener.waitConnected();
  const env = envelope(['erin@example.test']);
  await p.inboundRt.bus.publishMail(RoutingKeys.delivery, msg('event'), env);
  const e = await waitFor(() => events.find((x) => x.queueId === env.queueId), {
    what: 'mailbox.changed event',
  });
  assert.equal(e.account, 'erin@example.test');
  assert.equal(e.folder, 'INBOX');
  await listener.stop();
});

test('a burst into one mailbox is announced in a few events, the last one after the last copy', async () => {
  const { Bus } = await import('@mailyard/bus');
  const { createLogger } = await import('@mailyard/observability');
  await addAccount(p.directory, 'burst@example.test');
  const listener = new Bus({ url: p.vhost.url, logger: createLogger('listener', 'silent'), name: 'burst' });
  const events: { account: string; at: number }[] = [];
  await listener.subscribe('mailbox.changed', (e) => {
    const ev = e as { account: string };
    if (ev.account === 'burst@example.test') events.push({ account: ev.account, at: Date.now() });
  });
  listener.start();
  await listener.waitConnected();
  const count = 30;
  const started = Date.now();
  await Promise.all(
    Array.from({ length: count }, (_, i) =>
      p.inboundRt.bus.publishMail(RoutingKeys.delivery, msg(`burst ${i}`), envelope(['burst@example.test'])),
    ),
  );
  await waitFor(() => p.inbox('burst@example.test').length === count, { what: `${count} copies filed` });
  const lastWrite = Math.max(...p.inbox('burst@example.test').map((f) => statSync(f).ctimeMs));
  // the trailing event of the window follows the last copy
  await waitFor(() => events.some((e) => e.at >= Math.floor(lastWrite) - 1), {
    what: 'an event after the last copy',
  });
  // at most one event a window (100 ms) between the first copy and the last event heard:
  // a burst that a busy machine spreads over many windows may have as many events
  const span = events.at(-1)!.at - started;
  const most = Math.floor(span / 90) + 1;
  assert.ok(events.length <= most, `${events.length} events for ${count} copies in ${span} ms`);
  await listener.stop();
});

test('delivery metrics count written copies and latency', async () => {
  const res = await fetch(`http://127.0.0.1:${p.deliveryRt!.httpPort}/metrics`);
  const body = await res.text();
  assert.ok(
    /mailyard_delivery_deliveries_total\{result="written"\} [1-9]/.test(body),
    'written deliveries counted',
  );
  assert.ok(/mailyard_delivery_latency_seconds_count [1-9]/.test(body), 'latency observed');
});

test('Junk made by the first spam, before the first login, is subscribed', { timeout: 30_000 }, async () => {
  const { MailAccount } = await import('@mailyard/mailstore');
  await addAccount(p.directory, 'fern@example.test');
  const env = { ...envelope(['fern@example.test']), filing: { junk: ['fern@example.test'], bulk: false } };
  await p.inboundRt.bus.publishMail(RoutingKeys.delivery, msg('spam first'), env);
  await waitFor(() => p.inbox('fern@example.test', 'Junk').length === 1, { what: 'the copy in Junk' });
  const fern = new MailAccount(p.maildir, 'fern@example.test');
  // subscribed once the copy is written (the file can be seen a moment before)
  await waitFor(async () => (await fern.subscriptions()).includes('Junk'), { what: 'Junk subscribed' });
  assert.deepEqual(await fern.subscriptions(), ['Junk']);
  // the first login creates and subscribes the other special-use folders
  await fern.ensureDefaults();
  assert.deepEqual((await fern.subscriptions()).sort(), ['Archive', 'Drafts', 'Junk', 'Sent', 'Trash']);
});

test(
  'over quota: no DSN for a copy filed as spam, nor for one the user forwarded; others get theirs',
  { timeout: 30_000 },
  async () => {
    const { Quotas } = await import('@mailyard/mailstore');
    const { MailRules } = await import('@mailyard/mail-rules');
    const overQuota = async () => {
      const metric = await p
        .deliveryRt!.registry.getSingleMetric('mailyard_delivery_deliveries_total')
        ?.get();
      return metric?.values.find((v) => v.labels.result === 'over-quota')?.value ?? 0;
    };
    for (const a of ['quinn@example.test', 'rita@example.test']) {
      await addAccount(p.directory, a);
      await new Quotas(p.redis.redis, 0).set(a, 1);
    }
    await new MailRules(p.redis.redis).setForwarding('rita@example.test', {
      targets: ['rita@far.test'],
      keepCopy: true,
    });
    const conn = await connect(p.vhost.url);
    const ch = await conn.createChannel();
    try {
      await ch.purgeQueue(Queues.outbound);
      const before = await overQuota();
      const spam = {
        ...envelope(['quinn@example.test']),
        filing: { junk: ['quinn@example.test'], bulk: false },
      };
      await p.inboundRt.bus.publishMail(RoutingKeys.delivery, msg('spam, forged sender'), spam);
      await p.inboundRt.bus.publishMail(
        RoutingKeys.delivery,
        msg('forwarded'),
        envelope(['rita@example.test']),
      );
      await waitFor(async () => (await overQuota()) === before + 2, { what: 'both over quota' });
      // a copy that is neither is returned, as before
      const plain = envelope(['quinn@example.test']);
      await p.inboundRt.bus.publishMail(RoutingKeys.delivery, msg('plain'), plain);
      await waitFor(async () => (await ch.checkQueue(Queues.outbound)).messageCount === 2, {
        what: 'the forward and one DSN',
      });
      const out = [];
      for (let m; (m = await ch.get(Queues.outbound, { noAck: true }));)
        out.push({
          env: JSON.parse(String(m.properties.headers?.[ENVELOPE_HEADER])) as Envelope,
          text: m.content.toString(),
        });
      const dsns = out.filter((o) => o.env.mailFrom === '');
      assert.equal(dsns.length, 1);
      assert.ok(dsns[0]!.text.includes(plain.queueId));
      assert.match(dsns[0]!.text, /Status: 5\.2\.2/);
      assert.match(dsns[0]!.text, /^Diagnostic-Code: x-mailyard; 552 5\.2\.2 Mailbox full: /m);
      assert.deepEqual(out.find((o) => o.env.mailFrom !== '')?.env.recipients, ['rita@far.test']);
    } finally {
      await conn.close();
    }
  },
);
