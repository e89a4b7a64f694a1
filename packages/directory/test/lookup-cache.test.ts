import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Redis } from 'ioredis';
import { createTestRedis, waitFor, type TestRedis } from '@mailyard/testkit';
import { Directory } from '../src/index.js';

// Two instances as in production: `cached` is a service's directory (mta-inbound,
// delivery), `admin` is the CLI making changes from another process. `cached` keeps its
// answers far longer than any wait here: what a test sees change, an announcement changed.
// `shortLived` is for the TTL's own end.
let r: TestRedis;
let admin: Directory;
let cached: Directory;
let shortLived: Directory;
let serviceRedis: Redis;
const PASSWORD = 'correct horse battery staple';
const SHORT_TTL_MS = 5000;

/** Resolves once `dir` listens for changes: answers are cached only from then on. */
async function subscribed(dir: Directory): Promise<void> {
  await waitFor(
    async () => {
      await dir.isLocalDomain('example.test');
      return dir.cachedLocalDomain('example.test') !== undefined;
    },
    { what: 'the lookup cache subscribed to changes' },
  );
}

before(async () => {
  r = createTestRedis();
  admin = new Directory(r.redis);
  serviceRedis = r.redis.duplicate();
  cached = new Directory(serviceRedis, '+', { cacheTtlMs: 10 * 60_000 });
  shortLived = new Directory(serviceRedis, '+', { cacheTtlMs: SHORT_TTL_MS });
  await admin.addDomain('example.test');
  await admin.addUser('alice@example.test', PASSWORD);
  await subscribed(cached);
  await subscribed(shortLived);
});
after(async () => {
  cached.close();
  shortLived.close();
  serviceRedis.disconnect();
  await r.cleanup();
});

test('a cached answer is served without Redis until the TTL ends', async () => {
  assert.equal((await shortLived.lookup('alice@example.test')).match?.kind, 'account');
  // removed behind the directory's back (no announcement): the cache still answers...
  await r.redis.del('account:alice@example.test');
  assert.equal((await shortLived.lookup('alice@example.test')).match?.kind, 'account');
  // ...until the entry expires
  await waitFor(async () => (await shortLived.lookup('alice@example.test')).match === null, {
    timeoutMs: SHORT_TTL_MS + 10_000,
    what: 'cache entry expiry',
  });
  await r.redis.hset('account:alice@example.test', 'password', 'x');
});

test('a new account, alias or domain is seen at once by a cache that had answered "unknown"', async () => {
  assert.equal((await cached.lookup('carol@example.test')).match, null);
  await admin.addUser('carol@example.test', PASSWORD);
  await waitFor(async () => (await cached.lookup('carol@example.test')).match?.kind === 'account', {
    what: 'new account visible',
  });

  assert.equal((await cached.lookup('team@example.test')).match, null);
  await admin.addAlias('team@example.test', ['carol@example.test']);
  await waitFor(async () => (await cached.lookup('team@example.test')).match?.kind === 'alias', {
    what: 'new alias visible',
  });

  assert.equal((await cached.lookup('dave@new.test')).localDomain, false);
  await admin.addDomain('new.test');
  await waitFor(async () => (await cached.lookup('dave@new.test')).localDomain, {
    what: 'new domain visible',
  });
});

test('a deleted account or a removed alias target stops resolving at once', async () => {
  await admin.addUser('erin@example.test', PASSWORD);
  await admin.addAlias('pair@example.test', ['erin@example.test', 'carol@example.test']);
  await waitFor(async () => (await cached.lookup('erin@example.test')).match?.kind === 'account');
  await waitFor(async () => (await cached.expand('pair@example.test')).local.length === 2);

  await admin.delAlias('pair@example.test', 'erin@example.test');
  await waitFor(
    async () =>
      JSON.stringify((await cached.expand('pair@example.test')).local.map((l) => l.account)) ===
      '["carol@example.test"]',
    { what: 'alias target removal visible' },
  );
  await admin.delUser('erin@example.test');
  await waitFor(async () => (await cached.lookup('erin@example.test')).match === null, {
    what: 'account removal visible',
  });
});

test('without a TTL nothing is cached', async () => {
  const plain = new Directory(r.redis);
  await admin.addUser('frank@example.test', PASSWORD);
  assert.equal((await plain.lookup('frank@example.test')).match?.kind, 'account');
  await r.redis.del('account:frank@example.test');
  assert.equal((await plain.lookup('frank@example.test')).match, null);
});

test('whether a domain is ours: cached, and a new or deleted domain seen at once', async () => {
  assert.equal(await cached.isLocalDomain('Example.TEST'), true);
  assert.equal(cached.cachedLocalDomain('example.test'), true, 'answered from the cache');
  assert.equal(await cached.isLocalDomain('later.test'), false);
  assert.equal(cached.cachedLocalDomain('later.test'), false);
  await admin.addDomain('later.test');
  await waitFor(async () => await cached.isLocalDomain('later.test'), {
    what: 'new domain visible',
  });
  await admin.delDomain('later.test');
  await waitFor(async () => !(await cached.isLocalDomain('later.test')), {
    what: 'deleted domain gone',
  });
  assert.equal(new Directory(r.redis).cachedLocalDomain('example.test'), undefined, 'no cache: no answer');
});
