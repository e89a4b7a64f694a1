// The cache of verified credentials, against real Redis: what it must never accept.
import assert from 'node:assert/strict';
import { inspect } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { Directory } from '@mailyard/directory';
import { createTestRedis, type TestRedis } from '@mailyard/testkit';
import {
  AppPasswords,
  CredentialCache,
  DEFAULT_LOCKOUT,
  LoginGuard,
  createAuthenticator,
  type LockoutPolicy,
} from '../src/index.js';

const PASSWORD = 'correct horse battery staple';
const NEW_PASSWORD = 'another long passphrase 42';
const IP = '192.0.2.10';
const LENIENT: LockoutPolicy = {
  ...DEFAULT_LOCKOUT,
  accountIpThreshold: 100,
  ipThreshold: 1000,
  accountThreshold: 1000,
  windowSeconds: 60,
  baseLockSeconds: 10,
  maxLockSeconds: 100,
};

let r: TestRedis;
let dir: Directory;
let apps: AppPasswords;
let n = 0;

before(async () => {
  r = createTestRedis();
  dir = new Directory(r.redis);
  apps = new AppPasswords(r.redis);
  await dir.addDomain('example.test');
});
after(() => r.cleanup());

/** A fresh account, so the tests do not share lockout counters or cache entries. */
async function account(): Promise<string> {
  const a = `user${++n}@example.test`;
  await dir.addUser(a, PASSWORD);
  return a;
}

/** An app password as the authenticator names it: its name and stored record. */
async function credential(a: string, name: string) {
  return { name, record: (await apps.records(a))[name]! };
}

function setup(opts: { ttlMs?: number; maxEntries?: number; policy?: LockoutPolicy } = {}) {
  let clock = 1_000_000;
  const cache = new CredentialCache({
    ttlMs: opts.ttlMs ?? 60_000,
    maxEntries: opts.maxEntries,
    now: () => clock,
  });
  const auth = createAuthenticator({
    directory: dir,
    guard: new LoginGuard(r.redis, opts.policy ?? LENIENT),
    appPasswords: apps,
    cache,
  });
  return {
    cache,
    // what the session would watch is checked in auth.test.ts; here, who logged in and how
    login: async (username: string, password: string) => {
      const res = await auth.authenticate({ ip: IP, username, password });
      if (!res.ok) return res;
      const { credential: _, ...rest } = res;
      return rest;
    },
    advance: (ms: number) => {
      clock += ms;
    },
  };
}

void describe('cache of verified credentials', () => {
  void it('answers a repeated correct login from the cache, without hashing again', async (ctx) => {
    const a = await account();
    const { cache, login } = setup();
    let t = process.hrtime.bigint();
    assert.deepEqual(await login(a, PASSWORD), { ok: true, account: a, via: 'password', cached: false });
    const hashed = Number(process.hrtime.bigint() - t);
    t = process.hrtime.bigint();
    assert.deepEqual(await login(a.toUpperCase(), PASSWORD), {
      ok: true,
      account: a,
      via: 'password',
      cached: true,
    });
    const cached = Number(process.hrtime.bigint() - t);
    assert.deepEqual(cache.stats, { hits: 1, misses: 1, stale: 0 });
    // informative only: timings on a shared machine are not asserted
    ctx.diagnostic(`first login ${(hashed / 1e6).toFixed(1)} ms, cached ${(cached / 1e6).toFixed(1)} ms`);
    // neither the password nor its plain hash is kept
    const dump = inspect(cache, { depth: 10, showHidden: true });
    assert.doesNotMatch(dump, /horse/);
  });

  void it('refuses a wrong password after a cached success, and counts it for the lockout', async () => {
    const a = await account();
    const { cache, login } = setup({ policy: { ...LENIENT, accountIpThreshold: 3 } });
    assert.equal((await login(a, PASSWORD)).ok, true);
    for (let i = 0; i < 3; i++)
      assert.deepEqual(await login(a, 'wrong password'), { ok: false, reason: 'invalid' });
    assert.equal(cache.size, 1, 'failures are not cached');
    // the account is locked now: the cached right password is refused too
    const locked = await login(a, PASSWORD);
    assert.equal(!locked.ok && locked.reason, 'locked');
    assert.equal(cache.stats.hits, 0);
  });

  void it('refuses the old password at once after a password change', async () => {
    const a = await account();
    const { cache, login } = setup();
    assert.equal((await login(a, PASSWORD)).ok, true);
    assert.equal((await login(a, PASSWORD)).ok && cache.stats.hits, 1);
    await dir.setPassword(a, NEW_PASSWORD);
    assert.deepEqual(await login(a, PASSWORD), { ok: false, reason: 'invalid' });
    assert.equal(cache.stats.stale, 1);
    assert.deepEqual(await login(a, NEW_PASSWORD), { ok: true, account: a, via: 'password', cached: false });
    assert.deepEqual(await login(a, NEW_PASSWORD), { ok: true, account: a, via: 'password', cached: true });
  });

  void it('refuses a revoked app password at once, also when the name is reused', async () => {
    const a = await account();
    const { cache, login } = setup();
    const secret = await apps.create(a, 'phone');
    // the app password it logged in with comes back, for the session to watch
    const appPassword = await credential(a, 'phone');
    assert.deepEqual(await login(a, secret), {
      ok: true,
      account: a,
      via: 'app-password',
      cached: false,
      appPassword,
    });
    assert.deepEqual(await login(a, secret), {
      ok: true,
      account: a,
      via: 'app-password',
      cached: true,
      appPassword,
    });
    await apps.revoke(a, 'phone');
    assert.deepEqual(await login(a, secret), { ok: false, reason: 'invalid' });
    const again = await apps.create(a, 'phone');
    assert.deepEqual(await login(a, secret), { ok: false, reason: 'invalid' });
    assert.equal((await login(a, again)).ok, true);
    assert.equal(cache.stats.hits, 1);
  });

  void it('keeps app passwords apart: revoking one leaves the others cached', async () => {
    const a = await account();
    const { login } = setup();
    const phone = await apps.create(a, 'phone');
    const laptop = await apps.create(a, 'laptop');
    for (const s of [phone, laptop]) assert.equal((await login(a, s)).ok, true);
    await apps.revoke(a, 'phone');
    assert.deepEqual(await login(a, laptop), {
      ok: true,
      account: a,
      via: 'app-password',
      cached: true,
      appPassword: await credential(a, 'laptop'),
    });
    assert.deepEqual(await login(a, phone), { ok: false, reason: 'invalid' });
  });

  void it('refuses a deleted account, by password and by app password', async () => {
    const a = await account();
    const { login } = setup();
    const secret = await apps.create(a, 'tablet');
    assert.equal((await login(a, PASSWORD)).ok, true);
    assert.equal((await login(a, secret)).ok, true);
    await dir.delUser(a);
    assert.deepEqual(await login(a, PASSWORD), { ok: false, reason: 'invalid' });
    assert.deepEqual(await login(a, secret), { ok: false, reason: 'invalid' });
  });

  void it('takes the full path again after any change to the account record', async () => {
    // a field added to the account later (say, a disabled flag) is seen by the full path
    const a = await account();
    const { login } = setup();
    assert.equal((await login(a, PASSWORD)).ok, true);
    await r.redis.hset(`account:${a}`, 'note', 'changed');
    assert.deepEqual(await login(a, PASSWORD), { ok: true, account: a, via: 'password', cached: false });
  });

  void it('forgets a login after the TTL', async () => {
    const a = await account();
    const { cache, login, advance } = setup({ ttlMs: 5_000 });
    assert.equal((await login(a, PASSWORD)).ok, true);
    advance(4_999);
    assert.equal((await login(a, PASSWORD)).ok && (await login(a, PASSWORD)).ok, true);
    assert.equal(cache.stats.hits, 2);
    advance(2);
    assert.deepEqual(await login(a, PASSWORD), { ok: true, account: a, via: 'password', cached: false });
    assert.equal(cache.stats.hits, 2);
  });

  void it('caches nothing with a TTL of 0', async () => {
    const a = await account();
    const { cache, login } = setup({ ttlMs: 0 });
    assert.equal((await login(a, PASSWORD)).ok, true);
    assert.deepEqual(await login(a, PASSWORD), { ok: true, account: a, via: 'password', cached: false });
    assert.equal(cache.size, 0);
  });

  void it('keeps at most maxEntries, dropping the oldest', async () => {
    const a = await account();
    const { cache, login } = setup({ maxEntries: 2 });
    const one = await apps.create(a, 'one');
    const two = await apps.create(a, 'two');
    for (const p of [PASSWORD, one, two]) assert.equal((await login(a, p)).ok, true);
    assert.equal(cache.size, 2);
    assert.equal((await login(a, two)).ok && cache.stats.hits, 1);
    assert.deepEqual(await login(a, PASSWORD), { ok: true, account: a, via: 'password', cached: false });
  });
});
