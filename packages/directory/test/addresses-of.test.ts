import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createTestRedis, type TestRedis } from '@mailyard/testkit';
import { Directory } from '../src/index.js';

let r: TestRedis;
let dir: Directory;
before(async () => {
  r = createTestRedis();
  dir = new Directory(r.redis);
  await dir.addDomain('example.test');
  await dir.addDomain('other.test');
  for (const a of ['alice@example.test', 'bob@example.test'])
    await dir.addUser(a, 'correct horse battery staple');
});
after(() => r.cleanup());

test('addressesOf: the account, aliases leading to it (nested, across domains), no catch-all', async () => {
  await dir.addAlias('team@example.test', ['alice@example.test', 'bob@example.test']);
  await dir.addAlias('everyone@other.test', ['team@example.test']);
  await dir.addAlias('bobs@example.test', ['bob@example.test']);
  await dir.addAlias('@other.test', ['alice@example.test']);
  // a loop must end
  await dir.addAlias('loop1@example.test', ['loop2@example.test', 'alice@example.test']);
  await dir.addAlias('loop2@example.test', ['loop1@example.test']);
  assert.deepEqual(await dir.addressesOf('Alice@example.test'), [
    'alice@example.test',
    'everyone@other.test',
    'loop1@example.test',
    'loop2@example.test',
    'team@example.test',
  ]);
  assert.deepEqual(await dir.addressesOf('bob@example.test'), [
    'bob@example.test',
    'bobs@example.test',
    'everyone@other.test',
    'team@example.test',
  ]);
});
