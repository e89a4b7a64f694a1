// Redis at its maxmemory (noeviction): an edit of a restriction list that adds is refused
// whole, with Redis's OOM (the console's 503, try again), and the list stays as it was;
// nothing is written past maxmemory into the Redis that sessions, logins and queues need.
// What only removes (an entry of a list, of an access table, a list reset) is done, and
// announced to every instance, which would otherwise go on deciding by what was removed.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { PolicyRules } from '@mailyard/policy-rules';
import { startPrivateRedis, type PrivateRedis } from '@mailyard/testkit';

let redis: PrivateRedis;
before(async () => {
  redis = await startPrivateRedis();
});
after(() => redis.close());

test(
  'Redis full: a restriction list edit is refused as OOM, the list unchanged',
  { timeout: 30_000 },
  async () => {
    const rules = new PolicyRules(redis.client({ keyPrefix: 'full:' }), 'full:');
    const before = await rules.add('smtpd_client_restrictions', 'check_client_access client_access');
    await redis.whileFull(() =>
      assert.rejects(rules.add('smtpd_client_restrictions', 'reject_unknown_client_hostname'), (err: Error) =>
        err.message.startsWith('OOM '),
      ),
    );
    assert.deepEqual(await rules.list('smtpd_client_restrictions'), before);
  },
);

test(
  'Redis full: an entry is removed from a list, by removal or by a set that leaves it out, and announced',
  { timeout: 30_000 },
  async () => {
    const rules = new PolicyRules(redis.client({ keyPrefix: 'removals:' }), 'removals:');
    const l = 'smtpd_sender_restrictions';
    const full = await rules.set(l, [
      'reject_non_fqdn_sender',
      'reject_unknown_sender_domain',
      'check_sender_access sender_access',
      'permit',
    ]);
    const { version } = await rules.load();
    await redis.whileFull(async () => {
      assert.deepEqual(await rules.remove(l, 'reject_unknown_sender_domain'), [full[0], full[2], full[3]]);
      // the console's edit: the list as loaded, less an entry
      assert.deepEqual(await rules.set(l, [full[0]!, full[3]!], [full[0]!, full[2]!, full[3]!]), [
        full[0],
        full[3],
      ]);
      // the CLI's: the list as it is to be
      assert.deepEqual(await rules.set(l, [full[3]!]), [full[3]]);
      // what would add or move an entry is refused, as an addition is
      for (const more of [[full[3]!, full[0]!], [full[0]!]])
        await assert.rejects(rules.set(l, more), (err: Error) => err.message.startsWith('OOM '));
    });
    assert.deepEqual(await rules.list(l), [full[3]]);
    // each change was announced: every instance reloads
    assert.equal((await rules.load()).version, version + 3);
  },
);

test(
  'Redis full: an access table entry is removed, and a list reset, and announced',
  { timeout: 30_000 },
  async () => {
    const rules = new PolicyRules(redis.client({ keyPrefix: 'access:' }), 'access:');
    await rules.accessSet('sender_access', 'address', 'spam@outsider.example', 'REJECT');
    await rules.set('smtpd_client_restrictions', ['permit']);
    const { version } = await rules.load();
    await redis.whileFull(async () => {
      assert.equal(
        await rules.accessDel('sender_access', 'address', 'spam@outsider.example'),
        'spam@outsider.example',
      );
      await rules.reset('smtpd_client_restrictions');
      await assert.rejects(
        rules.accessSet('sender_access', 'address', 'other@outsider.example', 'REJECT'),
        (err: Error) => err.message.startsWith('OOM '),
      );
    });
    assert.deepEqual(await rules.accessList('sender_access'), {});
    assert.equal((await rules.load()).version, version + 2);
  },
);
