// The session store on its own, against Redis: a session that ended while a request ran
// (a sign-out everywhere, an account locked) does not come back when that request renews
// the id (after the second step of a login, or a password change).
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { createTestRedis } from '@mailyard/testkit';
import { SessionStore } from '../src/sessions.js';

const t = createTestRedis();
after(() => t.cleanup());
const store = new SessionStore(t.redis, { idleMs: 60_000, absoluteMs: 3_600_000 });

test(
  'renewing the id of a live session ends the old id and keeps the login',
  { timeout: 10_000 },
  async () => {
    const { id, session } = await store.create('ann@example.test', 'second-factor');
    const fresh = await store.rotate(id, { ...session, stage: 'complete' });
    assert.ok(fresh);
    assert.equal(await store.get(id), null, 'the old id is no good');
    assert.deepEqual(await store.get(fresh.id), { ...session, stage: 'complete', csrf: fresh.session.csrf });
    assert.notEqual(fresh.session.csrf, session.csrf);
  },
);

test(
  'a session signed out everywhere while its request ran is not renewed',
  { timeout: 10_000 },
  async () => {
    const { id, session } = await store.create('bea@example.test', 'second-factor');
    // the request read the session; then the account was signed out everywhere
    assert.ok(await store.get(id));
    assert.equal(await store.destroyAll('bea@example.test'), 1);
    assert.equal(await store.rotate(id, { ...session, stage: 'complete' }), null);
    assert.equal(await store.destroyAll('bea@example.test'), 0, 'no session of the account is live');
  },
);
