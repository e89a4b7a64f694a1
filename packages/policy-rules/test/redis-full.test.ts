// Redis at its maxmemory (noeviction): an edit of a restriction list is refused whole,
// with Redis's OOM (the console's 503, try again), and the list stays as it was; nothing
// is written past maxmemory into the Redis that sessions, logins and queues need.
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
