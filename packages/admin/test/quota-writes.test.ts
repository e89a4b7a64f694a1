// A quota set on an account as it is deleted, against Redis: the deletion runs to its end
// right after the quota's write has found the account (the interleaving forced, not
// timed), and the write is then refused, so a new account of the address later does not
// start with the old one's quota.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { createTestRedis, interleavedRedis } from '@mailyard/testkit';
import { DirectoryError } from '@mailyard/directory';
import { Operations } from '../src/index.js';

const r = createTestRedis();
after(() => r.cleanup());
const PASSWORD = 'correct horse battery staple';
/** The other administrator, deleting the account in between. */
const other = new Operations(r.redis, 'cli:other');
await other.addDomain('quota-writes.test', { dkim: false });

/** The operations of the write: `a` is deleted once the write has checked that it exists. */
const deletedAfterCheck = (a: string) =>
  new Operations(
    interleavedRedis(
      r.redis,
      (command, args) => command === 'exists' && args[0] === `account:${a}`,
      () => other.delUser(a),
    ),
    'cli:root',
  );

const quotaOf = async (a: string) =>
  (await other.listAccounts('quota-writes.test')).find((v) => v.address === a)?.quota;

for (const [what, bytes] of [
  ['set', 1_048_576],
  ['set back to the default', null],
] as const)
  test(
    `a quota ${what} as its account is deleted is refused; a new account of the address has the default`,
    { timeout: 10_000 },
    async () => {
      const a = `q${bytes ?? 0}@quota-writes.test`;
      await other.addUser(a, PASSWORD);
      await assert.rejects(deletedAfterCheck(a).setQuota(a, bytes), (err: unknown) => {
        assert.ok(err instanceof DirectoryError, String(err));
        assert.deepEqual([err.code, err.message], ['not_found', `account ${a} does not exist`]);
        return true;
      });
      await other.addUser(a, PASSWORD);
      assert.equal(await quotaOf(a), null, 'the default quota');
    },
  );

test('a quota of an account that is there is set and set back', { timeout: 10_000 }, async () => {
  const a = 'here@quota-writes.test';
  await other.addUser(a, PASSWORD);
  assert.equal(await other.setQuota(a, 2048), a);
  assert.equal(await quotaOf(a), 2048);
  await other.setQuota(a, null);
  assert.equal(await quotaOf(a), null);
});
