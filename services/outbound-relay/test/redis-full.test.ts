// Redis at its maxmemory (noeviction) under the outbound relay: the limits per destination
// (concurrency and messages per minute) go on being counted, and delivery with them,
// rather than every message being deferred as "destination busy" until Redis has room;
// mail waiting for a slot is still told to the other instances, which then park no idle
// session with its slot.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startPrivateRedis, waitFor, type PrivateRedis } from '@mailyard/testkit';
import { DestinationLimits } from '../src/destination-limits.js';
import { counterValue, envelope, queueOutbound, relayTestbed, simpleMessage } from './helpers.js';

let redis: PrivateRedis;
before(async () => {
  redis = await startPrivateRedis();
});
after(() => redis.close());

test(
  'Redis full: a destination still takes its slots and counts its rate, and refuses past them',
  { timeout: 30_000 },
  async () => {
    const client = redis.client({ keyPrefix: 'full:' });
    const slots = new DestinationLimits(client, { concurrency: 2, ratePerMinute: 0 });
    const rate = new DestinationLimits(client, { concurrency: 10, ratePerMinute: 2 });
    await redis.whileFull(async () => {
      const soon = () => Date.now() + 300;
      const first = await slots.acquire('mx.example.test', soon());
      const second = await slots.acquire('mx.example.test', soon());
      assert.ok(first && second, 'two deliveries at once');
      assert.equal(await slots.acquire('mx.example.test', soon()), null, 'not a third at once');
      await first();
      const third = await slots.acquire('mx.example.test', soon());
      assert.ok(third, 'a slot given back is taken again');
      await Promise.all([second(), third()]);

      // the rate counts per minute of the clock: not across the turn of one
      const left = 60_000 - (Date.now() % 60_000);
      if (left < 5000) await new Promise((r) => setTimeout(r, left + 10));
      for (let i = 0; i < 2; i++) {
        const release = await rate.acquire('mx.rate.test', soon());
        assert.ok(release, `message ${i + 1} of the minute`);
        await release();
      }
      assert.equal(await rate.acquire('mx.rate.test', soon()), null, 'the third this minute waits');
    });
  },
);

test(
  'Redis full: a long delivery keeps its slot, and no other instance gets past the limit',
  { timeout: 60_000 },
  async () => {
    // two instances with a connection each at most to the destination; a lease of 2 s,
    // renewed about every 700 ms, so a busy machine delaying one renewal loses nothing
    const leaseMs = 2000;
    const one = new DestinationLimits(redis.client({ keyPrefix: 'lease:' }), {
      concurrency: 1,
      ratePerMinute: 0,
      leaseMs,
    });
    const two = new DestinationLimits(redis.client({ keyPrefix: 'lease:' }), {
      concurrency: 1,
      ratePerMinute: 0,
      leaseMs,
    });
    const release = await one.acquire('mx.long.test', Date.now() + 1000);
    assert.ok(release, 'the first delivery has its slot');
    try {
      await redis.whileFull(async () => {
        // the delivery goes on for three leases while Redis is full
        const until = Date.now() + 3 * leaseMs;
        while (Date.now() < until) {
          assert.equal(
            await two.acquire('mx.long.test', Date.now() + 300),
            null,
            'the other instance waits: the destination takes one connection',
          );
        }
      });
    } finally {
      await release();
    }
    const next = await two.acquire('mx.long.test', Date.now() + 2000);
    assert.ok(next, 'the slot given back is taken by the other instance');
    await next();
  },
);

test(
  "Redis full: an instance done with a message gives its session's slot to mail another waits with",
  { timeout: 120_000 },
  async (t) => {
    const bed = await relayTestbed({
      withDelivery: false,
      zone: {
        'parked.test': { MX: [{ priority: 10, exchange: 'mx.parked.test' }] },
        'mx.parked.test': { A: ['127.0.0.14'] },
      },
    });
    t.after(() => bed.close());
    // the first message is held in DATA until the second waits for the destination's slot
    let reached!: () => void;
    const inData = new Promise<void>((r) => (reached = r));
    let letGo!: () => void;
    const gate = new Promise<undefined>((r) => (letGo = () => r(undefined)));
    const mx = await bed.remote('127.0.0.14', {
      data: (msg) => {
        if (!msg.data.toString().includes('Subject: first\r\n')) return undefined;
        reached();
        return gate;
      },
    });
    // one connection to the destination over both; an idle session would keep its slot for
    // 10 minutes, longer than mail waits for one (60 s) before it is deferred as busy. One
    // message at a time per instance: the second goes to the instance without the first.
    const settings = {
      redis_url: redis.url,
      default_destination_concurrency_limit: 1,
      smtp_connection_cache_time_limit: '600s',
      destination_slot_wait: '60s',
      outbound_prefetch: 1,
      outbound_retry_schedule: '200ms',
    };
    const relays = [await bed.relay(settings), await bed.relay(settings)];
    // the attempts at the slot (the script with two keys, the slots and the rate), as Redis runs them
    const monitor = await redis.client().monitor();
    t.after(() => monitor.disconnect());
    let acquired = 0;
    monitor.on('monitor', (_time: string, args: string[]) => {
      const [command, , keys, slots] = args;
      if (command?.toLowerCase() === 'eval' && keys === '2' && slots?.endsWith('outbound:slots:parked.test'))
        acquired++;
    });
    const send = (subject: string) =>
      queueOutbound(
        bed.p,
        envelope('alice@mailyard.test', ['bob@parked.test']),
        simpleMessage('alice@mailyard.test', 'bob@parked.test', subject),
      );
    const arrived = (subject: string) =>
      mx.received.some((m) => m.data.toString().includes(`Subject: ${subject}\r\n`));

    await redis.whileFull(async () => {
      await send('first');
      await inData;
      const before = acquired;
      await send('second');
      // two attempts at the slot by the other instance: it waits, and has said so in between
      await waitFor(() => acquired >= before + 2, { what: 'the second message waiting for the slot' });
      letGo();
      await waitFor(() => arrived('first'), { what: 'the first message' });
      await waitFor(() => arrived('second'), {
        what: "the second message, on the slot the first one's session gave up",
        timeoutMs: 45_000,
      });
    });
    for (const relay of relays)
      assert.equal(
        await counterValue(relay.rt, 'mailyard_outbound_relay_attempts_total', {
          domain: 'parked.test',
          result: 'deferred',
        }),
        0,
        'nothing deferred for want of a slot',
      );
    assert.equal(mx.maxConcurrent, 1, 'never two sessions to a destination limited to one');
  },
);
