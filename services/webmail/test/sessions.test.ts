// The session store on its own, against Redis: a session that ended while a request ran
// (a sign-out everywhere, a new password, an account locked) does not come back when that
// request renews the id (after the second step of a login, or a password change), even
// when the ending comes between the renewal's end of the old id and its write of the new.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, test } from 'node:test';
import { createTestRedis, interleavedRedis } from '@mailyard/testkit';
import { SessionStore } from '../src/sessions.js';

const t = createTestRedis();
after(() => t.cleanup());
const timeouts = { idleMs: 60_000, absoluteMs: 3_600_000 };
const store = new SessionStore(t.redis, timeouts);

/** The key of a session's cookie value, as the client names it (before the key prefix). */
const sessionKey = (id: string) => `webmail:session:${createHash('sha256').update(id).digest('base64url')}`;

/** An account record, as the directory keeps it (the store only looks at whether it is there). */
const account = async (a: string) => {
  await t.redis.hset(`account:${a}`, 'password', '$argon2id$stand-in');
  return a;
};

/**
 * The store over the same Redis, but `between` runs right after its first DEL (a renewal's
 * end of the old id) and before anything else the store does: what another request of the
 * account did at that moment.
 */
function storeInterrupted(between: () => Promise<unknown>): SessionStore {
  let pending = true;
  const redis = new Proxy(t.redis, {
    get(target, prop) {
      const value: unknown = Reflect.get(target, prop, target);
      if (prop === 'del')
        return async (...keys: string[]) => {
          const n = await target.del(...keys);
          if (pending) {
            pending = false;
            await between();
          }
          return n;
        };
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
  return new SessionStore(redis, timeouts);
}

test(
  'renewing the id of a live session ends the old id and keeps the login',
  { timeout: 10_000 },
  async () => {
    const a = await account('ann@example.test');
    const { id, session } = await store.create(a, 'second-factor', await store.loginStamp(a));
    const fresh = await store.rotate(id, { ...session, stage: 'complete' });
    assert.ok(fresh);
    assert.equal(await store.get(id), null, 'the old id is no good');
    assert.deepEqual(await store.get(fresh.id), { ...session, stage: 'complete', csrf: fresh.session.csrf });
    assert.notEqual(fresh.session.csrf, session.csrf);
  },
);

test(
  'a session signed out everywhere while its request ran is not renewed',
  { timeout: 10_000 },
  async () => {
    const a = await account('bea@example.test');
    const { id, session } = await store.create(a, 'second-factor', await store.loginStamp(a));
    // the request read the session; then the account was signed out everywhere
    assert.ok(await store.get(id));
    assert.equal(await store.destroyAll(a), 1);
    assert.equal(await store.rotate(id, { ...session, stage: 'complete' }), null);
    assert.equal(await store.destroyAll(a), 0, 'no session of the account is live');
  },
);

test(
  "a sign-out everywhere between a renewal's end of the old id and its new id ends the new one",
  { timeout: 10_000 },
  async () => {
    const a = await account('cid@example.test');
    const { id, session } = await store.create(a, 'second-factor', await store.loginStamp(a));
    // the second step of the login renews the id; the owner signs out everywhere just as
    // the old id is gone and the new one not yet written: the ending finds neither
    const renewing = storeInterrupted(() => store.destroyAll(a));
    const fresh = await renewing.rotate(id, { ...session, stage: 'complete' });
    assert.equal(fresh && (await store.get(fresh.id)), null, 'the renewed id opens nothing');
    assert.equal(await store.get(id), null);
  },
);

test(
  "a new password set between another session's end of its old id and its new id ends it",
  { timeout: 10_000 },
  async () => {
    const a = await account('dan@example.test');
    const stamp = await store.loginStamp(a);
    const owner = await store.create(a, 'complete', stamp);
    const other = await store.create(a, 'second-factor', stamp);
    // the other login's second step renews its id while the owner's new password ends
    // every session but the owner's
    const renewing = storeInterrupted(() => store.endOthers(owner.id, owner.session));
    const fresh = await renewing.rotate(other.id, { ...other.session, stage: 'complete' });
    assert.equal(fresh && (await store.get(fresh.id)), null, 'the other login opens nothing');
    // the owner goes on, under its new id
    assert.equal(await store.get(owner.id), null);
    const [key] = await t.redis.smembers(`webmail:sessions:${a}`);
    assert.ok(key, "the owner's new id is kept");
  },
);

/** Two sessions of a new account; the owner's sets a new password: the other ends, the owner is renewed. */
async function newPasswordOfOneOfTwo(address: string) {
  const a = await account(address);
  const stamp = await store.loginStamp(a);
  const owner = await store.create(a, 'complete', stamp);
  const other = await store.create(a, 'complete', stamp);
  const { fresh, ended } = await store.endOthers(owner.id, owner.session);
  assert.ok(fresh);
  assert.equal(ended, 1);
  return { a, owner, other, fresh };
}

test(
  'the session that set a new password goes on, renewed; one ended just before it does not',
  { timeout: 10_000 },
  async () => {
    const { a, owner, other, fresh } = await newPasswordOfOneOfTwo('eve@example.test');
    assert.equal(await store.get(other.id), null);
    assert.equal(await store.get(owner.id), null, 'the old id is no good');
    assert.equal((await store.get(fresh.id))?.account, a);

    // signed out everywhere after this request read its session, before its new password
    const late = await store.create(a, 'complete', await store.loginStamp(a));
    assert.ok(await store.get(late.id));
    await store.destroyAll(a);
    const again = await store.endOthers(late.id, late.session);
    assert.equal(again.fresh, null, 'its session stays ended');
    assert.equal(await store.get(fresh.id), null);
  },
);

test(
  'a request of the session that sets a new password, arriving while it is set, does not end it',
  { timeout: 10_000 },
  async () => {
    const a = await account('ida@example.test');
    const owner = await store.create(a, 'complete', await store.loginStamp(a));
    // another request of the same session (the mail list refreshing) comes right after
    // the account's count went up
    const changing = new SessionStore(
      interleavedRedis(
        t.redis,
        (command, args) => command === 'eval' && args.includes(`account:${a}`),
        () => store.find(owner.id),
      ),
      timeouts,
    );
    const { fresh } = await changing.endOthers(owner.id, owner.session);
    assert.ok(fresh, 'the session that changed the password goes on');
    assert.deepEqual(await store.get(fresh.id), fresh.session);
    assert.equal(fresh.session.created, owner.session.created);
    assert.equal(await store.get(owner.id), null, 'the old id is no good');
  },
);

test(
  'a login checked before its account was signed out everywhere opens no session',
  { timeout: 10_000 },
  async () => {
    const a = await account('fay@example.test');
    // the count is read before the password is checked; the sign-out comes during the check
    const stamp = await store.loginStamp(a);
    await store.destroyAll(a);
    const { id } = await store.create(a, 'complete', stamp);
    assert.equal(await store.find(id), 'ended');
    assert.equal(await store.find(id), null, 'and its key is gone');
    // a login after the sign-out stays
    const later = await store.create(a, 'complete', await store.loginStamp(a));
    assert.equal((await store.get(later.id))?.account, a);
  },
);

test(
  'a session kept from before sessions carried the count goes on until the account ends its sessions',
  { timeout: 10_000 },
  async () => {
    const a = await account('gus@example.test');
    const { id, session } = await store.create(a, 'complete', { signOut: 0 });
    // as such a session was stored: without the count
    const { signOut: _, ...old } = session;
    const key = (await t.redis.smembers(`webmail:sessions:${a}`))[0]!;
    await t.redis.set(key, JSON.stringify(old), 'PX', 60_000);
    assert.equal((await store.get(id))?.account, a, 'it goes on');
    // written back as it was: the key outlives an ending only in a race, as above
    await store.destroyAll(a);
    await t.redis.set(key, JSON.stringify(old), 'PX', 60_000);
    assert.equal(await store.find(id), 'ended');
  },
);

test('a session of an account that is gone is ended', { timeout: 10_000 }, async () => {
  const a = await account('hal@example.test');
  const { id } = await store.create(a, 'complete', { signOut: 0 });
  await t.redis.del(`account:${a}`);
  assert.equal(await store.find(id), 'ended');
});

test(
  'a session of an account deleted and made again since its login is ended',
  { timeout: 10_000 },
  async () => {
    const a = await account('ivy@example.test');
    await t.redis.hset(`account:${a}`, 'created', '2026-01-01T00:00:00.000Z');
    const { id } = await store.create(a, 'complete', await store.loginStamp(a));
    assert.equal((await store.get(id))?.account, a);
    // the same address, another account
    await t.redis.del(`account:${a}`);
    await t.redis.hset(
      `account:${a}`,
      'password',
      '$argon2id$another',
      'created',
      '2026-02-01T00:00:00.000Z',
    );
    assert.equal(await store.find(id), 'ended');
    const again = await store.create(a, 'complete', await store.loginStamp(a));
    assert.equal((await store.get(again.id))?.account, a);
  },
);

test(
  'with a key prefix, a sign-out everywhere after a new password ends the renewed session too',
  { timeout: 10_000 },
  async () => {
    assert.ok(t.prefix, 'the keys live under a prefix');
    const { a, other, fresh } = await newPasswordOfOneOfTwo('jon@example.test');
    assert.equal(await t.redis.exists(sessionKey(other.id)), 0);
    assert.equal(await t.redis.exists(sessionKey(fresh.id)), 1, 'the renewed session goes on');
    // another session, then a password change again: the renewed one is kept, the new one ends
    const third = await store.create(a, 'complete', await store.loginStamp(a));
    const again = await store.endOthers(fresh.id, fresh.session);
    assert.ok(again.fresh);
    assert.equal(again.ended, 1);
    assert.equal(await t.redis.exists(sessionKey(third.id)), 0);

    assert.equal(await store.destroyAll(a), 1, 'the sign-out ends the live session');
    assert.equal(await t.redis.exists(sessionKey(again.fresh.id)), 0, 'its key is gone');
  },
);

test(
  'a session tracked under its prefixed key, as a renewal once kept it, is ended all the same',
  { timeout: 10_000 },
  async () => {
    const a = await account('kim@example.test');
    const set = `webmail:sessions:${a}`;
    /** Its member as a renewal wrote it before: with the key prefix. */
    const oldStyle = async (id: string) => {
      await t.redis.srem(set, sessionKey(id));
      await t.redis.sadd(set, `${t.prefix}${sessionKey(id)}`);
    };
    const stamp = await store.loginStamp(a);
    const owner = await store.create(a, 'complete', stamp);
    const other = await store.create(a, 'complete', stamp);
    await oldStyle(owner.id);
    await oldStyle(other.id);
    // a password change: the other ends; the owner is renewed, its old member goes
    const { fresh, ended } = await store.endOthers(owner.id, owner.session);
    assert.ok(fresh);
    assert.equal(ended, 1);
    assert.equal(await t.redis.exists(sessionKey(other.id)), 0);
    assert.deepEqual(await t.redis.smembers(set), [sessionKey(fresh.id)]);

    // kept across an upgrade while the session is live: a sign-out everywhere ends it
    const later = await store.create(a, 'complete', await store.loginStamp(a));
    await oldStyle(later.id);
    assert.equal(await store.destroyAll(a), 2);
    assert.equal(await t.redis.exists(sessionKey(later.id), sessionKey(fresh.id)), 0);
  },
);
