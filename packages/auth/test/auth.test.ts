import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Directory } from '@mailyard/directory';
import { createTestRedis, startPrivateRedis, type TestRedis } from '@mailyard/testkit';
import { AppPasswords, LoginGuard, createAuthenticator } from '../src/index.js';

let r: TestRedis;
let dir: Directory;
before(async () => {
  r = createTestRedis();
  dir = new Directory(r.redis);
  await dir.addDomain('example.test');
  await dir.addUser('carol@example.test', 'correct horse battery staple');
});
after(() => r.cleanup());

test('account password and app passwords both log in; a revoked app password does not', async () => {
  const apps = new AppPasswords(r.redis);
  const auth = createAuthenticator({ directory: dir, guard: new LoginGuard(r.redis), appPasswords: apps });
  assert.deepEqual(
    await auth.authenticate({
      ip: '192.0.2.1',
      username: 'Carol@example.test',
      password: 'correct horse battery staple',
    }),
    {
      ok: true,
      account: 'carol@example.test',
      via: 'password',
      cached: false,
    },
  );
  const secret = await apps.create('carol@example.test', 'phone');
  assert.equal(secret.length, 20);
  assert.equal(
    (await auth.authenticate({ ip: '192.0.2.1', username: 'carol@example.test', password: secret })).ok,
    true,
  );
  await apps.revoke('carol@example.test', 'phone');
  assert.equal(
    (await auth.authenticate({ ip: '192.0.2.1', username: 'carol@example.test', password: secret })).ok,
    false,
  );
});

test('repeated failures lock the account, with the right password refused too, and locks grow', async () => {
  const guard = new LoginGuard(r.redis, {
    accountThreshold: 3,
    ipThreshold: 100,
    windowSeconds: 60,
    baseLockSeconds: 10,
    maxLockSeconds: 100,
  });
  const auth = createAuthenticator({ directory: dir, guard, appPasswords: new AppPasswords(r.redis) });
  await guard.unlock('carol@example.test'); // forget the failure of the previous test
  for (let i = 0; i < 3; i++) {
    assert.deepEqual(
      await auth.authenticate({ ip: '192.0.2.9', username: 'carol@example.test', password: 'wrong' }),
      { ok: false, reason: 'invalid' },
    );
  }
  const locked = await auth.authenticate({
    ip: '198.51.100.7',
    username: 'carol@example.test',
    password: 'correct horse battery staple',
  });
  assert.equal(locked.ok, false);
  assert.equal(!locked.ok && locked.reason, 'locked');
  const first = await guard.check('x', 'carol@example.test');
  await guard.recordFailure('192.0.2.9', 'carol@example.test');
  const second = await guard.check('x', 'carol@example.test');
  assert.ok(first.locked && second.locked && second.retryAfterSeconds > first.retryAfterSeconds);
  await guard.unlock('carol@example.test');
  assert.equal(
    (
      await auth.authenticate({
        ip: '192.0.2.9',
        username: 'carol@example.test',
        password: 'correct horse battery staple',
      })
    ).ok,
    true,
  );
});

test('failures from one IP across many accounts lock that IP', async () => {
  const guard = new LoginGuard(r.redis, {
    accountThreshold: 100,
    ipThreshold: 4,
    windowSeconds: 60,
    baseLockSeconds: 10,
    maxLockSeconds: 100,
  });
  for (let i = 0; i < 4; i++) await guard.recordFailure('203.0.113.5', `user${i}@example.test`);
  const s = await guard.check('203.0.113.5', 'someone-else@example.test');
  assert.ok(s.locked && s.scope === 'ip');
  assert.equal((await guard.check('203.0.113.6', 'someone-else@example.test')).locked, false);
});

test(
  'a Redis that fails commands makes a login a temporary failure: never a login, never a wrong password',
  {
    timeout: 20_000,
  },
  async (t) => {
    // the lockout state on a Redis of its own that can be made to fail; accounts stay on the shared one
    const failing = await startPrivateRedis();
    t.after(() => failing.stop());
    const guard = new LoginGuard(failing.client(), {
      accountThreshold: 3,
      ipThreshold: 100,
      windowSeconds: 60,
      baseLockSeconds: 60,
      maxLockSeconds: 100,
    });
    const auth = createAuthenticator({ directory: dir, guard, appPasswords: new AppPasswords(r.redis) });
    const login = (password: string) =>
      auth.authenticate({ ip: '192.0.2.77', username: 'carol@example.test', password });
    for (let i = 0; i < 3; i++) assert.equal((await login('wrong')).ok, false);
    assert.equal(!(await login('correct horse battery staple')).ok && 'locked', 'locked');

    // the lock cannot be read: the right password is not let in
    await failing.refuse(['pttl', 'get', 'mget']);
    const unreadable = await login('correct horse battery staple');
    assert.equal(unreadable.ok, false);
    assert.equal(!unreadable.ok && unreadable.reason, 'unavailable');

    // a failure cannot be counted: a guess is not answered as a wrong password (it would be free)
    await failing.refuse(['incr', 'incrby', 'set', 'expire', 'eval', 'evalsha']);
    const uncounted = await login('another guess');
    assert.equal(!uncounted.ok && uncounted.reason, 'unavailable');
  },
);
