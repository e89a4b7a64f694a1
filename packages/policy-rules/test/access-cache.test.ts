import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { createTestRedis } from '@mailyard/testkit';
import { AccessTableCache, PolicyRules, addressKeys, clientKeys, tablesOf } from '@mailyard/policy-rules';

// The access tables kept in process: the same first match as the Redis lookup, and no
// answer at all whenever the copy may be stale.

const T = { timeout: 30_000 };
const r = createTestRedis();
const rules = new PolicyRules(r.redis, r.prefix);
after(() => r.cleanup());

test('answers the first match, most specific key first, as the Redis lookup does', T, async () => {
  await rules.accessSet('clients', 'client', '192.0.2.0/24', 'REJECT net');
  await rules.accessSet('clients', 'client', '192.0.2.7', 'OK');
  await rules.accessSet('senders', 'address', 'spammer.test', 'REJECT domain');
  const cache = new AccessTableCache(r.redis, () => true);
  await cache.load(['clients', 'senders']);
  assert.equal(cache.lookup('clients', clientKeys('192.0.2.7')), 'OK');
  assert.equal(cache.lookup('clients', clientKeys('192.0.2.8')), 'REJECT net');
  assert.equal(cache.lookup('clients', clientKeys('198.51.100.1')), null);
  assert.equal(cache.lookup('senders', addressKeys('a@sub.spammer.test')), 'REJECT domain');
  assert.equal(cache.lookup('other', ['x']), undefined, 'a table not loaded is read from Redis');
});

test('no answer while unusable, before loading and after invalidation', T, async () => {
  let usable = false;
  const cache = new AccessTableCache(r.redis, () => usable);
  assert.equal(cache.lookup('clients', clientKeys('192.0.2.7')), undefined, 'not loaded');
  await cache.load(['clients']);
  assert.equal(
    cache.lookup('clients', clientKeys('192.0.2.7')),
    undefined,
    'the change channel is not subscribed',
  );
  usable = true;
  assert.equal(cache.lookup('clients', clientKeys('192.0.2.7')), 'OK');
  cache.invalidate();
  assert.equal(cache.lookup('clients', clientKeys('192.0.2.7')), undefined, 'invalidated');
});

test('a load that finishes after a newer one does not replace it', T, async () => {
  const cache = new AccessTableCache(r.redis, () => true);
  const older = cache.load(['clients']);
  cache.invalidate();
  await older;
  assert.equal(cache.lookup('clients', clientKeys('192.0.2.7')), undefined);
});

test('the tables a rule set names', T, async () => {
  await rules.set('smtpd_client_restrictions', ['check_client_access clients', 'permit_mynetworks']);
  await rules.set('smtpd_sender_restrictions', [
    'check_sender_access senders',
    'check_client_access clients',
  ]);
  const { rules: loaded } = await rules.load();
  assert.deepEqual(tablesOf(loaded).sort(), ['clients', 'recipient_access', 'senders']);
});
