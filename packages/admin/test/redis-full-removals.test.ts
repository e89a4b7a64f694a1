// What an administrator removes is removed while Redis is at its maxmemory (noeviction): an
// alias (one forwarding to an outsider is found and must stop now), its last target, a DKIM
// key, a domain with its keys; the keys that sign are read as ever. The removal is answered
// as done, and the audit entry Redis has no room for is reported, not thrown. What adds is
// still refused with Redis's OOM (the CLI's "try again").
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startPrivateRedis, type PrivateRedis } from '@mailyard/testkit';
import { Operations } from '../src/index.js';

let redis: PrivateRedis;
let ops: Operations;
const lostAudit: string[] = [];
before(async () => {
  redis = await startPrivateRedis();
  ops = new Operations(redis.client({ keyPrefix: 'full:' }), 'cli:root', {
    onAuditFailure: (_err, entry) => lostAudit.push(entry.action),
  });
  await ops.addDomain('full.test', { dkim: false });
});
after(() => redis.close());

// Redis's own refusal, as it is or as the cause of the directory's
const isOom = (err: Error) => /\bOOM command not allowed/.test(err.message);

test("Redis full: an alias, and an alias's last target, are removed", { timeout: 30_000 }, async () => {
  await ops.addAlias('out@full.test', ['someone@elsewhere.example']);
  await ops.addAlias('team@full.test', ['a@elsewhere.example', 'b@elsewhere.example']);
  await redis.whileFull(async () => {
    assert.deepEqual(await ops.delAlias('out@full.test'), { source: 'out@full.test' });
    await ops.delAlias('team@full.test', 'a@elsewhere.example');
    await ops.delAlias('team@full.test', 'b@elsewhere.example');
    await assert.rejects(ops.addAlias('new@full.test', ['c@elsewhere.example']), isOom);
  });
  assert.deepEqual(await ops.listAliases('full.test'), []);
  assert.ok(lostAudit.includes('alias.del'), 'the audit entry Redis refused is reported');
});

test(
  'Redis full: a DKIM key, and a domain with its keys, are deleted; the keys still sign',
  { timeout: 60_000 },
  async () => {
    const { dkim } = await ops.addDomain('keys.full.test');
    await ops.addDomain('gone.full.test');
    // a rotation's new key, waiting to sign
    const { key: pending } = await ops.rotateDkimKey('keys.full.test', { algorithm: 'ed25519' });
    await redis.whileFull(async () => {
      // what signs the domain's mail is read as ever
      assert.deepEqual(
        (await ops.listDkimKeys('keys.full.test'))
          .filter((k) => k.signing)
          .map((k) => k.selector)
          .sort(),
        dkim.map((k) => k.selector).sort(),
      );
      assert.deepEqual(await ops.deleteDkimKey('keys.full.test', pending.selector), {
        domain: 'keys.full.test',
        selector: pending.selector,
      });
      assert.equal((await ops.delDomain('gone.full.test')).domain, 'gone.full.test');
      await assert.rejects(
        ops.generateDkimKey('keys.full.test', { algorithm: 'ed25519', selector: 'extra' }),
        isOom,
      );
    });
    assert.equal((await ops.listDkimKeys('keys.full.test')).length, dkim.length);
    assert.ok(!(await ops.directory.listDomains()).includes('gone.full.test'));
  },
);
