// `mailyard user add --admin` and the console's account with the admin role, against
// Redis: the role is given in the step that creates the account, so no failure after
// that step can leave an account without the role it was asked for.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import type { Redis } from 'ioredis';
import { createTestRedis } from '@mailyard/testkit';
import { Operations } from '../src/index.js';

const r = createTestRedis();
after(() => r.cleanup());
const PASSWORD = 'correct horse battery staple';
const ops = new Operations(r.redis, 'cli:root');

/** `redis`, except that once `key` has been written by a script, every command on it fails (the connection lost). */
function failingAfterCreation(redis: Redis, key: string): Redis {
  let created = false;
  return new Proxy(redis, {
    get(target, prop, receiver) {
      const value: unknown = Reflect.get(target, prop, receiver);
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        if (created && args[0] === key) return Promise.reject(new Error('Connection is closed.'));
        const res: unknown = (value as (...a: unknown[]) => unknown).apply(target, args);
        if (prop === 'eval' && args.includes(key)) created = true;
        return res;
      };
    },
  });
}

test(
  'an account added with the admin role has it, whatever fails after its creation',
  { timeout: 10_000 },
  async () => {
    const a = 'ada@roles.test';
    await ops.addDomain('roles.test', { dkim: false });
    const adding = new Operations(failingAfterCreation(r.redis, `account:${a}`), 'cli:root');
    assert.equal(await adding.addUser(a, PASSWORD, { admin: true }), a);
    assert.equal(await ops.directory.isAdmin(a), true);
    const [entry] = await ops.readAudit({ limit: 1 });
    assert.deepEqual([entry?.action, entry?.target, entry?.detail], ['account.add', a, { admin: true }]);
    // and one added without it has none
    await ops.addUser('bea@roles.test', PASSWORD);
    assert.equal(await ops.directory.isAdmin('bea@roles.test'), false);
  },
);
