// Logging in and out, sessions, CSRF, timeouts, the login rate limit and the shared
// lockout, security headers (the second step: api-two-factor.test.ts).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ImapFlow } from 'imapflow';
import { AppPasswords, LoginGuard, LoginHistory, createAuthenticator } from '@mailyard/auth';
import { Directory } from '@mailyard/directory';
import { unreachableRedis, waitFor } from '@mailyard/testkit';
import { addAccount } from '../../../test/harness.js';
import { RawImap } from '../../retrieval/test/raw-imap.js';
import { webmailFile } from './file-setup.js';
import { ALICE, BOB, HOST, PASSWORD, type WebmailTestbed } from './webmail-harness.js';
import { WebClient, openEvents, q, type EventStream } from './web-client.js';
import { imapLogin } from './mail-clients.js';
import { STREAMS_PER_SESSION } from '../src/routes-events.js';

let t: WebmailTestbed;
webmailFile({}, async (f) => {
  t = f.t;
});
const client = (port = t.webmail.port) => new WebClient(port, t.ca);

describe('login', () => {
  test('the right password logs in, with a cookie only this site can send', { timeout: 30_000 }, async () => {
    const c = client();
    const anon = await c.get('/api/session');
    assert.equal(anon.status, 200);
    assert.equal(anon.json.authenticated, false);
    assert.match(anon.json.loginToken, /^[\w-]{43}$/);
    const res = await c.login(ALICE);
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json.account, ALICE);
    assert.match(res.json.csrf, /^[\w-]{43}$/);
    assert.ok(res.json.limits.attachments > 10 * 1024 * 1024);
    const cookie = [res.headers['set-cookie'] ?? []]
      .flat()
      .find((h) => h.startsWith('__Host-mailyard_session='));
    assert.ok(cookie, 'session cookie set');
    for (const attr of ['HttpOnly', 'Secure', 'SameSite=Strict', 'Path=/'])
      assert.ok(cookie.includes(attr), attr);
    assert.doesNotMatch(cookie, /Domain=/i);
    const me = await c.get('/api/session');
    assert.deepEqual([me.json.authenticated, me.json.account], [true, ALICE]);
    // nothing of the password is in what the browser keeps
    assert.ok(!JSON.stringify([...c.cookies.values()]).includes(PASSWORD));
  });

  test(
    'an account in an IDN domain logs in with the domain in Unicode or ASCII, here and in IMAP',
    { timeout: 30_000 },
    async () => {
      const account = 'jürgen@xn--bcher-kva.test';
      await addAccount(t.p.directory, 'jürgen@bücher.test');
      for (const spelling of ['jürgen@bücher.test', 'Jürgen@BÜCHER.test', account]) {
        const res = await client().login(spelling);
        assert.deepEqual([res.status, res.json.account], [200, account], spelling);
      }
      assert.equal(await imapLogin(t, 'jürgen@bücher.test', PASSWORD), true);
    },
  );

  test(
    'a wrong password, an unknown account and bad input get clear answers',
    { timeout: 30_000 },
    async () => {
      const c = client();
      const wrong = await c.login(ALICE, 'not the password');
      assert.equal(wrong.status, 401);
      assert.equal(wrong.json.error, 'invalid_credentials');
      const unknown = await c.login('nobody@example.test', 'whatever it is');
      assert.deepEqual([unknown.status, unknown.json.error], [401, 'invalid_credentials']);
      assert.equal(unknown.json.message, wrong.json.message, 'the answer does not tell which accounts exist');
      const empty = await c.post('/api/login', { username: '', password: '' });
      assert.equal(empty.status, 400);
      assert.match(empty.json.message, /username/);
      // nobody is logged in yet: a body far beyond an address and a password is not read
      const huge = await c.post('/api/login', { username: ALICE, password: 'x'.repeat(100_000) });
      assert.deepEqual([huge.status, huge.json.error, huge.json.limit], [413, 'too_large', 16 * 1024]);
      assert.match(huge.json.message, /this request takes at most 16 KB/);
      const notJson = await c.req('POST', '/api/login', {
        body: Buffer.from('username=alice'),
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
      });
      assert.ok(notJson.status === 415 || notJson.status === 400, String(notJson.status));
    },
  );

  test(
    'a login while the accounts cannot be read is a 503, never "wrong password"',
    { timeout: 30_000 },
    async () => {
      const down = unreachableRedis();
      try {
        const authenticator = createAuthenticator({
          directory: new Directory(down),
          guard: new LoginGuard(down),
          appPasswords: new AppPasswords(down),
          history: new LoginHistory(down),
        });
        const broken = await t.another({}, { authenticator });
        const res = await client(broken.port).login(ALICE);
        assert.deepEqual([res.status, res.json.error], [503, 'unavailable'], res.text);
        assert.match(res.json.message, /temporarily unavailable/);
      } finally {
        down.disconnect();
      }
    },
  );

  test('an app password does not log in to the webmail', { timeout: 30_000 }, async () => {
    const secret = await new AppPasswords(t.p.redis.redis).create(BOB, 'phone');
    const res = await client().login(BOB, secret);
    assert.deepEqual([res.status, res.json.error], [401, 'invalid_credentials']);
  });

  test(
    'failures count in the shared lockout: the guessing address is locked for IMAP too, no one else',
    { timeout: 30_000 },
    async () => {
      const carol = 'carol@example.test';
      await addAccount(t.p.directory, carol);
      // the guesser's address is one IMAP can be reached from too
      const c = new WebClient(t.webmail.port, t.ca, '127.0.0.9');
      for (let i = 0; i < 5; i++) assert.equal((await c.login(carol, `wrong ${i}`)).status, 401);
      const locked = await c.login(carol);
      assert.equal(locked.status, 429);
      assert.equal(locked.json.error, 'locked');
      assert.match(locked.json.message, /try again in \d+ seconds/);
      assert.ok(Number(locked.headers['retry-after']) > 0);
      // the same lock holds for a mail client at that address
      const imap = await RawImap.connect(t.retrieval.ports.imaps, { tls: true, localAddress: '127.0.0.9' });
      await imap.until(/^\* OK/m);
      assert.match(await imap.cmd('a', `LOGIN ${carol} "${PASSWORD}"`), /^a NO /m);
      imap.close();
      // carol herself, elsewhere, gets in: on the web and with her mail client
      assert.equal((await client().login(carol)).status, 200);
      const own = new ImapFlow({
        host: '127.0.0.1',
        port: t.retrieval.ports.imaps,
        secure: true,
        tls: { rejectUnauthorized: false },
        auth: { user: carol, pass: PASSWORD },
        logger: false,
      });
      await own.connect();
      await own.logout();
    },
  );

  test('logins from one address are rate limited, whatever their outcome', { timeout: 30_000 }, async () => {
    const c = client();
    let res;
    for (let i = 0; i < 10; i++) {
      res = await c.login(i % 2 ? ALICE : `nobody${i}@example.test`, i % 2 ? PASSWORD : 'x');
      assert.notEqual(res.status, 429, `attempt ${i + 1}`);
    }
    res = await c.login(ALICE);
    assert.equal(res.status, 429);
    assert.equal(res.json.error, 'rate_limited');
    assert.ok(Number(res.headers['retry-after']) >= 1);
    // another address is not affected
    assert.equal((await client().login(ALICE)).status, 200);
  });

  test(
    'an IPv6 client is rate limited by its /64, whichever of its addresses it uses',
    { timeout: 30_000 },
    async () => {
      const from = (ip: string) => new WebClient(t.webmail.port, t.ca, ip);
      for (let i = 1; i <= 10; i++) {
        const res = await from(`2001:db8:5:6::${i.toString(16)}`).login(`nobody${i}@example.test`, 'x');
        assert.notEqual(res.status, 429, `attempt ${i}`);
      }
      const res = await from('2001:db8:5:6:ffff::1').login(ALICE);
      assert.deepEqual([res.status, res.json.error], [429, 'rate_limited']);
      assert.equal((await from('2001:db8:5:7::1').login(ALICE)).status, 200);
    },
  );
});

describe('CSRF', () => {
  test('a login without the token from the login page is refused', { timeout: 30_000 }, async () => {
    const c = client();
    await c.get('/api/session');
    const res = await c.req('POST', '/api/login', {
      json: { username: ALICE, password: PASSWORD },
      csrf: false,
    });
    assert.deepEqual([res.status, res.json.error], [403, 'csrf']);
    const forged = await c.req('POST', '/api/login', {
      json: { username: ALICE, password: PASSWORD },
      headers: { 'x-csrf-token': 'x'.repeat(43) },
    });
    assert.equal(forged.status, 403);
  });

  test('every state-changing request needs the session token', { timeout: 30_000 }, async () => {
    const c = client();
    assert.equal((await c.login(ALICE)).status, 200);
    const body = { folder: 'INBOX', uids: [1], add: ['seen'] };
    const missing = await c.req('POST', '/api/messages/flags', { json: body, csrf: false });
    assert.deepEqual([missing.status, missing.json.error], [403, 'csrf']);
    const wrong = await c.req('POST', '/api/messages/flags', {
      json: body,
      headers: { 'x-csrf-token': 'nope' },
    });
    assert.equal(wrong.status, 403);
    // another session's token is no good either
    const other = client();
    await other.login(ALICE);
    const crossed = await c.req('POST', '/api/logout', { headers: { 'x-csrf-token': other.csrf } });
    assert.equal(crossed.status, 403);
    for (const [method, path] of [
      ['POST', '/api/logout'],
      ['PUT', '/api/drafts'],
      ['POST', '/api/send'],
      ['POST', '/api/uploads'],
      ['DELETE', '/api/uploads/aaaaaaaaaaaaaaaaaaaaaa'],
      ['POST', '/api/messages/move'],
      ['POST', '/api/messages/delete'],
      ['POST', '/api/messages/archive'],
      ['POST', '/api/messages/spam'],
      ['POST', '/api/remote-senders'],
      ['DELETE', '/api/drafts/1'],
    ] as const) {
      const res = await c.req(method, path, { json: {}, csrf: false });
      assert.equal(res.status, 403, `${method} ${path}: ${res.text}`);
    }
    assert.equal((await c.get('/api/session')).json.authenticated, true, 'still logged in');
  });

  test(
    'an API path written with escapes or as an absolute URL is checked as any other',
    { timeout: 30_000 },
    async () => {
      const c = client();
      await c.get('/api/session');
      const login = { username: ALICE, password: PASSWORD };
      // both reach the login route, as /api/login does
      for (const path of ['/%61pi/login', `https://${HOST}/api/login`]) {
        const res = await c.req('POST', path, { json: login, csrf: false });
        assert.deepEqual([path, res.status, res.json.error], [path, 403, 'csrf']);
      }
      assert.equal((await c.get('/api/session')).json.authenticated, false, 'not logged in');
      assert.equal((await c.login(ALICE)).status, 200);
      const crossSite = await c.req('GET', '/%61pi/folders', { headers: { 'sec-fetch-site': 'cross-site' } });
      assert.deepEqual([crossSite.status, crossSite.json.error], [403, 'cross_site']);
      const read = await c.get('/%61pi/folders');
      assert.equal(read.status, 200, read.text);
      assert.equal(read.headers['cache-control'], 'no-store');
    },
  );

  test('a request another site made is refused, even a read', { timeout: 30_000 }, async () => {
    const c = client();
    await c.login(ALICE);
    const res = await c.req('GET', '/api/folders', { headers: { 'sec-fetch-site': 'cross-site' } });
    assert.deepEqual([res.status, res.json.error], [403, 'cross_site']);
    assert.equal(
      (await c.req('GET', '/api/folders', { headers: { 'sec-fetch-site': 'same-origin' } })).status,
      200,
    );
  });
});

describe('sessions', () => {
  test('logout ends the session; the old cookie is worthless', { timeout: 30_000 }, async () => {
    const c = client();
    await c.login(ALICE);
    const cookie = c.cookies.get('__Host-mailyard_session')!;
    const out = await c.post('/api/logout');
    assert.equal(out.status, 200);
    assert.equal(c.cookies.has('__Host-mailyard_session'), false, 'cookie cleared');
    c.cookies.set('__Host-mailyard_session', cookie);
    const res = await c.get('/api/folders');
    assert.deepEqual([res.status, res.json.error], [401, 'not_logged_in']);
  });

  test(
    'a new login from the same browser ends the session it held, of whichever account',
    { timeout: 30_000 },
    async () => {
      const c = client();
      await c.login(ALICE);
      const first = c.cookies.get('__Host-mailyard_session')!;
      const firstCsrf = c.csrf;
      // the same account again: a new id, and the one before is worthless
      assert.equal((await c.login(ALICE)).status, 200);
      const second = c.cookies.get('__Host-mailyard_session')!;
      assert.notEqual(second, first);
      const old = client();
      old.cookies.set('__Host-mailyard_session', first);
      old.csrf = firstCsrf;
      assert.equal((await old.get('/api/folders')).status, 401);
      assert.equal((await old.post('/api/logout')).status, 401);
      // another account from the same browser: alice's session ends too
      assert.equal((await c.login(BOB)).status, 200);
      old.cookies.set('__Host-mailyard_session', second);
      const res = await old.get('/api/folders');
      assert.deepEqual([res.status, res.json.error], [401, 'not_logged_in']);
      assert.equal((await c.get('/api/session')).json.account, BOB);
      // a wrong password takes nothing away
      assert.equal((await c.login(BOB, 'not the password')).status, 401);
      assert.equal((await c.get('/api/folders')).status, 200);
    },
  );

  test(
    'a session holds a bounded number of event streams; a new one ends the oldest',
    { timeout: 30_000 },
    async () => {
      const c = client();
      await c.login(BOB);
      const streams: EventStream[] = [];
      try {
        for (let i = 0; i < STREAMS_PER_SESSION; i++) streams.push(await openEvents(c, t.ca));
        await waitFor(() => streams.every((s) => s.events.some((e) => e.event === 'ready')), {
          what: 'every stream ready',
        });
        // a tab opened once the bound is reached: served, and the oldest stream ended
        const newest = await openEvents(c, t.ca);
        streams.push(newest);
        assert.equal(newest.status, 200);
        await waitFor(() => streams[0]!.ended, { what: 'the oldest stream to end' });
        assert.deepEqual(
          streams.slice(1).map((s) => s.ended),
          Array(STREAMS_PER_SESSION).fill(false),
        );
      } finally {
        for (const s of streams) s.close();
      }
    },
  );

  test('no session, a made-up one: 401 everywhere', { timeout: 30_000 }, async () => {
    const c = client();
    for (const path of [
      '/api/folders',
      '/api/messages' + q({ folder: 'INBOX' }),
      '/api/identities',
      '/api/events',
    ]) {
      assert.equal((await c.get(path)).status, 401, path);
    }
    c.cookies.set('__Host-mailyard_session', 'A'.repeat(43));
    assert.equal((await c.get('/api/folders')).status, 401);
  });

  test(
    'a session ends after the idle timeout, and after the absolute one however active',
    { timeout: 60_000 },
    async () => {
      const idle = await t.another({ session_idle_timeout: '1s' });
      const c = client(idle.port);
      await c.login(ALICE);
      assert.equal((await c.get('/api/identities')).status, 200);
      await waitFor(async () => (await c.get('/api/identities')).status === 401 || null, {
        timeoutMs: 10_000,
        intervalMs: 1200,
        what: 'the idle session to end',
      });
      const absolute = await t.another({ session_absolute_timeout: '2s' });
      const d = client(absolute.port);
      await d.login(ALICE);
      const start = Date.now();
      // requests every 200 ms keep it from idling; it ends anyway
      await waitFor(async () => (await d.get('/api/identities')).status === 401 || null, {
        timeoutMs: 10_000,
        intervalMs: 200,
        what: 'the absolute timeout',
      });
      assert.ok(Date.now() - start >= 1500, 'not before the timeout');
      const res = await d.get('/api/folders');
      assert.deepEqual([res.status, res.json.error], [401, 'not_logged_in']);
    },
  );

  test('sessions live in Redis: another instance serves the same session', { timeout: 30_000 }, async () => {
    const c = client();
    await c.login(ALICE);
    const second = await t.another({});
    const d = client(second.port);
    for (const [k, v] of c.cookies) d.cookies.set(k, v);
    d.csrf = c.csrf;
    const res = await d.get('/api/folders');
    assert.equal(res.status, 200);
    assert.ok(res.json.folders.some((f: { path: string }) => f.path === 'INBOX'));
  });
});

describe('headers', () => {
  test('a strict CSP and the usual protections on every response', { timeout: 30_000 }, async () => {
    const c = client();
    const res = await c.get('/api/session');
    const csp = String(res.headers['content-security-policy']);
    assert.match(csp, /default-src 'self'/);
    assert.match(csp, /script-src 'self'(;|$)/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
    assert.match(csp, /frame-ancestors 'none'/);
    assert.match(csp, /object-src 'none'/);
    assert.match(String(res.headers['strict-transport-security']), /max-age=\d+/);
    assert.equal(res.headers['x-content-type-options'], 'nosniff');
    assert.equal(res.headers['referrer-policy'], 'no-referrer');
    assert.equal(res.headers['cache-control'], 'no-store');
    const missing = await c.get('/api/nothing-here');
    assert.deepEqual([missing.status, missing.json.error], [404, 'not_found']);
    // however the path is written: not the single page's HTML
    for (const path of ['/%61pi/nothing-here', `https://${HOST}/api/nothing-here`]) {
      const other = await c.get(path);
      assert.deepEqual([path, other.status, other.json?.error], [path, 404, 'not_found']);
      assert.equal(other.headers['cache-control'], 'no-store');
    }
  });

  test(
    'a path the router cannot read is refused with the same protections',
    { timeout: 30_000 },
    async () => {
      const c = client();
      for (const path of ['/api/%zz', '/%E0%A4%A', `/api/messages/${'1'.repeat(5000)}`]) {
        const res = await c.get(path);
        assert.ok([400, 414].includes(res.status), `${path}: ${res.status}`);
        assert.match(String(res.headers['content-security-policy']), /default-src 'none'/, path);
        assert.equal(res.headers['x-content-type-options'], 'nosniff', path);
        assert.equal(res.headers['referrer-policy'], 'no-referrer', path);
        assert.equal(res.headers['cache-control'], 'no-store', path);
        assert.match(res.json.message, /^The address of this request|^A part of the address/);
      }
    },
  );
});
