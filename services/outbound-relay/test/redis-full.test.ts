// Redis at its maxmemory (noeviction) under the outbound relay: the limits per destination
// (concurrency and messages per minute) go on being counted, and delivery with them,
// rather than every message being deferred as "destination busy" until Redis has room.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startPrivateRedis, type PrivateRedis } from '@mailyard/testkit';
import { DestinationLimits } from '../src/destination-limits.js';

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
