// One deletion of an account at a time (asOnlyDeletion), against Redis.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { createTestRedis } from '@mailyard/testkit';
import { asOnlyDeletion } from '../src/account-cleanup.js';

const t = createTestRedis();
after(() => t.cleanup());
const KEY = 'admin:account-deleting:ivy@example.test';

test(
  'a second deletion while one runs does not run, and the first lets go when done',
  { timeout: 10_000 },
  async () => {
    let second: unknown = 'not asked';
    const first = await asOnlyDeletion(t.redis, 'ivy@example.test', async () => {
      second = await asOnlyDeletion(t.redis, 'ivy@example.test', async () => 'ran');
      return 'deleted';
    });
    assert.deepEqual([first, second], ['deleted', null]);
    assert.equal(await t.redis.exists(KEY), 0);
  },
);

test(
  "a deletion whose hold was lost lets go of nothing but its own: not the next deletion's",
  { timeout: 10_000 },
  async () => {
    await asOnlyDeletion(t.redis, 'ivy@example.test', async () => {
      // it stalled past its hold; another deletion took the account meanwhile
      await t.redis.set(KEY, 'the next deletion', 'EX', 120);
    });
    assert.equal(await t.redis.get(KEY), 'the next deletion', 'still held by the next deletion');
    assert.equal(await asOnlyDeletion(t.redis, 'ivy@example.test', async () => 'ran'), null);
    await t.redis.del(KEY);
  },
);
