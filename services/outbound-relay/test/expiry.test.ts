import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { DeferredIndex } from '@mailyard/queue-admin';
import { queueDepth, waitFor } from '@mailyard/testkit';
import type { Platform } from '../../../test/harness.js';
import {
  entryOf,
  envelope,
  queueOutbound,
  relayTestbed,
  simpleMessage,
  type RelayTestbed,
  type RemoteMta,
} from './helpers.js';

// A receiver that always answers 4xx, a queue lifetime of 2 s and a delay warning
// after 0.5 s: one warning, then one bounce, both in the local sender's INBOX.
let bed: RelayTestbed;
let p: Platform;
let mx: RemoteMta;

before(async () => {
  bed = await relayTestbed(
    {
      zone: {
        'stuck.test': { MX: [{ priority: 10, exchange: 'mx.stuck.test' }] },
        'mx.stuck.test': { A: ['127.0.0.12'] },
      },
    },
    ['alice@example.test'],
  );
  p = bed.p;
  mx = await bed.remote('127.0.0.12', {
    rcpt: () => ({ code: 451, message: '4.3.0 Temporary local problem' }),
  });
  await bed.relay({
    outbound_retry_schedule: '200ms',
    maximal_queue_lifetime: '2s',
    delay_warning_time: '500ms',
  });
});

after(() => bed?.close());

test('one delay warning, then one bounce at expiry', async () => {
  const env = envelope('alice@example.test', ['stuck@stuck.test']);
  await queueOutbound(p, env, simpleMessage('alice@example.test', 'stuck@stuck.test', 'never-arrives'));
  const mine = () =>
    p
      .inbox('alice@example.test')
      .map((f) => readFileSync(f, 'utf8'))
      .filter((m) => m.includes(`X-Mailyard-Queue-ID: ${env.queueId}`));
  await waitFor(() => mine().some((m) => m.includes('Action: failed')), {
    timeoutMs: 20_000,
    what: 'the bounce',
  });
  const dsns = mine();
  const warnings = dsns.filter((m) => m.includes('Action: delayed'));
  const failures = dsns.filter((m) => m.includes('Action: failed'));
  assert.equal(warnings.length, 1, 'exactly one delay warning');
  assert.equal(failures.length, 1, 'exactly one bounce');
  assert.match(warnings[0]!, /Subject: Delayed Mail \(still being retried\)/);
  assert.match(warnings[0]!, /Status: 4\.3\.0\r\n/);
  assert.match(warnings[0]!, /Will-Retry-Until: /);
  assert.match(failures[0]!, /Status: 4\.4\.7\r\n/);
  assert.match(failures[0]!, /Diagnostic-Code: smtp; .*451 4\.3\.0 Temporary local problem.*message expired/);
  assert.ok((mx.rcptAttempts.get('stuck@stuck.test') ?? 0) >= 3, 'retried before giving up');
  assert.equal(mx.received.length, 0);

  // the record that the recipient is settled outlives the queue lifetime (2 s here) by the
  // time a failed message may wait in the dead-letter queue (OUTBOUND_DEDUPE_TTL, 14 days):
  // one moved back from there within it is not bounced, or sent, a second time
  const digest = createHash('sha256').update('stuck@stuck.test').digest('hex').slice(0, 16);
  const ttl = await p.redis.redis.ttl(`outbound:done:${env.queueId}:${digest}`);
  assert.ok(ttl > 14 * 24 * 3600 - 60, `the record lives 14 days, not ${ttl} s`);
});

test('the messages of one queue id: each recipient is in one delay warning', async () => {
  // as delivery hands outbound an alias's members outside our domains in several messages
  const first = envelope('alice@example.test', ['part1@stuck.test']);
  const second = { ...first, recipients: ['part2@stuck.test'] };
  for (const env of [first, second])
    await queueOutbound(p, env, simpleMessage(env.mailFrom, env.recipients[0]!, 'in-two-parts'));
  const dsns = () =>
    p
      .inbox('alice@example.test')
      .map((f) => readFileSync(f, 'utf8'))
      .filter((m) => m.includes(`X-Mailyard-Queue-ID: ${first.queueId}`));
  /** The recipients a DSN reports with this action. */
  const reported = (m: string, action: string) =>
    m
      .split(/\r\n\r\n/)
      .filter((block) => block.includes(`Action: ${action}`))
      .map((block) => /Final-Recipient: rfc822; ?(\S+)/.exec(block)?.[1]);
  await waitFor(() => dsns().flatMap((m) => reported(m, 'failed')).length === 2, {
    timeoutMs: 20_000,
    what: 'both bounces',
  });
  assert.deepEqual(
    dsns()
      .flatMap((m) => reported(m, 'delayed'))
      .sort(),
    ['part1@stuck.test', 'part2@stuck.test'],
  );
});

test('a recipient another run is sending to: no delay warning, the reason it waited kept', async () => {
  // an old message whose recipient another instance holds (outbound:sending:), as after a
  // broker connection lost mid-send: it waits, neither warned about nor given up
  const env = envelope('alice@example.test', ['held@stuck.test'], {
    receivedAt: new Date(Date.now() - 60_000).toISOString(),
    attempts: 3,
    lastError: '451 4.3.0 the reason it waited',
  });
  const digest = createHash('sha256').update('held@stuck.test').digest('hex').slice(0, 16);
  await p.redis.redis.set(`outbound:sending:${env.queueId}:${digest}`, 'another-run', 'PX', 60_000);
  await queueOutbound(p, env, simpleMessage(env.mailFrom, 'held@stuck.test', 'held-elsewhere'));
  const entry = await waitFor(() => entryOf(new DeferredIndex(p.redis.redis), env.queueId), {
    what: 'the deferral',
  });
  assert.equal(entry.lastError, '451 4.3.0 the reason it waited');
  assert.equal(entry.attempts, 3, 'no attempt counted');
  // it has come back from its delay at least once more (a new index entry each time)
  await waitFor(
    async () => (await entryOf(new DeferredIndex(p.redis.redis), env.queueId))?.nextTry !== entry.nextTry,
    { what: 'a second try' },
  );
  assert.equal(mx.rcptAttempts.get('held@stuck.test') ?? 0, 0, 'never sent while held');
  // a warning of the first try would have been queued before the second try was indexed
  await waitFor(async () => (await queueDepth(p.vhost.name, 'delivery')) === 0, { what: 'DSNs filed' });
  const warnings = p
    .inbox('alice@example.test')
    .map((f) => readFileSync(f, 'utf8'))
    .filter((m) => m.includes(`X-Mailyard-Queue-ID: ${env.queueId}`));
  assert.deepEqual(warnings, [], 'no delay warning');
});
