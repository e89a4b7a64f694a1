import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Redis } from 'ioredis';
import { createTestRedis, type TestRedis } from '@mailyard/testkit';
import { ALIAS_RECURSION_LIMIT, AliasExpansionError, Directory } from '../src/index.js';

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

test('a recipient expanding to more addresses than the limit (1000 by default) is an error, not a part', async () => {
  const members = remote(1001);
  await admin.addAlias('thousand@example.test', members.slice(0, 1000));
  assert.equal((await dir.expand('thousand@example.test')).remote.length, 1000, 'at the limit');
  await admin.addAlias('over@example.test', members);
  await assert.rejects(dir.expand('over@example.test'), (err) => {
    assert.ok(err instanceof AliasExpansionError);
    assert.deepEqual(err.exceeded, { kind: 'size', reached: 1001, limit: 1000 });
    assert.equal(
      err.message,
      'alias expansion of over@example.test reached 1001 addresses, over the limit of 1000',
    );
    return true;
  });
  // a nested alias counts by its members, not as one address
  await admin.addAlias('outer@example.test', ['thousand@example.test', 'alice@example.test']);
  await assert.rejects(dir.expand('Outer@example.test'), {
    name: 'AliasExpansionError',
    recipient: 'outer@example.test',
  });
  // and an alias over the limit does not lead to one account alone
  assert.equal(await dir.leadsToAlone('outer@example.test', 'alice@example.test'), false);
  // the limit is the directory's to set
  const roomy = new Directory(serviceRedis, '+', { aliasExpansionLimit: 1001 });
  assert.equal((await roomy.expand('outer@example.test')).remote.length, 1000);
  const tight = new Directory(serviceRedis, '+', { aliasExpansionLimit: 2 });
  assert.deepEqual((await tight.expand('bob+news@example.test')).local, [
    { account: 'bob@example.test', via: 'bob+news@example.test' },
  ]);
  await assert.rejects(tight.expand('sub@example.test'), AliasExpansionError);
});

test(`a chain of aliases nested deeper than ${ALIAS_RECURSION_LIMIT} levels is an error, not dropped`, async () => {
  // chain-0 -> chain-1 -> ... -> chain-99 -> alice: alice is 100 levels down
  const chain = (i: number) => `chain-${i}@example.test`;
  for (let i = 0; i < ALIAS_RECURSION_LIMIT; i++)
    await admin.addAlias(chain(i), [i + 1 < ALIAS_RECURSION_LIMIT ? chain(i + 1) : 'alice@example.test']);
  assert.deepEqual((await dir.expand(chain(0))).local, [{ account: 'alice@example.test', via: chain(0) }]);
  await admin.addAlias('deeper@example.test', [chain(0)]);
  await assert.rejects(dir.expand('deeper@example.test'), (err) => {
    assert.ok(err instanceof AliasExpansionError);
    assert.deepEqual(err.exceeded, { kind: 'nesting', limit: ALIAS_RECURSION_LIMIT });
    return true;
  });
});
