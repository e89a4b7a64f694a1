// An administrative change whose audit entry cannot be written (the connection lost right
// after the change), against Redis: the change was made, and the operation says so; the
// failure goes to the hook that logs it and counts it, with the entry that was lost.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import type { Redis } from 'ioredis';
import { createTestRedis } from '@mailyard/testkit';
import { AUDIT_LOG_KEY, Operations, type AuditEntry } from '../src/index.js';

const r = createTestRedis();
after(() => r.cleanup());
const PASSWORD = 'correct horse battery staple';
const ops = new Operations(r.redis, 'cli:root');
await ops.addDomain('audit-failure.test', { dkim: false });

/** `redis`, except that a transaction writing the audit log fails as a lost connection does. */
function auditFails(redis: Redis): Redis {
  return new Proxy(redis, {
    get(target, prop, receiver) {
      const value: unknown = Reflect.get(target, prop, receiver);
      if (prop !== 'multi') return typeof value === 'function' ? value.bind(target) : value;
      return () => {
        const m = target.multi();
        const lpush = m.lpush.bind(m);
        m.lpush = ((key: string, ...rest: string[]) => {
          if (key === AUDIT_LOG_KEY) m.exec = () => Promise.reject(new Error('Connection is closed.'));
          return lpush(key, ...rest);
        }) as typeof m.lpush;
        return m;
      };
    },
  });
}

test(
  'a lock whose audit entry is lost is made and answered as made, and the loss is reported',
  { timeout: 10_000 },
  async () => {
    const a = 'lea@audit-failure.test';
    await ops.addUser(a, PASSWORD);
    const lost: [unknown, Omit<AuditEntry, 'at'>][] = [];
    const locking = new Operations(auditFails(r.redis), 'admin@audit-failure.test', {
      onAuditFailure: (err, entry) => lost.push([err, entry]),
    });
    assert.deepEqual(await locking.lockUser(a), { account: a, sessionsEnded: 0 });
    assert.ok((await ops.directory.accountRecord(a))?.locked, 'the account is locked');
    assert.equal(lost.length, 1);
    const [[err, entry]] = lost as [[Error, Omit<AuditEntry, 'at'>]];
    assert.equal(err.message, 'Connection is closed.');
    assert.deepEqual(entry, { actor: 'admin@audit-failure.test', action: 'account.lock', target: a });
    // and another actor's operations of the same hook report theirs too
    assert.equal(await locking.as('cli:root').unlockUser(a), a);
    assert.equal(lost.length, 2);
    assert.equal((await ops.directory.accountRecord(a))?.locked, undefined);
  },
);
