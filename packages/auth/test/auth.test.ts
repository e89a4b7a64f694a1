import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Directory } from '@mailyard/directory';
import { createTestRedis, startPrivateRedis, waitFor, type TestRedis } from '@mailyard/testkit';
import { generate } from 'otplib';
import {
  AppPasswords,
  CredentialCache,
  CredentialRevocations,
  DEFAULT_LOCKOUT,
  LoginGuard,
  MAX_CODE_FAILURES,
  TwoFactor,
  announceRevocation,
  createAuthenticator,
  signOutEverywhere,
  type LockoutPolicy,
} from '../src/index.js';

const PASSWORD = 'correct horse battery staple';

let r: TestRedis;
let dir: Directory;
before(async () => {
  r = createTestRedis();
  dir = new Directory(r.redis);
  await dir.addDomain('example.test');
  await dir.addUser('carol@example.test', 'correct horse battery staple');
});
after(() => r.cleanup());

test('an app password is made only for an account that exists', { timeout: 30_000 }, async () => {
  const apps = new AppPasswords(r.redis);
  await dir.addUser('gone@example.test', PASSWORD);
  await dir.delUser('gone@example.test');
  await assert.rejects(apps.create('gone@example.test', 'phone'), /^Error: no account gone@example.test$/);
  await dir.addUser('gone@example.test', PASSWORD);
  assert.deepEqual(await apps.list('gone@example.test'), []);
});

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
      credential: {
        signOut: '0',
        password: (await dir.accountRecord('carol@example.test'))!.password,
      },
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

/** A policy for tests: small numbers, no delay unless asked for. */
function policy(over: Partial<LockoutPolicy> = {}): LockoutPolicy {
  return {
    ...DEFAULT_LOCKOUT,
    accountIpThreshold: 3,
    ipThreshold: 100,
    accountThreshold: 100,
    failureDelayMs: 0,
    windowSeconds: 60,
    baseLockSeconds: 10,
    maxLockSeconds: 100,
    ...over,
  };
}

let n = 0;
/** A fresh account, so tests do not share counters. */
async function account(): Promise<string> {
  const a = `user${++n}@example.test`;
  await dir.addUser(a, 'correct horse battery staple');
  return a;
}

test('failures lock the address that sent them for that account, not the account; locks grow', async () => {
  const a = await account();
  const guard = new LoginGuard(r.redis, policy());
  const auth = createAuthenticator({ directory: dir, guard, appPasswords: new AppPasswords(r.redis) });
  const login = (ip: string, password: string) => auth.authenticate({ ip, username: a, password });
  for (let i = 0; i < 3; i++)
    assert.deepEqual(await login('192.0.2.9', 'wrong'), { ok: false, reason: 'invalid' });
  // the guessing address is refused even with the right password...
  const locked = await login('192.0.2.9', 'correct horse battery staple');
  assert.equal(!locked.ok && locked.reason, 'locked');
  // ...the owner, from another address, is not
  assert.equal((await login('198.51.100.7', 'correct horse battery staple')).ok, true);
  const first = await guard.check('192.0.2.9', a);
  await guard.recordFailure('192.0.2.9', a);
  const second = await guard.check('192.0.2.9', a);
  assert.ok(first.verdict === 'refuse' && second.verdict === 'refuse');
  assert.equal(first.scope, 'account-ip');
  assert.ok(second.retryAfterSeconds > first.retryAfterSeconds, 'the lock grew');
  await guard.unlock(a);
  assert.equal((await login('192.0.2.9', 'correct horse battery staple')).ok, true);
});

test('failures from one IP across many accounts lock that IP, for every account', async () => {
  const guard = new LoginGuard(r.redis, policy({ ipThreshold: 4 }));
  for (let i = 0; i < 4; i++) await guard.recordFailure('203.0.113.5', `user${i}@example.test`);
  const s = await guard.check('203.0.113.5', 'someone-else@example.test');
  assert.ok(s.verdict === 'refuse' && s.scope === 'ip');
  assert.equal((await guard.check('203.0.113.6', 'someone-else@example.test')).verdict, 'check');
});

test('a login name longer than any address is counted under a key of bounded size', async () => {
  const guard = new LoginGuard(r.redis, policy());
  const name = `${'x'.repeat(8000)}@example.test`;
  for (let i = 0; i < 3; i++) await guard.recordFailure('192.0.2.77', name);
  // counted: that name is locked from that address, and another name of the same start is not
  assert.equal((await guard.check('192.0.2.77', name)).verdict, 'refuse');
  assert.equal((await guard.check('192.0.2.77', `${'x'.repeat(8000)}@example.tesT2`)).verdict, 'check');
  const keys = await r.redis.keys(`${r.prefix}auth:*192.0.2.77*`);
  assert.ok(keys.length >= 2, keys.join(' '));
  for (const k of keys) assert.ok(k.length < 400, `a key of ${k.length} characters`);
});

test('an IPv6 client is counted by its /64', async () => {
  const a = await account();
  const guard = new LoginGuard(r.redis, policy());
  for (const host of ['1', '2', 'abcd:1']) await guard.recordFailure(`2001:db8:7:9::${host}`, a);
  assert.equal((await guard.check('2001:db8:7:9:ffff::1', a)).verdict, 'refuse');
  assert.equal((await guard.check('2001:db8:7:a::1', a)).verdict, 'check');
});

test('an account attacked from many addresses: guessers are held back and answered slowly, the owner gets in at once', async () => {
  const a = await account();
  const guard = new LoginGuard(
    r.redis,
    policy({
      accountThreshold: 6,
      accountAttemptsPerMinute: 2,
      failureDelayMs: 300,
      maxFailureDelayMs: 1000,
    }),
  );
  const auth = createAuthenticator({ directory: dir, guard, appPasswords: new AppPasswords(r.redis) });
  const login = async (ip: string, password: string) => {
    const t = Date.now();
    const res = await auth.authenticate({ ip, username: a, password });
    return { res, ms: Date.now() - t };
  };
  // six addresses guess once each: none is locked, but the account is now under attack
  for (let i = 1; i <= 6; i++) assert.equal((await login(`192.0.2.${i}`, 'guess 1')).res.ok, false);
  // addresses that failed before share two attempts a minute: the others are refused unchecked
  const held = await Promise.all([1, 2, 3, 4].map((i) => login(`192.0.2.${i}`, 'guess 2')));
  const reasons = held.map((h) => (h.res.ok ? 'ok' : h.res.reason)).sort();
  assert.deepEqual(reasons, ['invalid', 'invalid', 'locked', 'locked']);
  // and the failures that were checked are answered after the delay
  for (const h of held) if (!h.res.ok && h.res.reason === 'invalid') assert.ok(h.ms >= 250, `${h.ms} ms`);
  // a guessing address stays held back even with the right password
  assert.equal((await login('192.0.2.5', 'correct horse battery staple')).res.ok, false);
  // a fresh address is checked: a wrong password is slowed, the right one let in at once
  const fresh = await login('198.51.100.1', 'guess 3');
  assert.deepEqual(fresh.res, { ok: false, reason: 'invalid' });
  assert.ok(fresh.ms >= 250, `${fresh.ms} ms`);
  const owner = await login('198.51.100.200', 'correct horse battery staple');
  assert.equal(owner.res.ok, true);
});

test(
  'an account under attack: the owner behind a NAT where a colleague mistyped gets in; refusals use up no attempts',
  { timeout: 30_000 },
  async () => {
    const [a, colleague] = [await account(), await account()];
    const guard = new LoginGuard(r.redis, policy({ accountThreshold: 6, accountAttemptsPerMinute: 2 }));
    const auth = createAuthenticator({ directory: dir, guard, appPasswords: new AppPasswords(r.redis) });
    const login = async (ip: string, username: string, password: string) => {
      const res = await auth.authenticate({ ip, username, password });
      return res.ok ? 'ok' : res.reason;
    };
    const office = '198.51.100.70';
    assert.equal(await login(office, colleague, 'a typo'), 'invalid');
    // the attacker puts the account under attack, then keeps guessing from addresses that
    // failed for other accounts too, and from its own: past the minute's two, refused
    for (let i = 1; i <= 6; i++) assert.equal(await login(`203.0.113.${20 + i}`, a, 'guess'), 'invalid');
    for (let i = 1; i <= 6; i++) await login(`203.0.113.${20 + i}`, colleague, 'guess');
    const held = [];
    for (let i = 1; i <= 6; i++) held.push(await login(`203.0.113.${20 + i}`, a, 'guess 2'));
    assert.deepEqual(held, ['invalid', 'invalid', 'locked', 'locked', 'locked', 'locked']);
    assert.equal(await login(office, a, 'correct horse battery staple'), 'ok');
    // the minute's count holds the two attempts checked, not the refusals
    assert.equal(await r.redis.get(`auth:rate:acct:${a}`), '2');
  },
);

test(
  'a Redis that fails commands makes a login a temporary failure: never a login, never a wrong password',
  {
    timeout: 20_000,
  },
  async (t) => {
    // the lockout state on a Redis of its own that can be made to fail; accounts stay on the shared one
    const failing = await startPrivateRedis();
    t.after(() => failing.close());
    const guard = new LoginGuard(failing.client(), policy({ baseLockSeconds: 60 }));
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

test(
  'Redis full: wrong passwords are counted and lock the address; the owner gets in, under attack too',
  { timeout: 30_000 },
  async (t) => {
    // the lockout state on a Redis of its own at its maxmemory; accounts stay on the shared one
    const full = await startPrivateRedis();
    t.after(() => full.close());
    const guard = new LoginGuard(
      full.client(),
      policy({ ipThreshold: 4, accountThreshold: 8, accountAttemptsPerMinute: 2 }),
    );
    const auth = createAuthenticator({ directory: dir, guard, appPasswords: new AppPasswords(r.redis) });
    const a = await account();
    const login = async (ip: string, password: string, user = a) => {
      const res = await auth.authenticate({ ip, username: user, password });
      return res.ok ? 'ok' : res.reason;
    };
    await full.whileFull(async () => {
      // a wrong password is answered as one, not as a temporary failure, and counted
      for (let i = 0; i < 3; i++) assert.equal(await login('192.0.2.9', `guess ${i}`), 'invalid');
      assert.equal(await login('192.0.2.9', PASSWORD), 'locked', 'the guessing address is locked');
      assert.equal(await login('198.51.100.7', PASSWORD), 'ok', 'the owner from elsewhere is not');

      // the owner mistypes once from the office; guessers put the account under attack
      const office = '198.51.100.70';
      assert.equal(await login(office, 'a typo'), 'invalid');
      for (let i = 1; i <= 4; i++) assert.equal(await login(`203.0.113.${i}`, 'guess'), 'invalid');
      // the owner's address failed for the account too: it takes one of the minute's attempts
      assert.equal(await login(office, PASSWORD), 'ok');
      const held = [];
      for (let i = 1; i <= 3; i++) held.push(await login(`203.0.113.${i}`, 'guess 2'));
      assert.deepEqual(held, ['invalid', 'locked', 'locked'], 'the second of two a minute, then held back');

      // one address failing over many accounts is locked for all of them
      for (const user of ['x1@example.test', 'x2@example.test', 'x3@example.test', 'x4@example.test'])
        assert.equal(await login('192.0.2.200', 'guess', user), 'invalid');
      assert.equal(await login('192.0.2.200', PASSWORD), 'locked', 'another account from that address');
    });
  },
);

/** Sessions of a fresh account, watched: `ended` maps each session's label to why it ended. */
async function watchedSessions(t: { after: (fn: () => void) => void }) {
  const a = await account();
  const apps = new AppPasswords(r.redis);
  const revocations = new CredentialRevocations(r.redis, apps);
  revocations.start();
  t.after(() => revocations.close());
  const auth = createAuthenticator({
    directory: dir,
    guard: new LoginGuard(r.redis, policy()),
    appPasswords: apps,
  });
  const ended = new Map<string, string>();
  const session = async (label: string, secret: string) => {
    const res = await auth.authenticate({ ip: '192.0.2.50', username: a, password: secret });
    assert.ok(res.ok);
    revocations.watch(a, res.credential, (why) => ended.set(label, why));
  };
  return { a, apps, ended, session };
}

test(
  'a revoked app password ends the sessions that logged in with it, and only those',
  { timeout: 20_000 },
  async (t) => {
    const { a, apps, ended, session } = await watchedSessions(t);
    const phone = await apps.create(a, 'phone');
    await session('phone 1', phone);
    await session('phone 2', phone);
    await session('laptop', await apps.create(a, 'laptop'));
    await apps.revoke(a, 'phone');
    await waitFor(() => ended.size === 2, { what: 'both phone sessions ended' });
    // a new app password of the same name, logged in right away, is not taken for the old one
    await session('new phone', await apps.create(a, 'phone'));
    await apps.revoke(a, 'laptop');
    await waitFor(() => ended.has('laptop'), { what: 'the laptop session ended' });
    assert.deepEqual([...ended.keys()].sort(), ['laptop', 'phone 1', 'phone 2']);
  },
);

test(
  'sign out everywhere ends every session of the account; a new password ends those of the old one',
  { timeout: 20_000 },
  async (t) => {
    const { a, apps, ended, session } = await watchedSessions(t);
    const phone = await apps.create(a, 'phone');
    await session('password', PASSWORD);
    await session('phone', phone);
    assert.equal(await signOutEverywhere(r.redis, a), true);
    await waitFor(() => ended.size === 2, { what: 'both sessions ended' });
    assert.deepEqual(Object.fromEntries(ended), { password: 'signed-out', phone: 'signed-out' });
    assert.equal(await signOutEverywhere(r.redis, 'nobody@example.test'), false);
    assert.equal(await dir.accountRecord('nobody@example.test'), null);
    // logging in again after the sign-out works, and those sessions stay
    ended.clear();
    await session('password again', PASSWORD);
    await session('phone again', phone);
    await dir.setPassword(a, 'a brand new passphrase');
    await announceRevocation(r.redis, a);
    await waitFor(() => ended.size === 1, { what: 'the password session ended' });
    assert.deepEqual(Object.fromEntries(ended), { 'password again': 'password-changed' });
  },
);

test(
  'a change announced while the stored records cannot be read still ends its sessions once they can',
  { timeout: 30_000 },
  async (t) => {
    const failing = await startPrivateRedis();
    t.after(() => failing.close());
    const redis = failing.client();
    const directory = new Directory(redis);
    await directory.addDomain('example.test');
    const a = await directory.addUser('dan@example.test', PASSWORD);
    const apps = new AppPasswords(redis);
    let errors = 0;
    const revocations = new CredentialRevocations(redis, apps, () => errors++);
    revocations.start();
    t.after(() => revocations.close());
    const auth = createAuthenticator({
      directory,
      guard: new LoginGuard(redis, policy()),
      appPasswords: apps,
    });
    const res = await auth.authenticate({ ip: '192.0.2.51', username: a, password: PASSWORD });
    assert.ok(res.ok);
    let ended = '';
    revocations.watch(a, res.credential, (why) => (ended = why));
    // the session's first check, which finds nothing changed, is done before Redis fails
    await redis.hgetall(`account:${a}`);
    await failing.refuse(['hgetall']);
    await directory.setPassword(a, 'a brand new passphrase');
    await announceRevocation(redis, a);
    await waitFor(() => errors > 0, { what: 'the check failed' });
    // checked again while Redis still fails, told of once: not at every recheck
    const refusedChecks = async () =>
      Number(
        /cmdstat_hgetall:.*rejected_calls=(\d+)/.exec(String(await redis.info('commandstats')))?.[1] ?? 0,
      );
    await waitFor(async () => (await refusedChecks()) >= 3, { what: 'two more checks', timeoutMs: 15_000 });
    assert.equal(errors, 1, 'the failure is logged once');
    // the subscription never dropped: only checking again finds the change
    await redis.call('ACL', 'SETUSER', 'default', '+hgetall');
    await waitFor(() => ended, { what: 'the session of the old password ended', timeoutMs: 15_000 });
    assert.equal(ended, 'password-changed');
  },
);

test('a locked account logs in with nothing, cached logins included, until it is unlocked', async () => {
  await dir.addUser('locked@example.test', 'correct horse battery staple');
  const apps = new AppPasswords(r.redis);
  const cache = new CredentialCache({ ttlMs: 60_000 });
  const auth = createAuthenticator({
    directory: dir,
    guard: new LoginGuard(r.redis, policy({ accountIpThreshold: 100 })),
    appPasswords: apps,
    cache,
  });
  const secret = await apps.create('locked@example.test', 'phone');
  const login = (password: string) =>
    auth.authenticate({ ip: '192.0.2.9', username: 'locked@example.test', password });
  // both are remembered by the cache before the lock
  assert.equal((await login('correct horse battery staple')).ok, true);
  assert.equal((await login(secret)).ok, true);
  await dir.setLocked('locked@example.test', true);
  assert.deepEqual(await login('correct horse battery staple'), { ok: false, reason: 'invalid' });
  assert.deepEqual(await login(secret), { ok: false, reason: 'invalid' });
  await dir.setLocked('locked@example.test', false);
  assert.equal((await login('correct horse battery staple')).ok, true);
  assert.equal((await login(secret)).ok, true);
});

test(
  'wrong inputs after ten wrong codes do not keep the owner out past 15 minutes',
  { timeout: 30_000 },
  async () => {
    const account = 'twofactor@example.test';
    await dir.addUser(account, PASSWORD);
    let clock = Date.now();
    const guard = new LoginGuard(
      r.redis,
      policy({ accountIpThreshold: 100, accountAttemptsPerMinute: 1000 }),
    );
    const tf = new TwoFactor(r.redis, guard, { now: () => clock });
    const code = () => generate({ secret, epoch: Math.floor(clock / 1000) });
    const { secret } = await tf.begin(account);
    assert.ok(await tf.confirm(account, await code()));
    let ip = 0;
    const verify = (input: string) => tf.verify(account, input, `192.0.2.${++ip}`);
    for (let i = 1; i < MAX_CODE_FAILURES; i++)
      assert.deepEqual(await verify(String(300000 + i)), { ok: false, reason: 'invalid' });
    assert.deepEqual(await verify('399999'), { ok: false, reason: 'too-many-codes' });
    // whoever has the password goes on typing, codes and recovery-code-shaped input alike
    for (let minute = 1; minute < 15; minute++) {
      clock += 60_000;
      assert.deepEqual(await verify('abcde-fghij'), { ok: false, reason: 'invalid' });
      assert.deepEqual(await verify('123456'), { ok: false, reason: 'too-many-codes' });
      assert.deepEqual(await verify(await code()), { ok: false, reason: 'too-many-codes' });
    }
    // 15 minutes after the cap was reached, the owner's right code is taken
    clock += 60_000;
    assert.deepEqual(await verify(await code()), { ok: true, via: 'totp' });
  },
);

test(
  'after two-factor is turned off and on again, the wrong codes typed before do not refuse the new ones',
  { timeout: 30_000 },
  async () => {
    const account = 'reset@example.test';
    await dir.addUser(account, PASSWORD);
    let clock = Date.now();
    const guard = new LoginGuard(r.redis, policy({ accountIpThreshold: 100 }));
    const tf = new TwoFactor(r.redis, guard, { now: () => clock });
    const enrol = async () => {
      const { secret } = await tf.begin(account);
      assert.ok(await tf.confirm(account, await generate({ secret, epoch: Math.floor(clock / 1000) })));
      return secret;
    };
    await enrol();
    // the owner lost the authenticator, tried codes, and had an administrator reset it
    for (let i = 1; i < MAX_CODE_FAILURES; i++)
      assert.deepEqual(await tf.verify(account, String(300000 + i), '192.0.2.60'), {
        ok: false,
        reason: 'invalid',
      });
    assert.deepEqual(await tf.verify(account, '399999', '192.0.2.60'), {
      ok: false,
      reason: 'too-many-codes',
    });
    await tf.disable(account);
    clock += 30_000;
    const secret = await enrol();
    // a code of the next step (the enrolment used this one's) from the new authenticator
    clock += 30_000;
    const next = await generate({ secret, epoch: Math.floor(clock / 1000) });
    assert.deepEqual(await tf.verify(account, next, '192.0.2.60'), { ok: true, via: 'totp' });
  },
);
