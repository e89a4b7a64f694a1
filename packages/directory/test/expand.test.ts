import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Redis } from 'ioredis';
import { createTestRedis, type TestRedis } from '@mailyard/testkit';
import { Directory } from '../src/index.js';

let r: TestRedis;
let admin: Directory;
let serviceRedis: Redis;
/** Round trips the service's client made (each lookup is one pipeline). */
let roundTrips = 0;
let dir: Directory;

before(async () => {
  r = createTestRedis();
  admin = new Directory(r.redis);
  await admin.addDomain('example.test');
  for (const a of ['alice@example.test', 'bob@example.test'])
    await admin.addUser(a, 'correct horse battery staple');
  serviceRedis = r.redis.duplicate();
  const pipeline = serviceRedis.pipeline.bind(serviceRedis);
  serviceRedis.pipeline = (...args: Parameters<Redis['pipeline']>) => {
    roundTrips++;
    return pipeline(...args);
  };
  dir = new Directory(serviceRedis);
});
after(async () => {
  serviceRedis.disconnect();
  await r.cleanup();
});

const remote = (n: number) => Array.from({ length: n }, (_, i) => `member-${i}@far-away.test`);

test('an alias of a thousand members expands in one round trip per level of nesting', async () => {
  const far = remote(997);
  await admin.addAlias('big@example.test', [
    ...far,
    'alice@example.test',
    'sub@example.test',
    'bob+news@example.test',
  ]);
  // a second level: an account already reached through its plus-address, a member
  // already listed, and the alias itself (a loop)
  await admin.addAlias('sub@example.test', ['bob@example.test', far[0]!, 'big@example.test']);
  roundTrips = 0;
  const x = await dir.expand('Big@Example.test');
  assert.equal(roundTrips, 3, 'the alias, its members, the members of sub');
  assert.deepEqual(
    [...x.local].sort((a, b) => a.account.localeCompare(b.account)),
    [
      { account: 'alice@example.test', via: 'big@example.test' },
      { account: 'bob@example.test', via: 'big@example.test' },
    ],
  );
  assert.deepEqual([...x.remote].sort(), [...far].sort());
});
