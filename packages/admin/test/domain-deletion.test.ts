// A domain's DKIM keys go with it, against Redis: deleted in the step that deletes the
// domain, named in the answer and the audit log, and never stored for a domain deleted
// while a key was being made for it (the interleaving forced, not timed).
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { DkimRedisKeys } from '@mailyard/dkim';
import { createTestRedis, interleavedRedis } from '@mailyard/testkit';
import { OperationError, Operations } from '../src/index.js';

const r = createTestRedis();
after(() => r.cleanup());
const ops = new Operations(r.redis, 'cli:root');

test(
  'a deleted domain takes its DKIM keys with it, named in the audit log',
  { timeout: 10_000 },
  async () => {
    const { dkim } = await ops.addDomain('keys.test');
    const selectors = dkim.map((k) => k.selector);
    assert.deepEqual(await ops.delDomain('KEYS.test'), { domain: 'keys.test', dkim: selectors });
    assert.deepEqual(await ops.listDkimKeys(), []);
    assert.equal(
      await r.redis.exists(DkimRedisKeys.keys('keys.test'), DkimRedisKeys.pending('keys.test')),
      0,
    );
    assert.equal(await r.redis.sismember(DkimRedisKeys.domains, 'keys.test'), 0);
    const [entry] = await ops.readAudit({ limit: 1 });
    assert.deepEqual(
      [entry?.action, entry?.target, entry?.detail],
      ['domain.del', 'keys.test', { dkim: selectors }],
    );
  },
);

test(
  'a DKIM key made for a domain deleted after its check is refused, not stored',
  { timeout: 10_000 },
  async () => {
    const d = 'race.test';
    await ops.addDomain(d, { dkim: false });
    // the other admin deletes the domain once the key's generation has found it local
    const generating = new Operations(
      interleavedRedis(
        r.redis,
        (command, args) => command === 'sismember' && args[0] === 'domains' && args[1] === d,
        () => ops.delDomain(d),
      ),
      'cli:root',
    );
    await assert.rejects(generating.generateDkimKey(d, { algorithm: 'ed25519' }), (err: unknown) => {
      assert.ok(err instanceof OperationError, String(err));
      assert.deepEqual(
        [err.code, err.message],
        ['not_found', `domain ${d} is not a local domain (add it with: mailyard domain add ${d})`],
      );
      return true;
    });
    // no key left: the domain is unknown, as any other that is not ours
    await assert.rejects(ops.listDkimKeys(d), { code: 'unknown_domain' });
    assert.deepEqual(await r.redis.hgetall(DkimRedisKeys.keys(d)), {});
    assert.equal(await r.redis.sismember(DkimRedisKeys.domains, d), 0);
  },
);
