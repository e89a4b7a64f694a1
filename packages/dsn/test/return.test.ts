import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Envelope, MailRoutingKey } from '@mailyard/contracts';
import { returnToSender } from '../src/index.js';

// Where a DSN goes, for delivery (over quota, recipient gone) and outbound-relay
// (remote refusals, expiry, delay warnings) alike.

const original = (mailFrom: string): Envelope => ({
  v: 1,
  queueId: 'OriginalQueue001',
  mailFrom,
  recipients: ['gone@remote.test'],
  client: { ip: '192.0.2.1', hostname: null, helo: 'x', tls: null, user: null },
  receivedAt: '2026-01-01T00:00:00.000Z',
  attempts: 0,
  body: '7BIT',
  smtputf8: false,
  lastError: null,
});

function route(localDomains: string[]) {
  const published: { key: MailRoutingKey; envelope: Envelope; message: string }[] = [];
  return {
    published,
    bus: {
      publishMail: async (key: MailRoutingKey, body: Buffer, envelope: Envelope) => {
        published.push({ key, envelope, message: body.toString() });
      },
    },
    directory: { isLocalDomain: async (d: string) => localDomains.includes(d) },
  };
}

const reports = [
  {
    recipient: 'gone@remote.test',
    action: 'failed' as const,
    status: '5.1.1',
    diagnostic: 'smtp; 550 5.1.1 no such user',
    remoteMta: 'mx.remote.test',
  },
];
const message = Buffer.from('Subject: hello\r\n\r\nbody\r\n');

test(
  'a DSN to a sender of ours goes through delivery, to anyone else through outbound',
  { timeout: 10_000 },
  async () => {
    const r = route(['example.test']);
    const local = await returnToSender(
      { myhostname: 'mx.test', original: original('a@Example.TEST'), message, reports },
      r,
    );
    const remote = await returnToSender(
      { myhostname: 'mx.test', original: original('b@else.test'), message, reports },
      r,
    );
    assert.deepEqual([local?.via, remote?.via], ['delivery', 'outbound']);
    assert.deepEqual(
      r.published.map((p) => [p.key, p.envelope.mailFrom, p.envelope.recipients]),
      [
        ['delivery', '', ['a@Example.TEST']],
        ['outbound', '', ['b@else.test']],
      ],
    );
    assert.match(r.published[0]!.message, /Undelivered Mail Returned to Sender/);
    assert.equal(local?.envelope.queueId, r.published[0]!.envelope.queueId);
  },
);

test('the null sender gets no DSN: a bounce never bounces', { timeout: 10_000 }, async () => {
  const r = route(['example.test']);
  assert.equal(
    await returnToSender({ myhostname: 'mx.test', original: original(''), message, reports }, r),
    null,
  );
  assert.equal(r.published.length, 0);
});

test('Original-Recipient only from an ORCPT parameter (RFC 3461 §6.3 d)', { timeout: 10_000 }, async () => {
  const r = route([]);
  await returnToSender({ myhostname: 'mx.test', original: original('a@else.test'), message, reports }, r);
  const withOrcpt = [{ ...reports[0]!, originalRecipient: { type: 'rfc822', address: 'Old@Remote.test' } }];
  await returnToSender(
    { myhostname: 'mx.test', original: original('a@else.test'), message, reports: withOrcpt },
    r,
  );
  const [without, withIt] = r.published.map((p) => p.message);
  assert.match(without!, /Final-Recipient: rfc822; gone@remote\.test\r\nAction: failed\r\n/);
  assert.doesNotMatch(without!, /Original-Recipient/);
  assert.match(
    withIt!,
    /Final-Recipient: rfc822; gone@remote\.test\r\nOriginal-Recipient: rfc822; Old@Remote\.test\r\nAction: failed\r\n/,
  );
});
