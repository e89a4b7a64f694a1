// The webmail's own Redis (sessions, uploads, the login rate limit, the directory it
// reads roles from) stopped under a logged-in user: every request is a temporary
// failure (503, "try again"), never a 500 and never "not logged in"; the session is
// there again once Redis is back. A Redis out of memory refuses a login the same way, and
// an upload as no room (507), with nothing of it stored past Redis's maxmemory; an upload
// is removed then (room given back).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Directory } from '@mailyard/directory';
import { startPrivateRedis, type PrivateRedis } from '@mailyard/testkit';
import { addAccount } from '../../../test/harness.js';
import { ALICE, startWebmailTestbed, type WebmailTestbed } from './webmail-harness.js';
import { WebClient, q } from './web-client.js';

const PREFIX = 'webmail-outage:';
let redis: PrivateRedis;
let t: WebmailTestbed;
let port: number;

before(async () => {
  redis = await startPrivateRedis();
  t = await startWebmailTestbed();
  // a webmail whose Redis is the test's own, with the account in its directory too
  await addAccount(new Directory(redis.client({ keyPrefix: PREFIX })), ALICE);
  port = (await t.another({ redis_url: redis.url, redis_prefix: PREFIX, redis_command_timeout: '2s' })).port;
});
after(async () => {
  await t?.close();
  await redis?.close();
});

test('Redis down: 503 on every kind of request, the session back with it', { timeout: 90_000 }, async () => {
  const alice = new WebClient(port, t.ca);
  assert.equal((await alice.login(ALICE)).status, 200);
  assert.equal((await alice.get('/api/folders')).status, 200);

  await redis.kill();
  const answers = {
    folders: await alice.get('/api/folders'),
    session: await alice.get('/api/session'),
    flags: await alice.post('/api/messages/flags', { folder: 'INBOX', uids: [1], add: ['seen'] }),
    upload: await alice.req('POST', '/api/uploads', {
      body: Buffer.from('hello'),
      headers: { 'content-type': 'text/plain', 'x-filename': 'a.txt' },
    }),
    logout: await alice.post('/api/logout'),
    login: await new WebClient(port, t.ca).login(ALICE),
  };
  for (const [what, res] of Object.entries(answers)) {
    assert.equal(res.status, 503, `${what}: ${res.status} ${res.text}`);
    assert.equal(res.json?.error, 'unavailable', `${what}: ${res.text}`);
    assert.match(res.json.message, /try again/, what);
  }

  await redis.start();
  const back = await alice.get('/api/messages' + q({ folder: 'INBOX' }));
  assert.equal(back.status, 200, back.text);
});

test(
  'Redis full (maxmemory, noeviction): a login is 503, never "wrong password"; a session goes on reading',
  { timeout: 60_000 },
  async () => {
    const alice = new WebClient(port, t.ca);
    assert.equal((await alice.login(ALICE)).status, 200);
    await redis.whileFull(async () => {
      const login = await new WebClient(port, t.ca).login(ALICE);
      assert.equal(login.status, 503, login.text);
      assert.equal(login.json?.error, 'unavailable', login.text);
      assert.match(login.json.message, /try again/);
      const folders = await alice.get('/api/folders');
      assert.equal(folders.status, 200, folders.text);
    });
    assert.equal((await new WebClient(port, t.ca).login(ALICE)).status, 200);
  },
);

test(
  'Redis full: an upload is refused as no room (507), and nothing of it is kept',
  { timeout: 60_000 },
  async () => {
    const alice = new WebClient(port, t.ca);
    assert.equal((await alice.login(ALICE)).status, 200);
    const upload = () =>
      alice.req('POST', '/api/uploads', {
        body: Buffer.alloc(64 * 1024, 'a'),
        headers: { 'content-type': 'text/plain', 'x-filename': 'big.txt' },
      });
    const admin = redis.client();
    const uploadKeys = async () => (await admin.keys(`${PREFIX}webmail:upload*`)).sort();
    const before = await uploadKeys();
    await redis.whileFull(async () => {
      const res = await upload();
      assert.equal(res.status, 507, res.text);
      assert.equal(res.json?.error, 'no_room', res.text);
      assert.match(res.json.message, /no room for attachments/);
      assert.deepEqual(await uploadKeys(), before, 'no upload, nor its place in the cap, is kept');
    });
    const later = await upload();
    assert.equal(later.status, 200, later.text);
  },
);

test('Redis full: an upload is removed, its place in the cap with it', { timeout: 60_000 }, async () => {
  const alice = new WebClient(port, t.ca);
  assert.equal((await alice.login(ALICE)).status, 200);
  const admin = redis.client();
  const uploadKeys = async () => (await admin.keys(`${PREFIX}webmail:upload*`)).sort();
  const before = await uploadKeys();
  const up = await alice.req('POST', '/api/uploads', {
    body: Buffer.from('a draft attachment'),
    headers: { 'content-type': 'text/plain', 'x-filename': 'note.txt' },
  });
  assert.equal(up.status, 200, up.text);
  await redis.whileFull(async () => {
    const res = await alice.req('DELETE', `/api/uploads/${up.json.id}`);
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(await uploadKeys(), before, 'neither the upload nor its place in the cap is left');
    assert.equal((await alice.req('DELETE', `/api/uploads/${up.json.id}`)).status, 404);
  });
});
