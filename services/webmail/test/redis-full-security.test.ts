// What a user or an administrator does because something is wrong works while the
// webmail's Redis is at its maxmemory (noeviction): signing out everywhere, a new password
// (the user's or an administrator's), a lock, a deletion, an app password revoked and
// two-factor login turned off each end the access they are meant to end, the webmail's
// sessions and, on every instance, the protocol sessions (CredentialRevocations, as IMAP,
// POP3 and submission watch them); forwarding is turned off, or one of its targets taken
// out. What would add access or data (a new app password, two-factor enrolment, a
// forwarding target) is a temporary failure, 503 "try again", with nothing of it stored.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { generate } from 'otplib';
import {
  AppPasswords,
  CredentialRevocations,
  sessionCredential,
  type EndReason,
  type SessionCredential,
} from '@mailyard/auth';
import { Directory } from '@mailyard/directory';
import { startPrivateRedis, type PrivateRedis } from '@mailyard/testkit';
import type { Redis } from 'ioredis';
import { addAccount } from '../../../test/harness.js';
import { PASSWORD, startWebmailTestbed, type WebmailTestbed } from './webmail-harness.js';
import { WebClient, type WebResponse } from './web-client.js';

const PREFIX = 'webmail-full:';
const ADMIN = 'root@example.test';
const NEW_PASSWORD = 'another horse battery staple';
let redis: PrivateRedis;
let db: Redis;
let dir: Directory;
let revocations: CredentialRevocations;
let t: WebmailTestbed;
let port: number;
let admin: WebClient;
let n = 0;

before(async () => {
  redis = await startPrivateRedis();
  t = await startWebmailTestbed();
  db = redis.client({ keyPrefix: PREFIX });
  dir = new Directory(db);
  await addAccount(dir, ADMIN);
  await dir.setAdmin(ADMIN, true);
  // what IMAP, POP3 and submission watch their sessions with, on this Redis
  revocations = new CredentialRevocations(db, new AppPasswords(db));
  revocations.start();
  port = (await t.another({ redis_url: redis.url, redis_prefix: PREFIX, redis_command_timeout: '2s' })).port;
  admin = await loggedIn(ADMIN);
});
after(async () => {
  revocations?.close();
  await t?.close();
  await redis?.close();
});

/** A new account of the test's own (nothing of one test reaches another). */
async function newAccount(): Promise<string> {
  const account = `user${++n}@example.test`;
  await addAccount(dir, account);
  return account;
}

async function loggedIn(account: string): Promise<WebClient> {
  const c = new WebClient(port, t.ca);
  const res = await c.login(account);
  assert.equal(res.status, 200, res.text);
  return c;
}

/** A protocol session of the account as IMAP watches it: `ended` resolves with why it ended. */
function protocolSession(account: string, credential: SessionCredential): { ended: Promise<EndReason> } {
  return { ended: new Promise((resolve) => revocations.watch(account, credential, resolve)) };
}

async function passwordSession(account: string): Promise<{ ended: Promise<EndReason> }> {
  return protocolSession(account, sessionCredential((await dir.accountRecord(account))!, 'password'));
}

/**
 * A new account logged in to the webmail (`user`, and `others` when it logs in more than
 * once), with a protocol session of its password.
 */
async function inUse(logins = 1): Promise<{
  account: string;
  user: WebClient;
  others: WebClient[];
  imap: { ended: Promise<EndReason> };
}> {
  const account = await newAccount();
  const user = await loggedIn(account);
  const others: WebClient[] = [];
  while (others.length < logins - 1) others.push(await loggedIn(account));
  return { account, user, others, imap: await passwordSession(account) };
}

/** Whether the webmail session still serves its client. */
const stillIn = async (c: WebClient) => (await c.get('/api/account')).status === 200;

function unavailable(res: WebResponse, what: string): void {
  assert.equal(res.status, 503, `${what}: ${res.status} ${res.text}`);
  assert.equal(res.json?.error, 'unavailable', `${what}: ${res.text}`);
  assert.match(res.json.message, /try again/, what);
}

test(
  'Redis full: signing out everywhere ends the webmail and the protocol sessions',
  { timeout: 60_000 },
  async () => {
    const { user, others, imap } = await inUse(2);
    await redis.whileFull(async () => {
      const res = await user.post('/api/account/sign-out-everywhere');
      assert.equal(res.status, 200, res.text);
      assert.equal(res.json.ended, 2);
      for (const c of [user, ...others]) assert.equal(await stillIn(c), false);
      assert.equal(await imap.ended, 'signed-out');
    });
  },
);

test(
  'Redis full: a new password ends the other sessions, this one goes on',
  { timeout: 60_000 },
  async () => {
    const { account, user, others, imap } = await inUse(2);
    await redis.whileFull(async () => {
      const res = await user.post('/api/account/password', { current: PASSWORD, password: NEW_PASSWORD });
      assert.equal(res.status, 200, res.text);
      assert.equal(res.json.changed, true);
      user.csrf = res.json.csrf;
      assert.equal(await stillIn(user), true);
      for (const c of others) assert.equal(await stillIn(c), false);
      assert.equal(await imap.ended, 'password-changed');
    });
    assert.ok(await dir.authenticate(account, NEW_PASSWORD), 'the new password is the one');
  },
);

test('Redis full: an administrator locks an account, and its sessions end', { timeout: 60_000 }, async () => {
  const { account, user, imap } = await inUse();
  await redis.whileFull(async () => {
    const res = await admin.post(`/api/admin/accounts/${account}/lock`);
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json.sessionsEnded, 1);
    assert.equal(await stillIn(user), false);
    assert.equal(await imap.ended, 'signed-out');
  });
  assert.ok((await dir.accountRecord(account))?.locked);
  const login = await new WebClient(port, t.ca).login(account);
  assert.equal(login.status, 401, login.text);
});

test(
  'Redis full: an administrator sets a password, and the sessions of the old one end',
  { timeout: 60_000 },
  async () => {
    const { account, user, imap } = await inUse();
    await redis.whileFull(async () => {
      const res = await admin.post(`/api/admin/accounts/${account}/password`, { password: NEW_PASSWORD });
      assert.equal(res.status, 200, res.text);
      assert.equal(await stillIn(user), false);
      assert.equal(await imap.ended, 'password-changed');
    });
    assert.ok(await dir.authenticate(account, NEW_PASSWORD));
  },
);

test(
  'Redis full: an administrator deletes an account, and its sessions end',
  { timeout: 60_000 },
  async () => {
    const { account, user, imap } = await inUse();
    await redis.whileFull(async () => {
      const res = await admin.req('DELETE', `/api/admin/accounts/${account}`);
      assert.equal(res.status, 200, res.text);
      assert.equal(res.json.deleted, account);
      assert.equal(await stillIn(user), false);
      assert.equal(await imap.ended, 'account-gone');
    });
    assert.equal(await dir.accountExists(account), false);
    // what the deletion could not do at maxmemory (its audit entry) is done by deleting again
    const again = await admin.req('DELETE', `/api/admin/accounts/${account}`);
    assert.ok([200, 404].includes(again.status), again.text);
  },
);

test(
  'Redis full: an app password revoked, by its user or an administrator, ends its sessions',
  { timeout: 60_000 },
  async () => {
    const account = await newAccount();
    const user = await loggedIn(account);
    const apps = new AppPasswords(db);
    await apps.create(account, 'phone');
    await apps.create(account, 'laptop');
    const records = await apps.records(account);
    const session = (name: string) =>
      protocolSession(account, { signOut: '0', appPassword: { name, record: records[name]! } });
    const [phone, laptop] = [session('phone'), session('laptop')];
    await redis.whileFull(async () => {
      const own = await user.post('/api/account/app-passwords/revoke', { name: 'phone' });
      assert.equal(own.status, 200, own.text);
      assert.equal(await phone.ended, 'app-password-revoked');
      const res = await admin.post(`/api/admin/accounts/${account}/app-passwords/revoke`, { name: 'laptop' });
      assert.equal(res.status, 200, res.text);
      assert.equal(await laptop.ended, 'app-password-revoked');
    });
    assert.deepEqual(await apps.list(account), []);
  },
);

test(
  'Redis full: a new app password is a 503, and nothing of it is stored',
  { timeout: 60_000 },
  async () => {
    const account = await newAccount();
    const user = await loggedIn(account);
    const before = await db.hgetall(`apppw:${account}`);
    await redis.whileFull(async () => {
      unavailable(
        await user.post('/api/account/app-passwords', { name: 'phone', password: PASSWORD }),
        'user',
      );
      assert.deepEqual(await db.hgetall(`apppw:${account}`), before);
    });
    const later = await user.post('/api/account/app-passwords', { name: 'phone', password: PASSWORD });
    assert.equal(later.status, 200, later.text);
  },
);

test('Redis full: forwarding is turned off', { timeout: 60_000 }, async () => {
  const { user } = await inUse();
  const on = await user.post('/api/account/forwarding', {
    targets: ['someone@elsewhere.test'],
    keepCopy: false,
  });
  assert.equal(on.status, 200, on.text);
  await redis.whileFull(async () => {
    const off = await user.post('/api/account/forwarding', { targets: [], keepCopy: true });
    assert.equal(off.status, 200, off.text);
    assert.deepEqual((await user.get('/api/account/forwarding')).json.targets, []);
  });
});

test(
  'Redis full: one forwarding target of several is taken out; one added is refused',
  { timeout: 60_000 },
  async () => {
    const { user } = await inUse();
    const on = await user.post('/api/account/forwarding', {
      targets: ['friend@elsewhere.test', 'someone@elsewhere.test'],
      keepCopy: false,
    });
    assert.equal(on.status, 200, on.text);
    await redis.whileFull(async () => {
      const fewer = await user.post('/api/account/forwarding', {
        targets: ['friend@elsewhere.test'],
        keepCopy: true,
      });
      assert.equal(fewer.status, 200, fewer.text);
      const more = await user.post('/api/account/forwarding', {
        targets: ['friend@elsewhere.test', 'another@elsewhere.test'],
        keepCopy: true,
      });
      unavailable(more, 'a target added');
    });
    const now = (await user.get('/api/account/forwarding')).json;
    assert.deepEqual([now.targets, now.keepCopy], [['friend@elsewhere.test'], true]);
  },
);

/** Two-factor login turned on through the account page; the session that did it. */
async function withTwoFactor(): Promise<{ account: string; user: WebClient }> {
  const account = await newAccount();
  const user = await loggedIn(account);
  const begin = await user.post('/api/account/two-factor/begin', { password: PASSWORD });
  assert.equal(begin.status, 200, begin.text);
  const code = await generate({ secret: begin.json.secret });
  const on = await user.post('/api/account/two-factor/confirm', { code });
  assert.equal(on.status, 200, on.text);
  user.csrf = on.json.csrf;
  return { account, user };
}

test(
  'Redis full: two-factor login is turned off, by its user or an administrator',
  { timeout: 60_000 },
  async () => {
    const first = await withTwoFactor();
    const second = await withTwoFactor();
    await redis.whileFull(async () => {
      const own = await first.user.post('/api/account/two-factor/disable', { password: PASSWORD });
      assert.equal(own.status, 200, own.text);
      const reset = await admin.post(`/api/admin/accounts/${second.account}/two-factor/reset`);
      assert.equal(reset.status, 200, reset.text);
    });
    for (const { account } of [first, second])
      assert.equal((await dir.accountRecord(account))?.totp, undefined);
  },
);

test(
  'Redis full: enrolling in two-factor login is a 503, and it stays off',
  { timeout: 60_000 },
  async () => {
    const account = await newAccount();
    const user = await loggedIn(account);
    const begin = await user.post('/api/account/two-factor/begin', { password: PASSWORD });
    assert.equal(begin.status, 200, begin.text);
    await redis.whileFull(async () => {
      unavailable(await user.post('/api/account/two-factor/begin', { password: PASSWORD }), 'begin');
      const code = await generate({ secret: begin.json.secret });
      unavailable(await user.post('/api/account/two-factor/confirm', { code }), 'confirm');
      assert.equal((await dir.accountRecord(account))?.totp, undefined);
      assert.equal(await stillIn(user), true, 'the session is not ended for a change not made');
    });
  },
);
