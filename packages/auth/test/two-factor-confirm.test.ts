// Two-factor login confirmed as its account is deleted, against Redis: the deletion runs
// to its end right after the confirmation has read the enrolment (the interleaving
// forced, not timed), and the confirmation is then refused, so no record holding only the
// secret is left to pass for an account and refuse a new one of the address.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { generate } from 'otplib';
import { createTestRedis, interleavedRedis } from '@mailyard/testkit';
import { Directory, DirectoryError } from '@mailyard/directory';
import { LoginGuard, TwoFactor } from '../src/index.js';

const r = createTestRedis();
after(() => r.cleanup());
const PASSWORD = 'correct horse battery staple';
const directory = new Directory(r.redis);
await directory.addDomain('confirm.test');
const guard = new LoginGuard(r.redis);
const code = (secret: string) => generate({ secret, epoch: Math.floor(Date.now() / 1000) });

test(
  'two-factor confirmed as its account is deleted is refused, and a new account of the address can be made',
  { timeout: 10_000 },
  async () => {
    const a = 'gone@confirm.test';
    await directory.addUser(a, PASSWORD);
    const { secret } = await new TwoFactor(r.redis, guard).begin(a);
    const confirming = new TwoFactor(
      interleavedRedis(
        r.redis,
        (command, args) => command === 'get' && args[0] === `totp:pending:${a}`,
        () => directory.delUser(a),
      ),
      guard,
    );
    await assert.rejects(confirming.confirm(a, await code(secret)), (err: unknown) => {
      assert.ok(err instanceof DirectoryError, String(err));
      assert.deepEqual([err.code, err.message], ['not_found', `account ${a} does not exist`]);
      return true;
    });
    assert.equal(await directory.accountExists(a), false);
    assert.equal(await r.redis.exists(`totp:recovery:${a}`), 0);
    await directory.addUser(a, PASSWORD);
    assert.equal(await new TwoFactor(r.redis, guard).enabled(a), false);
  },
);

test('two-factor confirmed for an account that is there is on', { timeout: 10_000 }, async () => {
  const a = 'here@confirm.test';
  await directory.addUser(a, PASSWORD);
  const tf = new TwoFactor(r.redis, guard);
  const { secret } = await tf.begin(a);
  const codes = await tf.confirm(a, await code(secret));
  assert.equal(codes?.length, await tf.recoveryCodesLeft(a));
  assert.equal(await tf.enabled(a), true);
  assert.equal(await r.redis.exists(`totp:pending:${a}`), 0);
});
