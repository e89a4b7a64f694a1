import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startPrivateRedis, type PrivateRedis } from '@mailyard/testkit';
import { setAtMaxmemory } from '../src/redis.js';

// The small expiring records written when Redis is at its maxmemory (a POP3 lock, a
// record of a message sent, a marker of a forward published): set where a plain SET is
// refused, NX and expiry as asked, and an error of Redis reaches the caller.
let server: PrivateRedis;
before(async () => {
  server = await startPrivateRedis();
});
after(async () => {
  await server?.close();
});

test('a record is set while Redis is full, with its expiry', { timeout: 60_000 }, async () => {
  const redis = server.client({ keyPrefix: 'full-set:' });
  await server.whileFull(async () => {
    await assert.rejects(redis.set('plain', '1', 'EX', 60), /^ReplyError: OOM /);
    assert.equal(await setAtMaxmemory(redis, 'one', 'v', { ex: 60 }), true);
    assert.equal(await setAtMaxmemory(redis, ['a', 'b'], 'w', { px: 30_000 }), true);
  });
  assert.equal(await redis.get('one'), 'v');
  const ttl = await redis.ttl('one');
  assert.ok(ttl > 0 && ttl <= 60, `ttl ${ttl}`);
  assert.deepEqual(await redis.mget('a', 'b'), ['w', 'w']);
  for (const k of ['a', 'b']) {
    const pttl = await redis.pttl(k);
    assert.ok(pttl > 0 && pttl <= 30_000, `pttl of ${k} ${pttl}`);
  }
});

test('NX sets only a key that is not there, while Redis is full too', { timeout: 60_000 }, async () => {
  const redis = server.client({ keyPrefix: 'full-nx:' });
  await server.whileFull(async () => {
    assert.equal(await setAtMaxmemory(redis, 'lock', 'first', { ex: 60, nx: true }), true);
    assert.equal(await setAtMaxmemory(redis, 'lock', 'second', { ex: 60, nx: true }), false);
    // of several, one already there: false, the others set
    assert.equal(await setAtMaxmemory(redis, ['lock', 'free'], 'third', { ex: 60, nx: true }), false);
  });
  assert.deepEqual(await redis.mget('lock', 'free'), ['first', 'third']);
  // without NX the value is replaced
  assert.equal(await setAtMaxmemory(redis, 'lock', 'fourth', { ex: 60 }), true);
  assert.equal(await redis.get('lock'), 'fourth');
});

test('a record expires', { timeout: 60_000 }, async () => {
  const redis = server.client({ keyPrefix: 'full-expiry:' });
  const sub = server.client();
  await sub.config('SET', 'notify-keyspace-events', 'Ex');
  await sub.subscribe('__keyevent@0__:expired');
  const gone = new Promise<void>((resolve) => {
    sub.on('message', (_channel, key: string) => {
      if (key === 'full-expiry:short') resolve();
    });
  });
  await server.whileFull(() => setAtMaxmemory(redis, 'short', '1', { px: 200 }));
  await gone;
  sub.disconnect();
  assert.equal(await redis.exists('short'), 0);
});

test('an error of Redis is thrown, not taken for a refusal', { timeout: 60_000 }, async () => {
  const redis = server.client({ keyPrefix: 'full-error:' });
  await server.whileFull(async () => {
    await assert.rejects(setAtMaxmemory(redis, 'n', '1', { ex: 0 }), /invalid expire time/);
  });
  const closed = server.client();
  await closed.ping();
  closed.disconnect();
  await assert.rejects(setAtMaxmemory(closed, 'n', '1', { ex: 60 }), /Connection is closed/);
  await server.refuse(['evalsha', 'eval']);
  try {
    await assert.rejects(setAtMaxmemory(redis, 'n', '1', { ex: 60 }), /NOPERM/);
  } finally {
    const admin = server.client();
    await admin.call('ACL', 'SETUSER', 'default', '+@all');
    admin.disconnect();
  }
});
