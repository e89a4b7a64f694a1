// An account locked, given or refused the admin role, or given a password while it is
// deleted, against Redis: the deletion runs to its end right after the write has found
// the account (the interleaving forced, not timed), and the write is then refused, so no
// record of that one field is left to pass for an account.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { createTestRedis, interleavedRedis } from '@mailyard/testkit';
import { Directory, DirectoryError } from '../src/index.js';

const r = createTestRedis();
after(() => r.cleanup());
const PASSWORD = 'correct horse battery staple';
/** The directory of the other administrator, deleting the account in between. */
const other = new Directory(r.redis);
await other.addDomain('writes.test');

/** The directory of the write: `a` is deleted once the write has checked that it exists. */
const deletedAfterCheck = (a: string) =>
  new Directory(
    interleavedRedis(
      r.redis,
      (command, args) => command === 'exists' && args[0] === `account:${a}`,
      () => other.delUser(a),
    ),
  );

async function refusedAndGone(p: Promise<unknown>, a: string): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof DirectoryError, String(err));
    assert.deepEqual([err.code, err.message], ['not_found', `account ${a} does not exist`]);
    return true;
  });
  assert.equal(await other.accountExists(a), false);
  assert.equal(await r.redis.exists(`account:${a}`), 0);
  assert.deepEqual(await other.listUsers('writes.test'), []);
}

const writes: [string, (d: Directory, a: string) => Promise<unknown>][] = [
  ['locked', (d, a) => d.setLocked(a, true)],
  ['unlocked', (d, a) => d.setLocked(a, false)],
  ['given the admin role', (d, a) => d.setAdmin(a, true)],
  ['stripped of the admin role', (d, a) => d.setAdmin(a, false)],
  ['given a password', (d, a) => d.setPassword(a, `${PASSWORD} again`)],
];

for (const [i, [what, write]] of writes.entries())
  test(
    `an account ${what} as it is deleted is refused, and nothing of it is left`,
    { timeout: 10_000 },
    async () => {
      const a = `cy${i}@writes.test`;
      await other.addUser(a, PASSWORD);
      await refusedAndGone(write(deletedAfterCheck(a), a), a);
    },
  );

test(
  'an account that is there is locked, given the role and a password as before',
  { timeout: 10_000 },
  async () => {
    const a = 'dee@writes.test';
    await other.addUser(a, PASSWORD);
    await other.setLocked(a, true);
    const locked = (await other.accountRecord(a))?.locked;
    assert.ok(locked);
    await other.setLocked(a, true);
    assert.equal((await other.accountRecord(a))?.locked, locked, 'locked since the first time');
    await other.setAdmin(a, true);
    assert.equal(await other.isAdmin(a), true);
    await other.setAdmin(a, false);
    await other.setLocked(a, false);
    await other.setPassword(a, `${PASSWORD} again`);
    assert.equal(await other.authenticate(a, `${PASSWORD} again`), a);
    const { password: _, created: __, ...rest } = (await other.accountRecord(a))!;
    assert.deepEqual(rest, {});
    await other.delUser(a);
  },
);
