// Connection slots over several instances (SharedSlots objects on one Redis key prefix,
// each with its own connection, as instances have): one count for all of them, leases
// that end with the process holding them, and the instance's own count while Redis fails.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import {
  createTestRedis,
  droppingPort,
  REDIS_URL,
  startPrivateRedis,
  waitFor,
  type TestRedis,
} from '@mailyard/testkit';
import { ClientLimits, SharedSlots, type SharedSlotsOptions } from '../src/index.js';

let r: TestRedis;
const clients: Redis[] = [];
const instances: SharedSlots[] = [];

before(() => {
  r = createTestRedis();
});
after(async () => {
  for (const s of instances) s.close();
  for (const c of clients) c.disconnect();
  await r.cleanup();
});

/** An instance: its own Redis connection under the test's prefix. */
function instance(opts: Partial<SharedSlotsOptions> = {}): SharedSlots {
  const redis = new Redis(REDIS_URL, { keyPrefix: r.prefix });
  clients.push(redis);
  const s = new SharedSlots({ redis, service: 'test', ...opts });
  instances.push(s);
  return s;
}

test('two instances count one limit: the slot over it is refused on either, a given one is free', async () => {
  const [a, b] = [instance(), instance()];
  assert.equal(await a.take('ip:192.0.2.1', 2), true);
  assert.equal(await b.take('ip:192.0.2.1', 2), true);
  assert.equal(await b.take('ip:192.0.2.1', 2), false);
  assert.equal(await a.take('ip:192.0.2.1', 2), false);
  // another key, and no limit, are counted apart
  assert.equal(await b.take('ip:192.0.2.2', 2), true);
  assert.equal(await b.take('ip:192.0.2.1', 0), true);
  assert.equal(await r.redis.zcard('slots:test:ip:192.0.2.1'), 2);
  b.give('ip:192.0.2.1');
  // b's ZREM and a's take travel on two connections
  await waitFor(() => a.take('ip:192.0.2.1', 2), { what: 'the slot given on b, taken on a' });
  assert.equal(await b.take('ip:192.0.2.1', 2), false);
});

test(
  'the slots of a process that stops refreshing are free within the lease; a live one keeps them',
  { timeout: 20_000 },
  async () => {
    const key = 'account:leases@example.test';
    // a lease of 3 s, refreshed every second: a busy machine may delay a refresh a while
    const live = instance({ leaseMs: 3000 });
    const dead = instance({ leaseMs: 3000 });
    const other = instance();
    assert.equal(await live.take(key, 2), true);
    const [member, taken] = await r.redis.zrange(`slots:test:${key}`, 0, -1, 'WITHSCORES');
    assert.equal(await dead.take(key, 2), true);
    assert.equal(await other.take(key, 2), false);
    // SIGKILL, as far as Redis can tell: no give, no more refreshes
    dead.close();
    await waitFor(() => other.take(key, 2), { what: "the dead process's slot", timeoutMs: 10_000 });
    // live's lease has been extended past its first end, and still counts
    await waitFor(
      async () => Number(await r.redis.zscore(`slots:test:${key}`, member!)) > Number(taken) + 3000,
      {
        what: 'a refresh after the first lease ended',
        timeoutMs: 10_000,
      },
    );
    assert.equal(await other.take(key, 2), false);
    live.give(key);
    await waitFor(() => other.take(key, 2), { what: "live's slot, given" });
  },
);

test(
  'without an answer from Redis the instance counts alone and waits for nothing',
  { timeout: 20_000 },
  async (t) => {
    const dropping = await droppingPort();
    t.after(() => dropping.close());
    const redis = new Redis(dropping.port, '127.0.0.1', { maxRetriesPerRequest: 1, connectTimeout: 60_000 });
    redis.on('error', () => undefined);
    clients.push(redis);
    const errors: unknown[] = [];
    const onError = (e: unknown) => errors.push(e);
    const slots = new SharedSlots({ redis, service: 'test', redisTimeoutMs: 100, onError });
    instances.push(slots);
    // as retrieval counts a client: at once in the slots, per minute beside them
    const limits = new ClientLimits({
      service: 'test',
      maxConnections: 2,
      ratePerMinute: 4,
      exceptions: [],
      redis,
      redisTimeoutMs: 100,
      onError,
      slots,
      now: () => 0,
    });
    const t0 = Date.now();
    const first = await limits.admit('192.0.2.9');
    assert.equal((await limits.admit('192.0.2.9')).ok, true);
    assert.deepEqual(await limits.admit('192.0.2.9'), { ok: false, limit: 'connection-count' });
    assert.ok(first.ok);
    first.release();
    const fourth = await limits.admit('192.0.2.9');
    assert.ok(fourth.ok);
    fourth.release();
    // a slot is free, and the fifth attempt of the minute is over the rate
    assert.deepEqual(await limits.admit('192.0.2.9'), { ok: false, limit: 'connection-rate' });
    // far below the 60 s a connection attempt to this Redis would wait
    assert.ok(Date.now() - t0 < 10_000, `took ${Date.now() - t0} ms`);
    assert.ok(errors.length >= 3, 'each count that went to Redis said why it counted alone');
  },
);

test(
  'slots taken while Redis was down are counted by every instance once it is back',
  { timeout: 30_000 },
  async (t) => {
    const pr = await startPrivateRedis();
    t.after(() => pr.close());
    const errors: unknown[] = [];
    const s = new SharedSlots({
      redis: pr.client(),
      service: 'test',
      leaseMs: 600,
      redisTimeoutMs: 100,
      onError: (e) => errors.push(e),
    });
    instances.push(s);
    const other = new SharedSlots({ redis: pr.client(), service: 'test', redisTimeoutMs: 100 });
    instances.push(other);
    const probe = pr.client();
    assert.equal(await s.take('ip:192.0.2.10', 3), true);
    await pr.kill();
    assert.equal(await s.take('ip:192.0.2.10', 3), true);
    assert.equal(await s.take('ip:192.0.2.10', 3), true);
    assert.ok(errors.length >= 2);
    await pr.start();
    // the refresh stores the two leases Redis never saw
    await waitFor(async () => (await probe.zcard('slots:test:ip:192.0.2.10')) === 3, {
      what: 'every slot in Redis',
      timeoutMs: 15_000,
    });
    assert.equal(await other.take('ip:192.0.2.10', 3), false);
    s.give('ip:192.0.2.10');
    await waitFor(() => other.take('ip:192.0.2.10', 3), { what: 'a slot given after the failure' });
  },
);

test(
  'Redis full: slots are still counted over the instances, and the leases of open ones kept',
  { timeout: 30_000 },
  async (t) => {
    const pr = await startPrivateRedis();
    t.after(() => pr.close());
    const errors: unknown[] = [];
    const onError = (e: unknown) => errors.push(e);
    const a = new SharedSlots({ redis: pr.client(), service: 'test', leaseMs: 600, onError });
    const b = new SharedSlots({ redis: pr.client(), service: 'test', leaseMs: 600, onError });
    instances.push(a, b);
    const probe = pr.client();
    await pr.whileFull(async () => {
      const key = 'ip:192.0.2.11';
      assert.equal(await a.take(key, 2), true);
      assert.equal(await b.take(key, 2), true);
      assert.equal(await b.take(key, 2), false, 'the third is refused on either instance');
      assert.equal(await a.take(key, 2), false);
      const [member, taken] = await probe.zrange(`slots:test:${key}`, 0, -1, 'WITHSCORES');
      // the refresh extends the leases of connections still open past their first end
      await waitFor(
        async () => Number(await probe.zscore(`slots:test:${key}`, member!)) > Number(taken) + 600,
        { what: 'a lease refreshed while Redis is full', timeoutMs: 10_000 },
      );
      assert.equal(await b.take(key, 2), false, 'both slots still held');
      assert.deepEqual(errors, []);
    });
  },
);
