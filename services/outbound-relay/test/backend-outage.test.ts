import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Queues } from '@mailyard/contracts';
import { queueDepth, startPrivateRedis, waitFor, type PrivateRedis } from '@mailyard/testkit';
import type { Platform } from '../../../test/harness.js';
import {
  counterValue,
  envelope,
  queueOutbound,
  relayTestbed,
  simpleMessage,
  type RelayHandle,
  type RelayTestbed,
  type RemoteMta,
} from './helpers.js';

// outbound-relay with its Redis (what was settled, the destination limits, the deferred
// index) on a redis-server the test stops: a message must wait for Redis, neither sent
// without knowing what was already delivered nor dead-lettered as if it were at fault.
let bed: RelayTestbed;
let p: Platform;
let redis: PrivateRedis;
let mx: RemoteMta;
let relay: RelayHandle;

before(async () => {
  bed = await relayTestbed({
    withDelivery: false,
    zone: {
      'outage.test': { MX: [{ priority: 10, exchange: 'mx.outage.test' }] },
      'mx.outage.test': { A: ['127.0.0.12'] },
    },
  });
  p = bed.p;
  redis = await startPrivateRedis();
  mx = await bed.remote('127.0.0.12');
  relay = await bed.relay({
    redis_url: redis.url,
    // one failed run would dead-letter a message that was not held
    outbound_max_attempts: 1,
    redis_command_timeout: '300ms',
    outbound_retry_schedule: '200ms',
    // a deferred message is old enough for its delay warning at once
    delay_warning_time: '1ms',
  });
});

after(async () => {
  await bed?.close();
  await redis?.close();
});

const held = () => relay.rt.bus.heldMessages().get(Queues.outbound) ?? 0;

test('Redis down: the message is held, then sent once when Redis is back', { timeout: 90_000 }, async () => {
  await redis.kill();
  const env = envelope('alice@mailyard.test', ['bob@outage.test']);
  await queueOutbound(p, env, simpleMessage('alice@mailyard.test', 'bob@outage.test', 'held for Redis'));

  await waitFor(() => held() === 1, { timeoutMs: 30_000, what: 'the message held by the relay' });
  // the metric operators alert on says so too
  const metrics = await relay.rt.registry.getSingleMetricAsString('mailyard_bus_held_messages');
  assert.match(metrics, /mailyard_bus_held_messages\{queue="outbound"\} 1/);
  assert.equal(mx.received.length, 0, 'nothing sent while Redis cannot say what was settled');
  assert.equal(await queueDepth(p.vhost.name, Queues.deadLetter), 0, 'not dead-lettered');

  await redis.start();
  await waitFor(() => mx.received.length === 1, { timeoutMs: 30_000, what: 'sent after Redis is back' });
  await waitFor(() => held() === 0, { timeoutMs: 10_000, what: 'no message held any more' });
  await waitFor(async () => (await queueDepth(p.vhost.name, Queues.outbound)) === 0, { what: 'acked' });
  assert.deepEqual(mx.received[0]!.to, ['bob@outage.test']);
  assert.equal(mx.received.length, 1, 'sent once');
  assert.equal(await queueDepth(p.vhost.name, Queues.deadLetter), 0);
});

test(
  'Redis lost while the remote takes the message: the bounce waits, the delivered recipient gets one copy',
  { timeout: 90_000 },
  async () => {
    const subject = 'Subject: Redis lost mid-delivery';
    const copies = () => mx.received.filter((m) => m.data.toString().includes(subject)).length;
    let killed = false;
    mx.behaviour = {
      rcpt: (address) =>
        address.startsWith('gone@') ? { code: 550, message: '5.1.1 No such user' } : undefined,
      // Redis dies after the relay checked what was settled, while the data goes out
      data: async () => {
        if (!killed) {
          killed = true;
          await redis.kill();
        }
        return undefined;
      },
    };
    try {
      const env = envelope('alice@mailyard.test', ['bob@outage.test', 'gone@outage.test']);
      await queueOutbound(
        p,
        env,
        simpleMessage('alice@mailyard.test', 'bob@outage.test', 'Redis lost mid-delivery'),
      );
      await waitFor(() => copies() === 1, { timeoutMs: 30_000, what: 'the copy for bob' });
      // the bounce needs Redis (is the sender local?): gone@ waits for the next attempt
      // instead, which in turn waits for Redis
      await waitFor(async () => held() === 1 || (await queueDepth(p.vhost.name, Queues.deadLetter)) > 0, {
        timeoutMs: 30_000,
        what: 'the retry held for Redis',
      });
      assert.equal(await queueDepth(p.vhost.name, Queues.deadLetter), 0, 'not dead-lettered');

      await redis.start();
      await waitFor(
        async () =>
          (await counterValue(relay.rt, 'mailyard_outbound_relay_dsn_total', { kind: 'failure' })) === 1,
        {
          timeoutMs: 30_000,
          what: 'the bounce for gone@ once Redis is back',
        },
      );
      await waitFor(() => held() === 0, { timeoutMs: 10_000, what: 'no message held any more' });
      await waitFor(async () => (await queueDepth(p.vhost.name, Queues.outbound)) === 0, { what: 'acked' });
      assert.equal(copies(), 1, 'bob has one copy');
      assert.equal(await queueDepth(p.vhost.name, Queues.deadLetter), 0);
    } finally {
      mx.behaviour = {};
    }
  },
);

test(
  'a delay warning that cannot be sent: the queued retry is the only copy, nothing dead-lettered',
  { timeout: 90_000 },
  async () => {
    const subject = 'Subject: warning not sent';
    const copies = () => mx.received.filter((m) => m.data.toString().includes(subject)).length;
    // Redis answers, but not whether the sender's domain is ours: the warning has no route
    await redis.refuse(['sismember']);
    mx.behaviour = {
      rcpt: (address, attempt) =>
        address === 'late@outage.test' && attempt === 1
          ? { code: 451, message: '4.7.1 Try again later' }
          : undefined,
    };
    try {
      const env = envelope('alice@mailyard.test', ['late@outage.test']);
      await queueOutbound(
        p,
        env,
        simpleMessage('alice@mailyard.test', 'late@outage.test', 'warning not sent'),
      );
      await waitFor(() => copies() === 1, { timeoutMs: 30_000, what: 'delivery at the retry' });
      await waitFor(async () => (await queueDepth(p.vhost.name, Queues.outbound)) === 0, { what: 'acked' });
      await waitFor(async () => (await queueDepth(p.vhost.name, 'outbound.retry.200ms')) === 0, {
        what: 'no retry left',
      });
      assert.equal(await queueDepth(p.vhost.name, Queues.deadLetter), 0, 'not dead-lettered');
      assert.equal(mx.rcptAttempts.get('late@outage.test'), 2, 'one attempt, one retry');
      assert.equal(copies(), 1);
    } finally {
      mx.behaviour = {};
      const admin = redis.client();
      await admin.call('ACL', 'SETUSER', 'default', '+sismember');
      admin.disconnect();
    }
  },
);

test(
  'Redis full: the message is sent at once, not held until Redis has room',
  { timeout: 90_000 },
  async () => {
    const subject = 'Subject: sent while Redis is full';
    const copies = () => mx.received.filter((m) => m.data.toString().includes(subject)).length;
    await redis.whileFull(async () => {
      const env = envelope('alice@mailyard.test', ['full@outage.test']);
      await queueOutbound(
        p,
        env,
        simpleMessage('alice@mailyard.test', 'full@outage.test', 'sent while Redis is full'),
      );
      await waitFor(() => copies() === 1, { timeoutMs: 30_000, what: 'the copy sent while Redis is full' });
      await waitFor(async () => (await queueDepth(p.vhost.name, Queues.outbound)) === 0, { what: 'acked' });
      assert.equal(held(), 0, 'nothing held');
    });
    assert.equal(copies(), 1, 'sent once');
    assert.equal(await queueDepth(p.vhost.name, Queues.deadLetter), 0);
  },
);

test('Redis full: a message the broker gives again is not sent twice', { timeout: 90_000 }, async () => {
  const subject = 'Subject: once while Redis is full';
  const copies = () => mx.received.filter((m) => m.data.toString().includes(subject)).length;
  const message = simpleMessage('alice@mailyard.test', 'once@outage.test', 'once while Redis is full');
  const env = envelope('alice@mailyard.test', ['once@outage.test']);
  await redis.whileFull(async () => {
    await queueOutbound(p, env, message);
    await waitFor(() => copies() === 1, { timeoutMs: 30_000, what: 'the first copy' });
    await waitFor(async () => (await queueDepth(p.vhost.name, Queues.outbound)) === 0, { what: 'acked' });
    // the same message again, as the broker gives it after an instance died before its ack
    // (a copy sent again would reach the remote before the ack)
    await queueOutbound(p, env, message);
    await waitFor(async () => held() === 0 && (await queueDepth(p.vhost.name, Queues.outbound)) === 0, {
      what: 'the second delivery of the message handled',
    });
  });
  assert.equal(copies(), 1, 'the recipient has one copy');
  assert.equal(await queueDepth(p.vhost.name, Queues.deadLetter), 0);
});
