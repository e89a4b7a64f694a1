// The operator's `mailyard` against a Redis at its maxmemory (noeviction): what shuts
// someone out of an account (a lock, a new password, a deletion, two-factor reset, an app
// password revoked) is done, and so is what removes (an alias, an access entry); what adds
// (a new app password, an alias) is refused as a temporary failure (exit 75) that says
// Redis is full, with nothing stored.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { AppPasswords, TwoFactor, LoginGuard } from '@mailyard/auth';
import { Directory } from '@mailyard/directory';
import { startPrivateRedis, type PrivateRedis } from '@mailyard/testkit';
import type { Redis } from 'ioredis';
import { ExitCode } from '../src/errors.js';
import { GOOD_PASSWORD, cliHarness } from './harness.js';

const PREFIX = 'cli-full:';
let redis: PrivateRedis;
let db: Redis;
let dir: Directory;
let n = 0;

before(async () => {
  redis = await startPrivateRedis();
  db = redis.client({ keyPrefix: PREFIX });
  dir = new Directory(db);
  await dir.addDomain('example.test');
});
after(async () => {
  await redis?.close();
});

async function newAccount(): Promise<string> {
  return dir.addUser(`user${++n}@example.test`, GOOD_PASSWORD);
}

test(
  'Redis full: the CLI locks, sets a password, resets two-factor, revokes and deletes',
  { timeout: 60_000 },
  async (t) => {
    const cli = cliHarness(t);
    const env = { REDIS_URL: redis.url, REDIS_PREFIX: PREFIX };
    const [locked, passwd, twoFactor, revoked, deleted] = [
      await newAccount(),
      await newAccount(),
      await newAccount(),
      await newAccount(),
      await newAccount(),
    ];
    await db.hset(`account:${twoFactor}`, 'totp', 'JBSWY3DPEHPK3PXP');
    await new AppPasswords(db).create(revoked, 'phone');
    await redis.whileFull(async () => {
      await cli.ok(['user', 'lock', locked], { env });
      await cli.ok(['user', 'passwd', '--password-stdin', passwd], {
        env,
        input: 'another horse battery staple\n',
      });
      await cli.ok(['user', 'reset-2fa', twoFactor], { env });
      await cli.ok(['app-password', 'revoke', revoked, 'phone'], { env });
      // done, but its audit entry could not be written: said, and a retry finishes it
      const del = await cli.run(['user', 'del', deleted], { env });
      assert.match(del.stdout, /deleted account/, del.stderr);
    });
    assert.ok((await dir.accountRecord(locked))?.locked);
    assert.ok(await dir.authenticate(passwd, 'another horse battery staple'));
    assert.equal(await new TwoFactor(db, new LoginGuard(db)).enabled(twoFactor), false);
    assert.deepEqual(await new AppPasswords(db).list(revoked), []);
    assert.equal(await dir.accountExists(deleted), false);
  },
);

test('Redis full: a new app password is a temporary failure that says so', { timeout: 60_000 }, async (t) => {
  const cli = cliHarness(t);
  const env = { REDIS_URL: redis.url, REDIS_PREFIX: PREFIX };
  const account = await newAccount();
  await redis.whileFull(async () => {
    const res = await cli.run(['app-password', 'create', account, 'phone'], { env });
    assert.equal(res.code, ExitCode.tempfail, res.stderr);
    assert.match(res.stderr, /Redis is full .*try again/);
    assert.equal(res.stdout, '');
  });
  assert.deepEqual(await new AppPasswords(db).list(account), []);
});

test(
  'Redis full: the CLI removes an alias and an access entry; a new alias is a temporary failure',
  { timeout: 60_000 },
  async (t) => {
    const cli = cliHarness(t);
    const env = { REDIS_URL: redis.url, REDIS_PREFIX: PREFIX };
    await dir.addAlias('out@example.test', ['someone@elsewhere.test']);
    await cli.ok(['policy', 'access', 'set', 'sender_access', 'spam@elsewhere.test', 'REJECT'], { env });
    await redis.whileFull(async () => {
      await cli.run(['alias', 'del', 'out@example.test'], { env });
      await cli.run(['policy', 'access', 'del', 'sender_access', 'spam@elsewhere.test'], { env });
      const add = await cli.run(['alias', 'add', 'new@example.test', 'someone@elsewhere.test'], { env });
      assert.equal(add.code, ExitCode.tempfail, add.stderr);
      assert.match(add.stderr, /Redis is full .*try again/);
    });
    assert.deepEqual(await dir.listAliases('example.test'), []);
    assert.equal(await db.hlen('policy:access:sender_access'), 0);
  },
);
